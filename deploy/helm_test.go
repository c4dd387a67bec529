package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pacerun/pacer/runner/config"
)

const chartDir = "helm/pacer"

// kubeScoreIgnored are kube-score checks turned off, each with its reason.
var kubeScoreIgnored = map[string]string{
	// A CPU limit throttles the leader, whose lease keepalives then go out
	// late: it steps down and leadership flaps. Requests are set.
	"container-cpu-limit": "--ignore-container-cpu-limit",
	// Images are pinned by version tag or digest, which do not move:
	// IfNotPresent is right, and Always makes every restart depend on the
	// registry.
	"container-image-pull-policy": "--ignore-test=container-image-pull-policy",
}

// chartCase is one set of values the chart is rendered with.
type chartCase struct {
	name   string
	values string // file under helm/pacer/ci, or "" for none
	set    []string
}

var chartCases = []chartCase{
	{name: "try it out", values: "try-it-values.yaml"},
	{name: "production", values: "production-values.yaml"},
	{name: "mutual TLS", values: "mtls-values.yaml"},
	{name: "mutual TLS, probes on the API port", values: "mtls-values.yaml", set: []string{"api.probePort=0"}},
}

// The chart's copies of the alert rules and dashboards are the files under
// deploy/prometheus and deploy/grafana (Helm reads only files inside the
// chart).
func TestChartCopiesAreCurrent(t *testing.T) {
	pairs := map[string]string{rulesFile: filepath.Join(chartDir, "files/rules", filepath.Base(rulesFile))}
	dashes, _ := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	for _, d := range dashes {
		pairs[d] = filepath.Join(chartDir, "files/dashboards", filepath.Base(d))
	}
	copies, _ := filepath.Glob(filepath.Join(chartDir, "files/dashboards/*.json"))
	if len(copies) != len(dashes) {
		t.Errorf("%s/files/dashboards has %d dashboards, %s %d", chartDir, len(copies), dashboardsDir, len(dashes))
	}
	for orig, cp := range pairs {
		a, err := os.ReadFile(orig)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(cp)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from %s (%v): cp deploy/%s deploy/%s", cp, orig, err, orig, cp)
		}
	}
}

// helmTemplate renders the chart with a case's values.
func helmTemplate(t *testing.T, helm string, c chartCase) []byte {
	t.Helper()
	args := []string{"template", "pacer", chartDir, "--namespace", "pacer"}
	if c.values != "" {
		args = append(args, "-f", filepath.Join(chartDir, "ci", c.values))
	}
	for _, s := range c.set {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// objects decodes rendered manifests into maps, by "Kind/name".
func objects(t *testing.T, manifests []byte) map[string]any {
	t.Helper()
	out := map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(manifests))
	for {
		var v map[string]any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered manifests: %v", err)
		}
		if v == nil {
			continue
		}
		out[str(v, "kind")+"/"+str(v, "metadata", "name")] = v
	}
	return out
}

func TestHelmChart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds helm, kubecheck and kube-score from tools/ (skipped with -short)")
	}
	helm := tool(t, "kube", helmPkg)
	kubecheck := tool(t, "kube", kubecheckPkg)
	kubescore := tool(t, "kubescore", kubescorePkg)

	chart := yamlDocs(t, filepath.Join(chartDir, "Chart.yaml"))[0]
	appVersion := str(chart, "appVersion")

	// Values that would deploy something broken are refused, saying what
	// to set.
	for _, bad := range []struct {
		set  []string
		want string
	}{
		{nil, "etcd.endpoints"}, // each replica would run its own embedded etcd
		{[]string{"etcd.deploy=true", "config.drainTimeout=30 seconds"}, "config.drainTimeout"},
		{[]string{"etcd.deploy=true", "config.extra.plugins.cancel_grace=60"}, "plugins.cancel_grace"}, // Pacer refuses a bare number too
		{[]string{"etcd.deploy=true", "config.drainTimeout=2m", "terminationGracePeriodSeconds=60"}, "terminationGracePeriodSeconds 60 is shorter"},
		{[]string{"etcd.deploy=true", "metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true"}, "not both"},
		{[]string{"etcd.deploy=true", "api.tls.enabled=true"}, "api.tls.secretName"},
		{[]string{"etcd.deploy=true", "api.probePort=9464"}, "api.probePort 9464 is api.port too"}, // attack 15, F7
	} {
		args := []string{"template", "pacer", chartDir}
		for _, s := range bad.set {
			args = append(args, "--set", s)
		}
		if out, err := exec.Command(helm, args...).CombinedOutput(); err == nil || !strings.Contains(string(out), bad.want) {
			t.Errorf("helm template --set %v: %v, want an error naming %q:\n%s", bad.set, err, bad.want, out)
		}
	}

	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			lintArgs := []string{"lint", chartDir, "--strict"}
			if c.values != "" {
				lintArgs = append(lintArgs, "-f", filepath.Join(chartDir, "ci", c.values))
			}
			t.Logf("helm lint: %s", run(t, helm, lintArgs...))

			manifests := helmTemplate(t, helm, c)
			path := filepath.Join(t.TempDir(), "manifests.yaml")
			if err := os.WriteFile(path, manifests, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("kubecheck (strict decoding):\n%s", run(t, kubecheck, path))
			checkKubeScore(t, kubescore, path)
			checkChartObjects(t, c, objects(t, manifests), appVersion)
		})
	}
}

