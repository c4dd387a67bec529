{{/* Names and labels. */}}
{{- define "pacer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pacer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "pacer.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "pacer.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "pacer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pacer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pacer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pacer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pacer
{{- end }}

{{- define "pacer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pacer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: repository@digest, or repository:tag (default appVersion). */}}
{{- define "pacer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "pacer.tokenSecretName" -}}
{{- default (printf "%s-api-token" (include "pacer.fullname" .)) .Values.api.token.existingSecret }}
{{- end }}

{{- define "pacer.etcdName" -}}
{{- printf "%s-etcd" (include "pacer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Durations in whole seconds, for values such as "30s", "2m", "1h". */}}
{{- define "pacer.seconds" -}}
{{- $d := toString . }}
{{- if not (regexMatch "^[0-9]+(s|m|h)$" $d) }}
{{- fail (printf "config.drainTimeout %q: use a whole number of seconds, minutes or hours (30s, 5m, 1h), so that the grace period can be derived from it" $d) }}
{{- else if hasSuffix "s" $d }}{{ trimSuffix "s" $d | int }}
{{- else if hasSuffix "m" $d }}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else }}{{ mul (trimSuffix "h" $d | int) 3600 }}
{{- end }}
{{- end }}

{{- define "pacer.terminationGracePeriodSeconds" -}}
{{- $drain := include "pacer.seconds" .Values.config.drainTimeout | int }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add $drain 20) }}
{{- fail (printf "terminationGracePeriodSeconds %v is shorter than config.drainTimeout (%s) + 20s: runs still draining would be killed with the pod" .Values.terminationGracePeriodSeconds .Values.config.drainTimeout) }}
{{- end }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add $drain 30 }}
{{- end }}
{{- end }}

{{/* The runner's config, as a dict. */}}
{{- define "pacer.config" -}}
{{- $v := .Values }}
{{- $etcd := dict "dial_timeout" $v.etcd.dialTimeout "request_timeout" $v.etcd.requestTimeout }}
{{- if $v.etcd.endpoints }}
{{- $_ := set $etcd "endpoints" $v.etcd.endpoints }}
{{- else if $v.etcd.deploy }}
{{- $_ := set $etcd "endpoints" (list (printf "http://%s:2379" (include "pacer.etcdName" .))) }}
{{- else }}
{{- fail "etcd: set etcd.endpoints (an existing etcd cluster), or etcd.deploy=true to try Pacer out with a single-member etcd" }}
{{- end }}
{{- if $v.etcd.tls.enabled }}
{{- $tls := dict "ca_file" "/etc/pacer-secrets/etcd-tls/ca.crt" }}
{{- if $v.etcd.tls.clientCertificate }}
{{- $_ := set $tls "cert_file" "/etc/pacer-secrets/etcd-tls/tls.crt" }}
{{- $_ := set $tls "key_file" "/etc/pacer-secrets/etcd-tls/tls.key" }}
{{- end }}
{{- $_ := set $etcd "tls" $tls }}
{{- end }}
{{- if $v.etcd.auth.username }}
{{- $_ := set $etcd "username" $v.etcd.auth.username }}
{{- $_ := set $etcd "password_file" "/etc/pacer-secrets/etcd-auth/password" }}
{{- end }}
{{- $cluster := dict "name" (default .Release.Name $v.config.clusterName) "data_dir" "/var/lib/pacer" "lease_ttl" $v.config.leaseTTL "etcd" $etcd }}
{{- if not (kindIs "invalid" $v.config.shards) }}
{{- $_ := set $cluster "shards" $v.config.shards }}
{{- end }}
{{- $http := dict "listen" (printf "0.0.0.0:%d" (int $v.api.port)) "token_env" "PACER_API_TOKEN" }}
{{- if $v.api.tls.enabled }}
{{- $tls := dict "cert_file" "/etc/pacer-secrets/api-tls/tls.crt" "key_file" "/etc/pacer-secrets/api-tls/tls.key" }}
{{- if $v.api.tls.clientCA }}
{{- $_ := set $tls "client_ca_file" "/etc/pacer-secrets/api-tls/ca.crt" }}
{{- end }}
{{- $_ := set $http "tls" $tls }}
{{- end }}
{{- $plugins := dict "dir" "/usr/local/lib/pacer/plugins" }}
{{- if $v.plugins.extra }}
{{- $paths := dict }}
{{- $sums := dict }}
{{- range $v.plugins.extra }}
{{- $_ := set $paths .name (printf "/opt/pacer/plugins/%s" .name) }}
{{- if .checksum }}{{ $_ := set $sums .name .checksum }}{{ end }}
{{- end }}
{{- $_ := set $plugins "paths" $paths }}
{{- if $sums }}{{ $_ := set $plugins "checksums" $sums }}{{ end }}
{{- end }}
{{- $cfg := dict "cluster" $cluster "http" $http "plugins" $plugins "observability" $v.config.observability "shutdown" (dict "drain_timeout" $v.config.drainTimeout) }}
{{- if $v.config.history }}{{ $_ := set $cfg "history" $v.config.history }}{{ end }}
{{- $_ := set $cfg "jobs" (default (list) $v.config.jobs) }}
{{- toYaml (mustMergeOverwrite $cfg (deepCopy $v.config.extra)) }}
{{- end }}
