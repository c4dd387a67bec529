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

{{/*
A Go duration ("30s", "1m30s", "1.5h", "500ms"; Pacer's syntax) in
nanoseconds. Called with (list "the key, for the error" value).
*/}}
{{- define "pacer.nanoseconds" -}}
{{- $key := index . 0 }}
{{- $d := trimPrefix "+" (toString (index . 1)) }}{{- /* Go takes a leading "+" */}}
{{- $num := "([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" }}
{{- $unit := "(ns|us|µs|μs|ms|s|m|h)" }}
{{- if eq $d "0" }}0
{{- else if not (regexMatch (printf "^(%s%s)+$" $num $unit) $d) }}
{{- fail (printf "%s %q: not a duration; write a number with a unit, such as 30s, 1m30s or 2h (units: ns, us, ms, s, m, h)" $key $d) }}
{{- else }}
{{- $unitNs := dict "ns" 1 "us" 1000 "µs" 1000 "μs" 1000 "ms" 1000000 "s" 1000000000 "m" 60000000000 "h" 3600000000000 }}
{{- $ns := 0.0 }}
{{- range regexFindAll (printf "%s%s" $num $unit) $d -1 }}
{{- $n := regexFind (printf "^%s" $num) . }}
{{- $ns = addf $ns (mulf (float64 $n) (get $unitNs (trimPrefix $n .))) }}
{{- end }}
{{- round $ns 0 | int64 }}
{{- end }}
{{- end }}

{{/*
The pod's grace period. The runner's whole stop takes at most
shutdown.drain_timeout + plugins.cancel_grace + 15s (docs/operations.md,
"Stopping"), read from the rendered config, config.extra merged in: a
cancel_grace or drain_timeout given there counts. Derived: that + 10s of
margin. An explicit value shorter than the stop is refused.
*/}}
{{- define "pacer.terminationGracePeriodSeconds" -}}
{{- $cfg := include "pacer.config" . | fromYaml }}
{{- $drainV := dig "shutdown" "drain_timeout" "" $cfg | default "10s" }}
{{- $cancelV := dig "plugins" "cancel_grace" "" $cfg | default "5s" }}
{{- $drain := include "pacer.nanoseconds" (list "shutdown.drain_timeout (config.drainTimeout, or config.extra.shutdown.drain_timeout)" $drainV) | int64 }}
{{- $cancel := include "pacer.nanoseconds" (list "plugins.cancel_grace (config.extra.plugins.cancel_grace)" $cancelV) | int64 }}
{{- /* In whole seconds, rounded up. */}}
{{- $stop := ceil (divf (add $drain $cancel 15000000000) 1000000000) | int }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- if lt (int .Values.terminationGracePeriodSeconds) $stop }}
{{- fail (printf "terminationGracePeriodSeconds %v is shorter than the runner's whole stop, %ds: shutdown.drain_timeout %v + plugins.cancel_grace %v + 15s (docs/operations.md, \"Stopping\"); runs still draining would be killed with the pod. Set it to at least %d, or leave it unset to derive it" .Values.terminationGracePeriodSeconds $stop $drainV $cancelV $stop) }}
{{- end }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add $stop 10 }}
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
{{- if $v.api.probePort }}
{{- if eq (int $v.api.probePort) (int $v.api.port) }}
{{- fail (printf "api.probePort %d is api.port too: give the probes a port of their own, or set api.probePort: 0 to probe the API port" (int $v.api.probePort)) }}
{{- end }}
{{- $_ := set $http "probe_listen" (printf "0.0.0.0:%d" (int $v.api.probePort)) }}
{{- end }}
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