// The grace period covers the runner's whole stop (config.StopTimeout:
// shutdown.drain_timeout + plugins.cancel_grace + 15s) as rendered, with
// config.extra merged in, and an explicit one shorter than it is refused.
func TestHelmChartGracePeriod(t *testing.T) {
	if testing.Short() {
		t.Skip("builds helm from tools/ (skipped with -short)")
	}
	helm := tool(t, "kube", helmPkg)
	const margin = 10 * time.Second // what the chart adds to the stop

	for _, set := range [][]string{
		nil, // the defaults
		{"config.extra.plugins.cancel_grace=60s"},
		// config.extra wins over config.drainTimeout.
		{"config.drainTimeout=30s", "config.extra.shutdown.drain_timeout=10m"},
		{"config.drainTimeout=1m30s", "config.extra.plugins.cancel_grace=1500ms"},
		{"config.drainTimeout=0.3h", "config.extra.plugins.cancel_grace=2.5s"},
		{"config.drainTimeout=1h1m1s", "config.extra.plugins.cancel_grace=90s"},
		{"config.drainTimeout=1.5s", "config.extra.plugins.cancel_grace=1500ms"},
		{"config.drainTimeout=+20s", "config.extra.plugins.cancel_grace=+5s"}, // Go takes a leading "+"
		{"config.drainTimeout=2m0.000000001s"},
	} {
		objs := objects(t, helmTemplate(t, helm, chartCase{set: append([]string{"etcd.deploy=true"}, set...)}))
		cfg := parseChartConfig(t, str(objs["ConfigMap/pacer"], "data", "pacer.yaml"))
		grace, _ := dig(objs["Deployment/pacer"], "spec", "template", "spec", "terminationGracePeriodSeconds").(int)
		stop := cfg.StopTimeout()
		need := int((stop + time.Second - 1) / time.Second) // whole seconds, rounded up
		if time.Duration(grace)*time.Second != time.Duration(need)*time.Second+margin {
			t.Errorf("--set %v: terminationGracePeriodSeconds %d, want the stop %s (drain_timeout %s, cancel_grace %s) + %s, rounded up",
				set, grace, stop, cfg.Shutdown.DrainTimeout, cfg.Plugins.CancelGrace, margin)
		}

		// An explicit grace period: the stop itself is enough, a second
		// less is refused, naming what it must cover.
		ok := helmTemplate(t, helm, chartCase{set: append([]string{"etcd.deploy=true", fmt.Sprintf("terminationGracePeriodSeconds=%d", need)}, set...)})
		if g, _ := dig(objects(t, ok)["Deployment/pacer"], "spec", "template", "spec", "terminationGracePeriodSeconds").(int); g != need {
			t.Errorf("--set %v terminationGracePeriodSeconds=%d: rendered %d", set, need, g)
		}
		args := []string{"template", "pacer", chartDir, "--set", "etcd.deploy=true", "--set", fmt.Sprintf("terminationGracePeriodSeconds=%d", need-1)}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := exec.Command(helm, args...).CombinedOutput()
		if want := fmt.Sprintf("terminationGracePeriodSeconds %d is shorter than the runner's whole stop, %ds", need-1, need); err == nil || !strings.Contains(string(out), want) {
			t.Errorf("helm template --set %v terminationGracePeriodSeconds=%d: %v, want an error saying %q:\n%s", set, need-1, err, want, out)
		}
	}
}

// checkKubeScore fails on every critical finding of kube-score.
func checkKubeScore(t *testing.T, kubescore, path string) {
	t.Helper()
	args := []string{"score", "--output-format", "ci"}
	for _, flag := range kubeScoreIgnored {
		args = append(args, flag)
	}
	out, _ := exec.Command(kubescore, append(args, path)...).CombinedOutput()
	var critical, warning []string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "[CRITICAL]"):
			critical = append(critical, line)
		case strings.HasPrefix(line, "[WARNING]"):
			warning = append(warning, line)
		}
	}
	if len(warning) > 0 {
		t.Logf("kube-score warnings:\n  %s", strings.Join(warning, "\n  "))
	}
	if len(critical) > 0 {
		t.Errorf("kube-score critical findings:\n  %s", strings.Join(critical, "\n  "))
	}
	if !strings.Contains(string(out), "[OK]") {
		t.Errorf("kube-score scored nothing:\n%s", out)
	}
}

// parseChartConfig parses the rendered pacer.yaml as the runner does.
func parseChartConfig(t *testing.T, data string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("configmap pacer.yaml", []byte(data))
	if err != nil {
		t.Fatalf("rendered pacer.yaml does not parse: %v\n%s", err, data)
	}
	return cfg
}

func checkChartObjects(t *testing.T, c chartCase, objs map[string]any, appVersion string) {
	t.Helper()
	values := map[string]any{}
	if c.values != "" {
		decodeYAMLFile(t, filepath.Join(chartDir, "ci", c.values), &values)
	}
	dep := objs["Deployment/pacer"]
	if dep == nil {
		t.Fatalf("no Deployment/pacer among %v", keys(objs))
	}
	pod := dig(dep, "spec", "template")
	podLabels, _ := dig(pod, "metadata", "labels").(map[string]any)
	ctr := dig(pod, "spec", "containers", "0")

	// The config is valid, and fits the pod.
	cm := objs["ConfigMap/pacer"]
	data := str(cm, "data", "pacer.yaml")
	cfg := parseChartConfig(t, data)
	var raw map[string]any
	_ = yaml.Unmarshal([]byte(data), &raw)
	if cfg.Plugins.Dir != pluginsDirInImage || !strings.HasSuffix(cfg.HTTP.Listen, ":9464") || strings.HasPrefix(cfg.HTTP.Listen, "127.") {
		t.Errorf("config: plugins.dir %q, http.listen %q", cfg.Plugins.Dir, cfg.HTTP.Listen)
	}
	if len(cfg.Cluster.Etcd.Endpoints) == 0 {
		t.Error("config: no etcd endpoints: each replica would run its own embedded etcd")
	}
	_, hasShards := dig(raw, "cluster").(map[string]any)["shards"]
	if want := dig(values, "config", "shards") != nil; hasShards != want {
		t.Errorf("cluster.shards rendered: %v, set in the values: %v", hasShards, want)
	}

	// The API token comes from a Secret.
	env := dig(ctr, "env", "0")
	secretName, secretKey := str(env, "valueFrom", "secretKeyRef", "name"), str(env, "valueFrom", "secretKeyRef", "key")
	if cfg.HTTP.TokenEnv == "" || str(env, "name") != cfg.HTTP.TokenEnv || secretName == "" || secretKey == "" {
		t.Errorf("the container does not get http.token_env %q from a Secret: %v", cfg.HTTP.TokenEnv, env)
	}
	if existing := str(values, "api", "token", "existingSecret"); existing != "" {
		if secretName != existing {
			t.Errorf("token Secret %q, want the existing %q", secretName, existing)
		}
	} else if s := objs["Secret/"+secretName]; s == nil || str(s, "data", secretKey) == "" {
		t.Errorf("no Secret %s with key %s", secretName, secretKey)
	}

	// API TLS: the config's files are in the mounted Secret, probes and
	// scrapes speak HTTPS.
	if tls := dig(raw, "http", "tls"); tls != nil {
		for _, k := range []string{"cert_file", "key_file"} {
			if !strings.HasPrefix(str(tls, k), "/etc/pacer-secrets/api-tls/") {
				t.Errorf("http.tls.%s = %q, not in the mounted Secret", k, str(tls, k))
			}
		}
		if scheme := str(ctr, "readinessProbe", "httpGet", "scheme"); cfg.HTTP.ProbeListen == "" && scheme != "HTTPS" && dig(ctr, "readinessProbe", "tcpSocket") == nil {
			t.Errorf("readiness probe scheme %q with API TLS", scheme)
		}
	}

	// With a probe port (the default), the kubelet asks /healthz and
	// /readyz there, over plain HTTP, whatever the API's TLS; the port
	// named "probes" is the config's http.probe_listen.
	if !slices.Contains(c.set, "api.probePort=0") {
		if !strings.HasSuffix(cfg.HTTP.ProbeListen, ":9465") || strings.HasPrefix(cfg.HTTP.ProbeListen, "127.") {
			t.Errorf("config: http.probe_listen %q, want 0.0.0.0:9465", cfg.HTTP.ProbeListen)
		}
		if str(ctr, "ports", "1", "name") != "probes" || dig(ctr, "ports", "1", "containerPort") != 9465 {
			t.Errorf("container port probes 9465 expected, got %v", dig(ctr, "ports"))
		}
		for probe, path := range map[string]string{"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
			if str(ctr, probe, "httpGet", "path") != path || str(ctr, probe, "httpGet", "port") != "probes" ||
				str(ctr, probe, "httpGet", "scheme") != "" {
				t.Errorf("%s: %v, want GET %s on the probes port over HTTP", probe, dig(ctr, probe), path)
			}
		}
	} else if cfg.HTTP.ProbeListen != "" || dig(ctr, "ports", "1") != nil {
		t.Errorf("api.probePort 0, yet http.probe_listen %q and ports %v", cfg.HTTP.ProbeListen, dig(ctr, "ports"))
	}
	if dig(values, "api", "tls", "enabled") == true && dig(raw, "http", "tls") == nil {
		t.Error("api.tls.enabled, but the config has no http.tls")
	}

	// Draining fits in the grace period.
	grace, _ := dig(pod, "spec", "terminationGracePeriodSeconds").(int)
	if float64(grace) < cfg.StopTimeout().Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d < the runner's stop timeout %s (shutdown.drain_timeout %s)", grace, cfg.StopTimeout(), cfg.Shutdown.DrainTimeout)
	}

	// Image: the chart's appVersion unless pinned by digest.
	image := str(ctr, "image")
	if digest := str(values, "image", "digest"); digest != "" {
		if !strings.HasSuffix(image, "@"+digest) {
			t.Errorf("image %q, want the digest %s", image, digest)
		}
	} else if !strings.HasSuffix(image, ":"+appVersion) {
		t.Errorf("image %q, want tag %s (the chart's appVersion)", image, appVersion)
	}

	// Resources, including ephemeral storage; no CPU limit.
	for _, k := range []string{"requests", "limits"} {
		if dig(ctr, "resources", k, "ephemeral-storage") == nil || dig(ctr, "resources", k, "memory") == nil {
			t.Errorf("resources.%s lacks memory or ephemeral-storage: %v", k, dig(ctr, "resources"))
		}
	}
	if dig(ctr, "resources", "limits", "cpu") != nil {
		t.Error("a CPU limit: a throttled leader renews its lease late")
	}

	// Spread over nodes and zones.
	var topo []string
	tsc, _ := dig(pod, "spec", "topologySpreadConstraints").([]any)
	for _, c := range tsc {
		topo = append(topo, str(c, "topologyKey"))
		sel, _ := dig(c, "labelSelector", "matchLabels").(map[string]any)
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("topology spread selector %s=%v does not match the pod", k, v)
			}
		}
	}
	if !slices.Contains(topo, "kubernetes.io/hostname") || !slices.Contains(topo, "topology.kubernetes.io/zone") {
		t.Errorf("topologySpreadConstraints over %v, want hostname and zone", topo)
	}

	// PodDisruptionBudget.
	if pdb := objs["PodDisruptionBudget/pacer"]; pdb != nil {
		if str(pdb, "spec", "unhealthyPodEvictionPolicy") != "AlwaysAllow" {
			t.Error("PodDisruptionBudget without unhealthyPodEvictionPolicy: AlwaysAllow")
		}
	} else if dig(values, "podDisruptionBudget", "enabled") != false {
		t.Error("no PodDisruptionBudget")
	}

	// NetworkPolicy on the pods, admitting the API port only.
	if np := objs["NetworkPolicy/pacer"]; np != nil {
		sel, _ := dig(np, "spec", "podSelector", "matchLabels").(map[string]any)
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("NetworkPolicy selector %s=%v does not match the pod", k, v)
			}
		}
		if p := dig(np, "spec", "ingress", "0", "ports", "0", "port"); p != "http" {
			t.Errorf("NetworkPolicy admits port %v, want http", p)
		}
	} else if dig(values, "networkPolicy", "enabled") != false {
		t.Error("no NetworkPolicy")
	}

	// Monitors scrape without honorLabels.
	for _, kind := range []string{"PodMonitor", "ServiceMonitor"} {
		m := objs[kind+"/pacer"]
		if m == nil {
			continue
		}
		if str(m, "spec", "jobLabel") == "" {
			t.Errorf("%s without jobLabel", kind)
		}
		eps, _ := dig(m, "spec", "podMetricsEndpoints").([]any)
		if kind == "ServiceMonitor" {
			eps, _ = dig(m, "spec", "endpoints").([]any)
		}
		for _, ep := range eps {
			if dig(ep, "honorLabels") != nil {
				t.Errorf("%s sets honorLabels", kind)
			}
			if want := map[bool]string{true: "https", false: "http"}[dig(raw, "http", "tls") != nil]; str(ep, "scheme") != want {
				t.Errorf("%s scheme %q, want %s", kind, str(ep, "scheme"), want)
			}
		}
	}

	// The PrometheusRule holds the rules file, with its runbook base.
	if pr := objs["PrometheusRule/pacer"]; pr != nil {
		var rf ruleFile
		decodeYAMLFile(t, rulesFile, &rf)
		base := str(values, "metrics", "prometheusRule", "runbookBaseURL")
		groups, _ := dig(pr, "spec", "groups").([]any)
		n := 0
		for gi, g := range rf.Groups {
			for ri, r := range g.Rules {
				got := dig(groups, fmt.Sprint(gi), "rules", fmt.Sprint(ri))
				want := strings.Replace(r.Annotations["runbook_url"], runbookBase, base, 1)
				if str(got, "alert") != r.Alert || str(got, "expr") != r.Expr || str(got, "annotations", "runbook_url") != want {
					t.Errorf("PrometheusRule group %d rule %d: %v, want alert %s with runbook_url %s", gi, ri, got, r.Alert, want)
				}
				n++
			}
		}
		t.Logf("PrometheusRule: %d rules", n)
	}

	// Dashboards for Grafana's sidecar.
	if dig(values, "dashboards", "enabled") == true {
		dashes, _ := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
		for _, d := range dashes {
			name := "ConfigMap/pacer-" + strings.TrimSuffix(filepath.Base(d), ".json")
			cm := objs[name]
			want, _ := os.ReadFile(d)
			if cm == nil || str(cm, "metadata", "labels", "grafana_dashboard") != "1" ||
				strings.TrimSpace(str(cm, "data", filepath.Base(d))) != strings.TrimSpace(string(want)) {
				t.Errorf("%s: missing, unlabelled or not %s", name, d)
			}
		}
	}

	// Third-party plugins: an init container per plugin, registered in
	// plugins.paths.
	extra, _ := dig(values, "plugins", "extra").([]any)
	for i, p := range extra {
		name := str(p, "name")
		if cfg.Plugins.Paths[name] != "/opt/pacer/plugins/"+name || str(pod, "spec", "initContainers", fmt.Sprint(i), "image") != str(p, "image") {
			t.Errorf("plugin %s: paths %v, init containers %v", name, cfg.Plugins.Paths, dig(pod, "spec", "initContainers"))
		}
	}

	// The optional etcd runs with the settings Pacer needs.
	if ss := objs["StatefulSet/pacer-etcd"]; ss != nil {
		envs := fmt.Sprint(dig(ss, "spec", "template", "spec", "containers", "0", "env"))
		for _, want := range []string{"ETCD_AUTO_COMPACTION_MODE", "ETCD_AUTO_COMPACTION_RETENTION", "ETCD_QUOTA_BACKEND_BYTES"} {
			if !strings.Contains(envs, want) {
				t.Errorf("the chart's etcd does not set %s", want)
			}
		}
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
