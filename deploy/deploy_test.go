// Tests of the deploy/ assets: the alert rules (promtool), the Grafana
// dashboards, every YAML file, the deploy configs, and, end to end, every
// dashboard and alert query against a live Prometheus scraping a live runner.
//
//	go test -race -count=1 ./deploy/          # everything (needs prometheus + promtool)
//	go test -short ./deploy/                  # no processes, no builds
//
// promtool and prometheus come from Debian's prometheus package
// (apt-get install prometheus); CI installs it.
package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/sdk/sdktest"
)

const module = "github.com/pacerun/pacer"

// Paths relative to this package's directory, deploy/.
const (
	rulesFile     = "prometheus/rules/pacer-alerts.yml"
	rulesTestFile = "prometheus/rules/pacer-alerts_test.yml"
	catalogFile   = "../docs/observability.md"
	dashboardsDir = "grafana/dashboards"
	// pluginsDirInImage is where deploy/Dockerfile puts the plugins; the
	// compose and Kubernetes configs must point plugins.dir at it.
	pluginsDirInImage = "/usr/local/lib/pacer/plugins"
)

// plannedMetrics are metrics that alert rules and dashboards may use before
// the runner exports them (name → labels): each is also in absentInTest,
// with the issue that adds it. Remove an entry once docs/observability.md
// lists the metric.
var plannedMetrics = map[string][]string{}

// targetLabels are the labels Prometheus (and Kubernetes service discovery)
// put on every Pacer series: queries may match and group by them. No
// pacer_ metric may have one of them as a label of its own.
var targetLabels = []string{"job", "instance", "cluster", "namespace"}

// runbookBase is where every alert's runbook_url points, followed by
// "#" and the alert's name in lower case: a heading of docs/runbooks.md.
const runbookBase = "https://github.com/pacerun/pacer/blob/main/docs/runbooks.md"

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// httpc does not keep connections, so no transport goroutine outlives a test.
var httpc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// needTool returns the path of a Prometheus binary or fails the test: CI
// installs them, so a missing one is a broken setup, not a reason to skip.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH: install Debian's prometheus package (sudo apt-get install prometheus), "+
			"which provides /usr/bin/prometheus and /usr/bin/promtool", name)
	}
	return p
}

// ---------------------------------------------------------------------------
// The metric catalog (docs/observability.md) and PromQL checks against it.

// catalog maps every series name the runner exports (histograms expanded to
// _bucket, _sum and _count) to its label names.
type catalog map[string][]string

func loadCatalog(t *testing.T) catalog {
	t.Helper()
	b, err := os.ReadFile(catalogFile)
	if err != nil {
		t.Fatal(err)
	}
	tick := regexp.MustCompile("`([a-z_]+)`")
	c := catalog{}
	for _, line := range strings.Split(string(b), "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 5 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`pacer_") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cols[1]), "`")
		var labels []string
		for _, m := range tick.FindAllStringSubmatch(cols[3], -1) {
			labels = append(labels, m[1])
		}
		if strings.TrimSpace(cols[2]) == "histogram" {
			c[name+"_bucket"] = append(slices.Clone(labels), "le")
			c[name+"_sum"] = labels
			c[name+"_count"] = labels
		} else {
			c[name] = labels
		}
	}
	if len(c) < 13 {
		t.Fatalf("%s: found only %d metrics in the catalog table", catalogFile, len(c))
	}
	return c
}

var (
	selectorRe = regexp.MustCompile(`\b(pacer_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?`)
	matcherRe  = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"`)
	groupingRe = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// selectors returns the pacer_* series selectors in expr, e.g.
// `pacer_job_runs_total{outcome!="success"}`.
func selectors(expr string) []string { return selectorRe.FindAllString(expr, -1) }

// checkExpr reports metric names and labels in expr that the catalog does not
// know. Planned metrics are accepted when allowPlanned is set.
func (c catalog) checkExpr(expr string, allowPlanned bool) []string {
	var problems []string
	known := map[string]bool{"le": true}
	for _, l := range targetLabels {
		known[l] = true
	}
	for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
		name, matchers := m[1], strings.Trim(m[2], "{}")
		labels, ok := c[name]
		if !ok {
			if l, planned := plannedMetrics[name]; planned && allowPlanned {
				labels, ok = l, true
			}
		}
		for _, l := range labels {
			if slices.Contains(targetLabels, l) {
				problems = append(problems, fmt.Sprintf("metric %s has a label %q of its own, which collides with the target label", name, l))
			}
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("metric %s is not in %s", name, catalogFile))
			continue
		}
		for _, l := range labels {
			known[l] = true
		}
		if strings.TrimSpace(matchers) == "" {
			continue
		}
		for _, mt := range strings.Split(matchers, ",") {
			mm := matcherRe.FindStringSubmatch(mt)
			if mm == nil {
				problems = append(problems, fmt.Sprintf("cannot read matcher %q of %s", mt, name))
				continue
			}
			if !slices.Contains(targetLabels, mm[1]) && !slices.Contains(labels, mm[1]) {
				problems = append(problems, fmt.Sprintf("%s has no label %q (catalog: %v)", name, mm[1], labels))
			}
		}
	}
	for _, g := range groupingRe.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !known[l] {
				problems = append(problems, fmt.Sprintf("grouping by %q, a label none of the expression's metrics has", l))
			}
		}
	}
	return problems
}

// ---------------------------------------------------------------------------
// Alert rules.

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadAlerts(t *testing.T) []rule {
	t.Helper()
	var rf ruleFile
	decodeYAMLFile(t, rulesFile, &rf)
	var out []rule
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no alert rules", rulesFile)
	}
	return out
}

func decodeYAMLFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

var byJobIDRe = regexp.MustCompile(`\bby\s*\([^)]*\bjob_id\b`)

// The rules are checked and unit-tested by two promtools: Debian's (2.x,
// also the live test's Prometheus) and 3.x built from the module proxy
// (tools/prometheus; the compose stack runs Prometheus 3). They differ:
// 3.x selects range windows left-open.
func TestAlertRules(t *testing.T) {
	if testing.Short() {
		t.Skip("builds promtool 3.x from tools/prometheus (skipped with -short)")
	}
	promtools := []string{needTool(t, "promtool"), tool(t, "prometheus", promtoolPkg)}
	for _, promtool := range promtools {
		out, _ := exec.Command(promtool, "--version").CombinedOutput()
		version, _, _ := strings.Cut(string(out), "\n")
		version = promtool + ": " + version
		promtoolRun := func(args ...string) {
			t.Helper()
			out, err := exec.Command(promtool, args...).CombinedOutput()
			if err != nil {
				t.Errorf("%s: promtool %s: %v\n%s", version, strings.Join(args, " "), err, out)
				return
			}
			t.Logf("%s: promtool %s:\n%s", version, strings.Join(args, " "), bytes.TrimSpace(out))
		}
		promtoolRun("check", "rules", rulesFile)
		promtoolRun("test", "rules", rulesTestFile)
		promtoolRun("check", "config", "prometheus/prometheus.yml")
		// The compose stack's config, laid out as its container sees it: the
		// rules directory is mounted next to it.
		dir := t.TempDir()
		copyFile(t, "compose/prometheus.yml", filepath.Join(dir, "prometheus.yml"))
		rulesDir, err := filepath.Abs(filepath.Dir(rulesFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(rulesDir, filepath.Join(dir, "rules")); err != nil {
			t.Fatal(err)
		}
		promtoolRun("check", "config", filepath.Join(dir, "prometheus.yml"))
	}
	// No scrape config keeps a metric's own job label over the target's.
	for _, f := range []string{"prometheus/prometheus.yml", "compose/prometheus.yml"} {
		docs := yamlDocs(t, f)
		scs, _ := dig(docs[0], "scrape_configs").([]any)
		for _, sc := range scs {
			if dig(sc, "honor_labels") == true {
				t.Errorf("%s: scrape job %s has honor_labels: true; Pacer's metrics have no label that needs it", f, str(sc, "job_name"))
			}
		}
	}
	runbooks, err := os.ReadFile("../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}

	cat := loadCatalog(t)
	alerts := loadAlerts(t)
	names := map[string]bool{}
	for _, r := range alerts {
		if names[r.Alert] {
			t.Errorf("alert %s defined twice", r.Alert)
		}
		names[r.Alert] = true
		if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
			t.Errorf("alert %s: needs a positive for: duration, has %q", r.Alert, r.For)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
			t.Errorf("alert %s: severity label %q, want critical, warning or info", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s: needs summary and description annotations", r.Alert)
		}
		if byJobIDRe.MatchString(r.Expr) &&
			(!strings.Contains(r.Annotations["summary"], "$labels.job_id") || !strings.Contains(r.Annotations["description"], "$labels.job_id")) {
			t.Errorf("alert %s is per Pacer job: its summary and description must name {{ $labels.job_id }}", r.Alert)
		}
		anchor := strings.ToLower(r.Alert)
		if got, want := r.Annotations["runbook_url"], runbookBase+"#"+anchor; got != want {
			t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, got, want)
		}
		if !regexp.MustCompile(`(?m)^## ` + r.Alert + `$`).Match(runbooks) {
			t.Errorf("alert %s: docs/runbooks.md has no section \"## %s\" (the runbook_url's anchor)", r.Alert, r.Alert)
		}
		for _, p := range cat.checkExpr(r.Expr, true) {
			t.Errorf("alert %s: %s", r.Alert, p)
		}
		for name := range plannedMetrics {
			if selectorRe.MatchString(r.Expr) && regexp.MustCompile(`\b`+name+`\b`).MatchString(r.Expr) {
				if cannotOccur["alert "+r.Alert] == "" || absentInTest[name] == "" {
					t.Errorf("alert %s uses planned metric %s: list the alert in cannotOccur and the metric in absentInTest", r.Alert, name)
				}
			}
		}
	}
	for name := range plannedMetrics {
		if _, ok := cat[name]; ok {
			t.Errorf("%s is in %s now: remove it from plannedMetrics and absentInTest", name, catalogFile)
		}
	}

	// Every alert has a unit test where it fires and one where it does not.
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	decodeYAMLFile(t, rulesTestFile, &tf)
	if !slices.Contains(tf.RuleFiles, filepath.Base(rulesFile)) {
		t.Errorf("%s does not load %s", rulesTestFile, filepath.Base(rulesFile))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, g := range tf.Tests {
		for _, c := range g.Cases {
			if !names[c.Alertname] {
				t.Errorf("%s: test %q checks unknown alert %s", rulesTestFile, g.Name, c.Alertname)
			}
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				quiet[c.Alertname] = true
			}
		}
	}
	for name := range names {
		if !fires[name] || !quiet[name] {
			t.Errorf("%s: alert %s needs a case where it fires (%v) and one where it does not (%v)", rulesTestFile, name, fires[name], quiet[name])
		}
	}
}

// alertRowRe matches a row of deploy/README.md's alert table:
// | `Name` | fires when | for | severity |.
var alertRowRe = regexp.MustCompile("(?m)^\\| `(Pacer[A-Za-z]+)` \\|.*\\| ([^|]+) \\| ([^|]+) \\|$")

// TestReadmeListsEveryAlert: deploy/README.md's alert table has one row per
// alert of the rules file, with its for: and severity, and no other
// (attack 23, U13: it listed 13 of the 17).
func TestReadmeListsEveryAlert(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][2]string{}
	for _, m := range alertRowRe.FindAllStringSubmatch(string(readme), -1) {
		if _, dup := rows[m[1]]; dup {
			t.Errorf("README.md: alert %s listed twice", m[1])
		}
		rows[m[1]] = [2]string{m[2], m[3]}
	}
	for _, r := range loadAlerts(t) {
		row, ok := rows[r.Alert]
		switch {
		case !ok:
			t.Errorf("README.md's alert table lacks %s (for %s, %s), which %s defines", r.Alert, r.For, r.Labels["severity"], rulesFile)
		case row != [2]string{r.For, r.Labels["severity"]}:
			t.Errorf("README.md lists %s with for %s, severity %s; %s has %s, %s", r.Alert, row[0], row[1], rulesFile, r.For, r.Labels["severity"])
		}
		delete(rows, r.Alert)
	}
	for name := range rows {
		t.Errorf("README.md's alert table lists %s, which %s does not define", name, rulesFile)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Dashboards.

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashTarget struct {
	RefID      string `json:"refId"`
	Expr       string `json:"expr"`
	Exemplar   bool   `json:"exemplar"`
	Datasource *dsRef `json:"datasource"`
}

type dashPanel struct {
	ID         int          `json:"id"`
	Type       string       `json:"type"`
	Title      string       `json:"title"`
	Datasource *dsRef       `json:"datasource"`
	Targets    []dashTarget `json:"targets"`
	GridPos    *struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Panels []dashPanel `json:"panels"` // a row's panels
}

type dashVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *dsRef          `json:"datasource"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

type dashboard struct {
	file          string
	UID           string      `json:"uid"`
	Title         string      `json:"title"`
	SchemaVersion int         `json:"schemaVersion"`
	Panels        []dashPanel `json:"panels"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
}

func (d *dashboard) variable(name string) *dashVariable {
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == name {
			return &d.Templating.List[i]
		}
	}
	return nil
}

// allPanels flattens rows.
func (d *dashboard) allPanels() []dashPanel {
	var out []dashPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

func loadDashboards(t *testing.T) []*dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []*dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := &dashboard{file: filepath.Base(f)}
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, d)
	}
	for _, want := range []string{"pacer-overview.json", "pacer-job.json"} {
		if !slices.ContainsFunc(out, func(d *dashboard) bool { return d.file == want }) {
			t.Fatalf("%s/%s is missing", dashboardsDir, want)
		}
	}
	return out
}

// query is one PromQL expression of a dashboard panel or an alert rule.
type query struct {
	key  string // "alert NAME" or "FILE: PANEL TITLE": the key of cannotOccur
	what string // for messages
	expr string
}

func dashboardQueries(ds []*dashboard) []query {
	var out []query
	for _, d := range ds {
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				out = append(out, query{key: d.file + ": " + p.Title, what: fmt.Sprintf("%s: panel %q target %s", d.file, p.Title, tg.RefID), expr: tg.Expr})
			}
		}
	}
	return out
}

func alertQueries(rs []rule) []query {
	var out []query
	for _, r := range rs {
		out = append(out, query{key: "alert " + r.Alert, what: "alert " + r.Alert, expr: r.Expr})
	}
	return out
}

// grafanaVarRe finds the Grafana variables the test knows how to replace.
var grafanaVarRe = regexp.MustCompile(`\$(\{[a-zA-Z_]+\}|[a-zA-Z_]+)`)

// substitute replaces the dashboard variables with values usable outside
// Grafana: jobID for the Pacer job, and for the deployment variables what
// Grafana sends for "All" (cluster and namespace match absent labels too),
// except the scrape job, which is the live test's. An unknown variable is an
// error.
func substitute(expr, jobID string) (string, error) {
	var unknown []string
	out := grafanaVarRe.ReplaceAllStringFunc(expr, func(v string) string {
		switch strings.Trim(v, "${}") {
		case "job_id":
			return jobID
		case "job":
			return liveScrapeJob
		case "cluster", "namespace":
			return ".*"
		case "instance":
			return ".+"
		case "__rate_interval":
			return "15s"
		case "__interval":
			return "5s"
		case "__range":
			return "1m"
		}
		unknown = append(unknown, v)
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown variable(s) %v", unknown)
	}
	return out, nil
}

func TestDashboardsAreValid(t *testing.T) {
	cat := loadCatalog(t)
	ds := loadDashboards(t)
	uids := map[string]string{}
	for _, d := range ds {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: needs a uid and a title", d.file)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s have the same uid %q", d.file, other, d.UID)
		}
		uids[d.UID] = d.file
		if d.SchemaVersion < 36 {
			t.Errorf("%s: schemaVersion %d, want >= 36 (Grafana 9+)", d.file, d.SchemaVersion)
		}
		dsVar := d.variable("datasource")
		if dsVar == nil || dsVar.Type != "datasource" || string(dsVar.Query) != `"prometheus"` || dsVar.Current.Value != "prometheus" {
			t.Errorf("%s: needs a datasource variable of type prometheus defaulting to uid \"prometheus\"", d.file)
		}
		ids := map[int]string{}
		for _, p := range d.allPanels() {
			where := fmt.Sprintf("%s: panel %d %q", d.file, p.ID, p.Title)
			if p.Title == "" {
				t.Errorf("%s: has no title", where)
			}
			if other, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("%s: id %d is zero or also used by %q", where, p.ID, other)
			}
			ids[p.ID] = p.Title
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: bad gridPos %+v", where, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || (p.Datasource.UID != "${datasource}" && p.Datasource.UID != "prometheus") {
				t.Errorf("%s: datasource %+v, want {type: prometheus, uid: ${datasource}}", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no targets", where)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: target %s has no expr", where, tg.RefID)
				}
				if refs[tg.RefID] {
					t.Errorf("%s: refId %s twice", where, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && p.Datasource != nil && *tg.Datasource != *p.Datasource {
					t.Errorf("%s: target %s has datasource %+v, the panel %+v", where, tg.RefID, tg.Datasource, p.Datasource)
				}
				if strings.Contains(tg.Expr, "pacer_job_run_duration_seconds_bucket") && !tg.Exemplar {
					t.Errorf("%s: run-duration query without exemplars (set \"exemplar\": true)", where)
				}
				if _, err := substitute(tg.Expr, "x"); err != nil {
					t.Errorf("%s: %v", where, err)
				}
				for _, m := range grafanaVarRe.FindAllStringSubmatch(tg.Expr, -1) {
					if name := strings.Trim(m[1], "{}"); !strings.HasPrefix(name, "__") && d.variable(name) == nil {
						t.Errorf("%s: uses $%s, which the dashboard does not define", where, name)
					}
				}
				for _, pr := range cat.checkExpr(tg.Expr, true) {
					t.Errorf("%s: %s", where, pr)
				}
				for name := range plannedMetrics {
					if regexp.MustCompile(`\b`+name+`\b`).MatchString(tg.Expr) && (cannotOccur[d.file+": "+p.Title] == "" || absentInTest[name] == "") {
						t.Errorf("%s uses planned metric %s: list the panel in cannotOccur and the metric in absentInTest", where, name)
					}
				}
			}
		}
		if d.file == "pacer-job.json" {
			v := d.variable("job_id")
			const want = "label_values(pacer_job_runs_total{" + deploymentMatchers + "}, job_id)"
			quoted, _ := json.Marshal(want)
			if v == nil || v.Type != "query" || v.Definition != want || !bytes.Contains(v.Query, quoted[1:len(quoted)-1]) {
				t.Errorf("%s: needs a query variable job_id = %s", d.file, want)
			}
			for _, p := range d.allPanels() {
				for _, tg := range p.Targets {
					if !strings.Contains(tg.Expr, `job_id="$job_id"`) {
						t.Errorf("%s: panel %q: query does not filter on job_id=\"$job_id\": %s", d.file, p.Title, tg.Expr)
					}
				}
			}
		}
	}
	// The overview shows the versions running, the leader's lease, and how
	// the shards are spread and whether each is led.
	overview := ds[slices.IndexFunc(ds, func(d *dashboard) bool { return d.file == "pacer-overview.json" })]
	for _, metric := range []string{"pacer_build_info", "pacer_lease_keepalive_age_seconds", "pacer_lease_keepalives_total", "pacer_leader",
		"pacer_shards_led", "pacer_shard_leader", "pacer_shard_transitions_total"} {
		if !slices.ContainsFunc(dashboardQueries([]*dashboard{overview}), func(q query) bool { return strings.Contains(q.expr, metric) }) {
			t.Errorf("pacer-overview.json: no panel shows %s", metric)
		}
	}
	qs := dashboardQueries(ds)
	t.Logf("%d dashboards, %d PromQL expressions", len(ds), len(qs))
	for _, q := range qs {
		t.Logf("%s: %s", q.what, oneLine(q.expr))
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// deploymentMatchers select one Pacer deployment: every dashboard query has
// them, so dashboards filter by cluster, namespace, scrape job and instance.
const deploymentMatchers = `cluster=~"$cluster", namespace=~"$namespace", job=~"$job", instance=~"$instance"`

// TestDashboardsPassDashboardLinter applies the rules of Grafana's
// dashboard-linter (tools/prometheus/dashlint: the linter itself is not on
// the module proxy) to every dashboard: a templated data source; cluster,
// namespace, job and instance variables (multi-select, All, refreshed on a
// time-range change) that every query filters on; titles, descriptions and
// units on every panel; $__rate_interval in rate(); counters only through
// rate/irate/increase; valid PromQL.
func TestDashboardsPassDashboardLinter(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dashlint from tools/prometheus (skipped with -short)")
	}
	dashlint := tool(t, "prometheus", dashlintPkg)
	files, err := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	if err != nil || len(files) < 2 {
		t.Fatalf("dashboards: %v %v", files, err)
	}
	out := run(t, dashlint, files...)
	t.Logf("dashlint %v: %s", files, out)

	// The linter finds what it should: a dashboard with a query that does
	// not filter on instance, and without units, fails.
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.ReplaceAll(string(b), `, instance=~\"$instance\"`, "")
	bad = strings.ReplaceAll(bad, `"unit": "`, `"unit": "x`)
	path := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	msg, err := exec.Command(dashlint, path).CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "target-instance-rule") || !strings.Contains(string(msg), "panel-units-rule") {
		t.Errorf("dashlint on a dashboard without instance matchers and with bad units: %v\n%s", err, msg)
	}
}

// ---------------------------------------------------------------------------
// YAML files, Kubernetes manifests, compose, Grafana provisioning, configs.

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Errorf("%s: document %d: %v", path, len(docs)+1, err)
			break
		}
		if v != nil {
			docs = append(docs, v)
		}
	}
	return docs
}

// dig walks maps (by key) and lists (by index, as a decimal string).
func dig(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any, path ...string) string {
	s, _ := dig(v, path...).(string)
	return s
}

func TestYAMLFilesParse(t *testing.T) {
	var n int
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join(chartDir, "templates") {
			return fs.SkipDir // Go templates: TestHelmChart renders them
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yml" || ext == ".yaml") {
			n++
			if docs := yamlDocs(t, path); len(docs) == 0 {
				t.Errorf("%s: empty", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d YAML files parse", n)
}

func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("kubernetes/*.yaml")
	byKind, byName := map[string]any{}, map[string]any{}
	for _, f := range files {
		for _, doc := range yamlDocs(t, f) {
			kind := str(doc, "kind")
			if kind == "" {
				t.Errorf("%s: a document without kind", f)
			}
			if byKind[kind] == nil {
				byKind[kind] = doc
			}
			byName[kind+"/"+str(doc, "metadata", "name")] = doc
		}
	}
	for _, k := range []string{"Deployment", "PodDisruptionBudget", "ConfigMap", "Secret", "Service", "Kustomization", "NetworkPolicy"} {
		if byKind[k] == nil {
			t.Fatalf("deploy/kubernetes: no %s", k)
		}
	}
	dep := byKind["Deployment"]
	podLabels, _ := dig(dep, "spec", "template", "metadata", "labels").(map[string]any)
	c := dig(dep, "spec", "template", "spec", "containers", "0")
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if got := str(c, probe, "httpGet", "path"); got != path {
			t.Errorf("Deployment: %s path %q, want %q", probe, got, path)
		}
		if port := dig(c, probe, "httpGet", "port"); port != "probes" {
			t.Errorf("Deployment: %s port %v, want the probes port (http.probe_listen)", probe, port)
		}
	}
	if str(c, "ports", "0", "name") != "http" || dig(c, "ports", "0", "containerPort") != 9464 ||
		str(c, "ports", "1", "name") != "probes" || dig(c, "ports", "1", "containerPort") != 9465 {
		t.Errorf("Deployment: container ports http 9464 and probes 9465 expected, got %v", dig(c, "ports"))
	}
	matches := func(what string, sel any) {
		m, _ := sel.(map[string]any)
		if len(m) == 0 {
			t.Errorf("%s: empty selector", what)
		}
		for k, v := range m {
			if podLabels[k] != v {
				t.Errorf("%s: selector %s=%v does not match the pod labels %v", what, k, v, podLabels)
			}
		}
	}
	matches("Deployment", dig(dep, "spec", "selector", "matchLabels"))
	matches("PodDisruptionBudget", dig(byKind["PodDisruptionBudget"], "spec", "selector", "matchLabels"))
	matches("Service", dig(byKind["Service"], "spec", "selector"))

	// The config in the ConfigMap is valid, reads the password from the
	// variable the Deployment sets from the Secret, and fits the image.
	cm := byKind["ConfigMap"]
	data := str(cm, "data", "pacer.yaml")
	cfg, err := config.Parse("configmap pacer.yaml", []byte(data))
	if err != nil {
		t.Fatalf("ConfigMap pacer.yaml: %v", err)
	}
	// The etcd password and the API token come from Secrets.
	envs, _ := dig(c, "env").([]any)
	fromSecret := func(name string) bool {
		for _, env := range envs {
			secret := byName["Secret/"+str(env, "valueFrom", "secretKeyRef", "name")]
			if str(env, "name") == name && dig(secret, "stringData", str(env, "valueFrom", "secretKeyRef", "key")) != nil {
				return true
			}
		}
		return false
	}
	if !fromSecret(cfg.Cluster.Etcd.PasswordEnv) {
		t.Errorf("Deployment env %v does not pass a Secret's password as %s", envs, cfg.Cluster.Etcd.PasswordEnv)
	}
	if cfg.HTTP.TokenEnv == "" || !fromSecret(cfg.HTTP.TokenEnv) {
		t.Errorf("the API listens on %s without a token from a Secret (http.token_env %q, env %v)", cfg.HTTP.Listen, cfg.HTTP.TokenEnv, envs)
	}
	if grace, _ := dig(dep, "spec", "template", "spec", "terminationGracePeriodSeconds").(int); float64(grace) < cfg.StopTimeout().Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d < the runner's stop timeout %s", grace, cfg.StopTimeout())
	}
	if str(byKind["PodDisruptionBudget"], "spec", "unhealthyPodEvictionPolicy") != "AlwaysAllow" {
		t.Error("PodDisruptionBudget without unhealthyPodEvictionPolicy: AlwaysAllow")
	}
	if tag := str(byKind["Kustomization"], "images", "0", "newTag"); tag == "" || tag == "latest" {
		t.Errorf("kustomization.yaml: image tag %q, want a version", tag)
	}
	for _, k := range []string{"requests", "limits"} {
		if dig(c, "resources", k, "ephemeral-storage") == nil {
			t.Errorf("Deployment: resources.%s without ephemeral-storage", k)
		}
	}
	if cfg.Plugins.Dir != pluginsDirInImage || !strings.HasSuffix(cfg.HTTP.Listen, ":9464") || strings.HasPrefix(cfg.HTTP.Listen, "127.") {
		t.Errorf("ConfigMap config: plugins.dir %q (want %s), http.listen %q (want 0.0.0.0:9464)", cfg.Plugins.Dir, pluginsDirInImage, cfg.HTTP.Listen)
	}
	if cfg.HTTP.ProbeListen != "0.0.0.0:9465" {
		t.Errorf("ConfigMap config: http.probe_listen %q, want 0.0.0.0:9465 (the probes port)", cfg.HTTP.ProbeListen)
	}
	if len(cfg.Cluster.Etcd.Endpoints) == 0 {
		t.Error("ConfigMap config: no etcd endpoints: replicas would each run their own embedded etcd")
	}
	if str(dig(dep, "spec", "template", "spec", "volumes", "0"), "configMap", "name") != str(cm, "metadata", "name") {
		t.Error("Deployment does not mount the ConfigMap")
	}

	// kustomize builds it; every object decodes strictly; kube-score finds
	// nothing critical.
	if testing.Short() {
		t.Log("-short: kustomize build, strict decoding and kube-score skipped (they build tools/kube and tools/kubescore)")
		return
	}
	kubecheck := tool(t, "kube", kubecheckPkg)
	out, err := exec.Command(kubecheck, "-kustomize", "kubernetes", "-o").Output()
	if err != nil {
		t.Fatalf("kubecheck -kustomize kubernetes: %v\n%s", err, out)
	}
	built := filepath.Join(t.TempDir(), "built.yaml")
	if err := os.WriteFile(built, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubecheck: %s", run(t, kubecheck, built))
	checkKubeScore(t, tool(t, "kubescore", kubescorePkg), built)
}

func TestComposeStack(t *testing.T) {
	docs := yamlDocs(t, "compose/compose.yaml")
	if len(docs) != 1 {
		t.Fatal("compose.yaml: want one document")
	}
	services, _ := dig(docs[0], "services").(map[string]any)
	for _, s := range []string{"etcd-1", "etcd-2", "etcd-3", "pacer-1", "pacer-2", "pacer-3", "jaeger", "prometheus", "grafana"} {
		if services[s] == nil {
			t.Errorf("compose.yaml: no service %s", s)
		}
	}
	// Every bind mount's source exists, relative to compose.yaml.
	for name, svc := range services {
		vols, _ := dig(svc, "volumes").([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(fmt.Sprint(v), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("compose.yaml: service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	if ctx := str(services["pacer-1"], "build", "context"); ctx != "../.." || str(services["pacer-1"], "build", "dockerfile") != "deploy/Dockerfile" {
		t.Errorf("compose.yaml: pacer build context %q, want ../.. with deploy/Dockerfile", ctx)
	}

	// The config is mounted as a directory: an editor that saves by
	// renaming would leave a bind-mounted single file at the old inode.
	pacerVols := fmt.Sprint(dig(services["pacer-1"], "volumes"))
	if !strings.Contains(pacerVols, "./config:/etc/pacer") || strings.Contains(pacerVols, "pacer.yaml:") {
		t.Errorf("compose.yaml: pacer mounts %s, want the directory ./config at /etc/pacer", pacerVols)
	}
	// etcd runs with auto-compaction and an explicit quota.
	for _, member := range []string{"etcd-1", "etcd-2", "etcd-3"} {
		env, _ := dig(services[member], "environment").(map[string]any)
		if env["ETCD_AUTO_COMPACTION_MODE"] == nil || env["ETCD_AUTO_COMPACTION_RETENTION"] == nil || env["ETCD_QUOTA_BACKEND_BYTES"] == nil {
			t.Errorf("compose.yaml: %s lacks auto-compaction or the quota: %v", member, env)
		}
	}
	// The image tag is the version the binary is built with.
	if tag, arg := str(services["pacer-1"], "image"), str(services["pacer-1"], "build", "args", "VERSION"); !strings.HasSuffix(tag, ":"+arg) {
		t.Errorf("compose.yaml: image %q is not tagged with the VERSION build arg %q", tag, arg)
	}
	cfg, err := config.Load("compose/config/pacer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Cluster.Etcd.Endpoints) != 3 || cfg.Plugins.Dir != pluginsDirInImage ||
		cfg.Observability.Tracing.Exporter != "otlp" || !strings.HasPrefix(cfg.Observability.Tracing.Endpoint, "jaeger:") {
		t.Errorf("compose/config/pacer.yaml: want 3 etcd endpoints, plugins.dir %s, otlp to jaeger; got %+v %q %+v",
			pluginsDirInImage, cfg.Cluster.Etcd.Endpoints, cfg.Plugins.Dir, cfg.Observability.Tracing)
	}
	for _, ep := range cfg.Cluster.Etcd.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || services[u.Hostname()] == nil {
			t.Errorf("compose/config/pacer.yaml: endpoint %s is no compose service", ep)
		}
	}
	if cfg.Node.Name != "" && strings.HasPrefix(cfg.Node.Name, "pacer-") {
		t.Errorf("compose/config/pacer.yaml sets node.name %q: all three replicas would share it", cfg.Node.Name)
	}
	if env, _ := dig(services["pacer-1"], "environment").(map[string]any); cfg.HTTP.TokenEnv == "" || env[cfg.HTTP.TokenEnv] == nil {
		t.Errorf("compose: the API listens on %s without a token (http.token_env %q, environment %v)", cfg.HTTP.Listen, cfg.HTTP.TokenEnv, env)
	}
	if grace, err := time.ParseDuration(str(services["pacer-1"], "stop_grace_period")); err != nil || grace < cfg.StopTimeout() {
		t.Errorf("compose.yaml: stop_grace_period %v (%v) < the runner's stop timeout %s", grace, err, cfg.StopTimeout())
	}
	prom := yamlDocs(t, "compose/prometheus.yml")
	targets := fmt.Sprint(dig(prom[0], "scrape_configs", "0", "static_configs", "0", "targets"))
	for _, s := range []string{"pacer-1:9464", "pacer-2:9464", "pacer-3:9464"} {
		if !strings.Contains(targets, s) {
			t.Errorf("compose/prometheus.yml: does not scrape %s", s)
		}
	}
	if dig(prom[0], "scrape_configs", "0", "honor_labels") != nil {
		t.Error("compose/prometheus.yml: the pacer scrape must not set honor_labels (the target's job label names the deployment)")
	}

	// Grafana provisioning: Prometheus with exemplar links to Jaeger.
	gds := yamlDocs(t, "grafana/provisioning/datasources/datasources.yaml")
	byUID := map[string]any{}
	list, _ := dig(gds[0], "datasources").([]any)
	for _, d := range list {
		byUID[str(d, "uid")] = d
	}
	if str(byUID["prometheus"], "type") != "prometheus" || str(byUID["jaeger"], "type") != "jaeger" {
		t.Fatalf("datasources.yaml: want uid prometheus (type prometheus) and uid jaeger (type jaeger)")
	}
	dest := dig(byUID["prometheus"], "jsonData", "exemplarTraceIdDestinations", "0")
	if str(dest, "name") != "trace_id" || str(dest, "datasourceUid") != "jaeger" {
		t.Errorf("datasources.yaml: exemplarTraceIdDestinations = %v, want [{name: trace_id, datasourceUid: jaeger}]", dest)
	}
	gdb := yamlDocs(t, "grafana/provisioning/dashboards/dashboards.yaml")
	path := str(gdb[0], "providers", "0", "options", "path")
	if vols := fmt.Sprint(dig(services["grafana"], "volumes")); !strings.Contains(vols, "../grafana/dashboards:"+path) {
		t.Errorf("dashboards.yaml reads %s, compose mounts %s", path, vols)
	}
}

// ---------------------------------------------------------------------------
// Builds shared by the tests that run binaries.

var (
	buildMu  sync.Mutex
	buildDir string
	buildOK  bool
)

// binaries builds pacer into a temporary directory and the shell and http
// plugins into its plugins/ subdirectory, once per test binary.
func binaries(t *testing.T) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		if !buildOK {
			t.Fatal("building pacer and its plugins failed in an earlier test")
		}
		return buildDir
	}
	dir, err := os.MkdirTemp("", "pacer-deploy-test-")
	if err != nil {
		t.Fatal(err)
	}
	buildDir = dir
	start := time.Now()
	sdktest.Build(t, dir, module+"/cmd/pacer")
	if err := os.MkdirAll(filepath.Join(dir, "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"shell", "http"} {
		sdktest.Build(t, filepath.Join(dir, "plugins"), module+"/plugins/"+p)
	}
	t.Logf("built pacer and plugins in %s", time.Since(start).Round(time.Millisecond))
	buildOK = true
	return dir
}

// The deploy configs pass `pacer validate`, which also starts their plugins
// and checks each job's params against the plugin's schema.
func TestDeployConfigsValidate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pacer and its plugins (skipped with -short)")
	}
	bin := binaries(t)
	cm := ""
	for _, doc := range yamlDocs(t, "kubernetes/configmap.yaml") {
		cm = str(doc, "data", "pacer.yaml")
	}
	compose, err := os.ReadFile("compose/config/pacer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]string{"compose/config/pacer.yaml": string(compose), "kubernetes/configmap.yaml": cm} {
		if !strings.Contains(cfg, pluginsDirInImage) {
			t.Fatalf("%s: plugins.dir is not %s", name, pluginsDirInImage)
		}
		path := filepath.Join(t.TempDir(), "pacer.yaml")
		local := strings.ReplaceAll(cfg, pluginsDirInImage, filepath.Join(bin, "plugins"))
		if err := os.WriteFile(path, []byte(local), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(bin, "pacer"), "validate", "--config", path)
		cmd.Env = append(os.Environ(), "PACER_ETCD_PASSWORD=x", "PACER_API_TOKEN=x")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("pacer validate %s: %v\n%s", name, err, out)
		}
	}
}

// ---------------------------------------------------------------------------
// End to end: pacer + prometheus, every query.

// liveJob is the job the job dashboard is queried for: it runs (3s), succeeds
// and skips overlapping slots, so every panel of the job dashboard has data.
const liveJob = "overlaps"

// liveScrapeJob is the live test's scrape job name: the value of $job.
const liveScrapeJob = "pacer"

// cannotOccur lists the queries whose result may be empty in the end-to-end
// test, because what they show cannot happen in it; for them only parsing is
// asserted (and, for alerts, that they do not fire). Keys: "alert NAME" or
// "DASHBOARD FILE: PANEL TITLE".
var cannotOccur = map[string]string{
	"alert PacerJobStale":              "needs a job without a success for over 1h; the test runs for under a minute and \"succeeds\" succeeds every second",
	"alert PacerScheduleLagHigh":       "needs runs starting over 5s late (p99); an idle runner starts them within milliseconds",
	"alert PacerNoLeader":              "needs no replica leading; the test's single replica leads throughout",
	"alert PacerLogLinesDropped":       "needs a replica whose stderr is blocked; the test reads the runner's log",
	"alert PacerMultipleLeaders":       "needs two replicas leading at once (split brain); the test runs one replica",
	"alert PacerLeaderFlapping":        "needs more than 3 leader elections in 10m, i.e. repeated failovers",
	"alert PacerJobSetDisagreement":    "needs a replica whose jobs differ from its cluster's for 10m; the test runs one replica, whose set is the cluster's",
	"alert PacerShardUnled":            "needs a shard nobody leads for a minute; the test's single replica leads every shard throughout",
	"alert PacerShardLedTwice":         "needs two replicas leading one shard at once; the test runs one replica",
	"alert PacerLeaseKeepaliveFailing": "needs failing lease keepalives (etcd slow, unreachable or without a leader); the test's etcd answers every one",
	"alert PacerPluginCrashLooping":    "needs more than 3 plugin restarts (crash, hang, failed health probe or failed start) in 10m; the shell plugin never restarts",
	"alert PacerPluginDown":            "needs a plugin that a run needs and that cannot start, or a quarantine; the shell plugin starts and stays up",
	"alert PacerTargetDown":            "needs a Pacer target that Prometheus cannot scrape; the test's runner is up throughout",
	"alert PacerEtcdNoLeader":          "needs an etcd member without a leader; the test's embedded etcd always has one (pacer_etcd_has_leader is 1)",
	"alert PacerEtcdDatabaseNearQuota": "needs an etcd database over 80% of its quota; the test's is a few MiB of 2 GiB",
}

// absentInTest are metrics the test's runner does not export, with why. The
// test fails when one of them has series after all: remove it then.
// Counters with known label values (a plugin's restarts and dropped log
// lines, the lease keepalives) exist at 0 from the start, so they are not
// listed.
var absentInTest = map[string]string{}

// unmatchedInTest are selectors (metric and one matcher) of metrics the test
// exports that no series of the test matches, with why. Empty: the failed
// keepalive results exist at 0 from the start.
var unmatchedInTest = map[string]string{}

// syncBuffer collects a process's output.
type syncBuffer struct{ syncbuf.Buffer }

// tail is the last n lines written.
func (s *syncBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(s.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
}

// start runs a process whose output is kept for failure reports; stop ends
// it at cleanup (pacer: SIGTERM, to exit cleanly; prometheus: kill).
func start(t *testing.T, name string, stop syscall.Signal, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(path, args...), out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			t.Errorf("%s exited before the end of the test: %v", name, p.err)
		default:
			_ = p.cmd.Process.Signal(stop)
			select {
			case <-p.exited:
				if stop == syscall.SIGTERM && p.err != nil {
					t.Errorf("%s: exit after SIGTERM: %v", name, p.err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not exit within 30s of %v; killing it", name, stop)
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("--- %s output (last lines) ---\n%s", name, p.out.tail(40))
		}
	})
	return p
}

func (p *proc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.out.tail(20))
	default:
		return nil
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls check until it reports nothing left to wait for, a process
// dies, or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, procs []*proc, check func() []string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := check()
		if len(missing) == 0 {
			return
		}
		for _, p := range procs {
			if err := p.alive(); err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s:\n  %s", timeout, what, strings.Join(missing, "\n  "))
		}
		<-tick.C
	}
}

// promVersion returns the major and minor version of the prometheus binary.
func promVersion(t *testing.T, prom string) (int, int) {
	t.Helper()
	out, err := exec.Command(prom, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("prometheus --version: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`version (\d+)\.(\d+)\.`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("prometheus --version: cannot read %q", out)
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return major, minor
}

// api GETs a Prometheus HTTP API path and decodes data into v.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

func promAPI(base, path string, params url.Values, v any) error {
	resp, err := httpc.Get(base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: HTTP %d: %.200s", path, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	if v != nil {
		return json.Unmarshal(r.Data, v)
	}
	return nil
}

// instant runs an instant query and returns how many samples it gave and how
// many of them are numbers (not NaN).
func instant(base, expr string) (samples, numbers int, err error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := promAPI(base, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return 0, 0, err
	}
	var values [][2]any
	switch data.ResultType {
	case "vector":
		var vec []struct {
			Value [2]any `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return 0, 0, err
		}
		for _, s := range vec {
			values = append(values, s.Value)
		}
	case "scalar":
		var s [2]any
		if err := json.Unmarshal(data.Result, &s); err != nil {
			return 0, 0, err
		}
		values = append(values, s)
	default:
		return 0, 0, fmt.Errorf("unexpected result type %s", data.ResultType)
	}
	for _, v := range values {
		s, _ := v[1].(string)
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) {
			numbers++
		}
	}
	return len(values), numbers, nil
}

func TestQueriesAgainstLivePrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds pacer and the shell plugin, runs pacer and prometheus (skipped with -short)")
	}
	began := time.Now()
	prom := needTool(t, "prometheus")
	promtool := needTool(t, "promtool")

	pacerHTTP, promAddr := freeAddr(t), freeAddr(t)
	promURL := "http://" + promAddr
	rulesAbs, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}

	// Prometheus first: it starts while pacer builds. scrape_protocols
	// exists from 2.49; older versions ask for OpenMetrics first anyway.
	protocols := ""
	if major, minor := promVersion(t, prom); major > 2 || minor >= 49 {
		protocols = "    scrape_protocols: [OpenMetricsText1.0.0, PrometheusText0.0.4]\n"
	} else {
		t.Logf("prometheus %d.%d has no scrape_protocols; it negotiates OpenMetrics by default (checked below through exemplars)", major, minor)
	}
	promDir := t.TempDir()
	promCfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: %s
%s    static_configs:
      - targets: [%q]
`, rulesAbs, liveScrapeJob, protocols, pacerHTTP)
	promCfgPath := filepath.Join(promDir, "prometheus.yml")
	if err := os.WriteFile(promCfgPath, []byte(promCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promProc := start(t, "prometheus", syscall.SIGKILL, prom,
		"--config.file="+promCfgPath,
		"--storage.tsdb.path="+filepath.Join(promDir, "data"),
		"--web.listen-address="+promAddr,
		"--web.enable-lifecycle",
		"--enable-feature=exemplar-storage",
		"--log.level=warn",
	)

	bin := binaries(t)
	jobs := `
  - id: succeeds
    plugin: shell
    task: exec
    schedule: "@every 1s"
    timeout: 10s
    params: {command: ["true"]}
  - id: fails
    plugin: shell
    task: exec
    schedule: "@every 1s"
    timeout: 10s
    params: {command: ["false"]}
  - id: overlaps
    plugin: shell
    task: exec
    schedule: "@every 1s"
    timeout: 10s
    overlap: forbid
    params: {command: [sleep, "3"]}
`
	pacerCfg := fmt.Sprintf(`node: {name: deploy-test}
cluster:
  name: deploy-test
  data_dir: %s
  lease_ttl: 2s
  etcd: {embedded: {client_listen: %s, peer_listen: %s}}
http: {listen: %s}
plugins: {dir: %s}
observability:
  log: {level: info, format: json}
  tracing: {exporter: none}
jobs:%s`, t.TempDir(), freeAddr(t), freeAddr(t), pacerHTTP, filepath.Join(bin, "plugins"), jobs)
	pacerCfgPath := filepath.Join(t.TempDir(), "pacer.yaml")
	if err := os.WriteFile(pacerCfgPath, []byte(pacerCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	pacerProc := start(t, "pacer", syscall.SIGTERM, filepath.Join(bin, "pacer"), "run", "--config", pacerCfgPath)
	procs := []*proc{promProc, pacerProc}

	waitFor(t, "prometheus to scrape pacer", 45*time.Second, procs, func() []string {
		var data struct {
			ActiveTargets []struct {
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := promAPI(promURL, "/api/v1/targets", nil, &data); err != nil {
			return []string{err.Error()}
		}
		if len(data.ActiveTargets) != 1 || data.ActiveTargets[0].Health != "up" {
			return []string{fmt.Sprintf("targets: %+v", data.ActiveTargets)}
		}
		return nil
	})
	t.Logf("target up after %s", time.Since(began).Round(time.Millisecond))

	dashQs := dashboardQueries(loadDashboards(t))
	alerts := loadAlerts(t)
	queries := append(dashQs, alertQueries(alerts)...)
	for i := range queries {
		e, err := substitute(queries[i].expr, liveJob)
		if err != nil {
			t.Fatalf("%s: %v", queries[i].what, err)
		}
		queries[i].expr = e
	}
	keys := map[string]bool{}
	for _, q := range queries {
		keys[q.key] = true
	}
	for k := range cannotOccur {
		if !keys[k] {
			t.Errorf("cannotOccur lists %q, which is no dashboard panel or alert: remove it", k)
		}
	}

	// Every expression parses; those not in cannotOccur give numbers;
	// every pacer_* selector matches series unless the metric cannot exist
	// here; exemplars with trace IDs are stored; the rules evaluate, and the
	// two alerts the test provokes are pending.
	// Selectors are checked one matcher at a time: a query may combine
	// matchers that no series has together on purpose (the job dashboard's
	// failure ratio of a job that never fails), but each must match alone.
	var selectorSet []string
	for _, q := range queries {
		for _, s := range selectors(q.expr) {
			name, matchers, _ := strings.Cut(strings.TrimSuffix(s, "}"), "{")
			name = strings.TrimSpace(name)
			if _, absent := absentInTest[name]; absent {
				continue
			}
			single := []string{name}
			for _, m := range strings.Split(matchers, ",") {
				if m = strings.TrimSpace(m); m != "" {
					single = append(single, name+"{"+m+"}")
				}
			}
			for _, sel := range single {
				if _, unmatched := unmatchedInTest[sel]; unmatched {
					continue
				}
				if !slices.Contains(selectorSet, sel) {
					selectorSet = append(selectorSet, sel)
				}
			}
		}
	}
	sort.Strings(selectorSet)
	t0 := time.Now()
	var parseErrs []string
	check := func() []string {
		var missing []string
		parseErrs = nil
		for _, q := range queries {
			samples, numbers, err := instant(promURL, q.expr)
			switch {
			case err != nil:
				parseErrs = append(parseErrs, fmt.Sprintf("%s: %v\n    %s", q.what, err, oneLine(q.expr)))
			case cannotOccur[q.key] != "":
			case numbers == 0:
				missing = append(missing, fmt.Sprintf("%s: %d samples, %d not NaN: %s", q.what, samples, numbers, oneLine(q.expr)))
			}
		}
		if len(parseErrs) > 0 {
			return nil // fail at once below
		}
		for _, s := range selectorSet {
			if n, _, err := instant(promURL, "count("+s+")"); err != nil || n == 0 {
				missing = append(missing, fmt.Sprintf("no series match %s (%v)", s, err))
			}
		}
		for _, h := range []string{"pacer_job_run_duration_seconds_bucket", "pacer_job_schedule_lag_seconds_bucket"} {
			var data []struct {
				Exemplars []struct {
					Labels map[string]string `json:"labels"`
				} `json:"exemplars"`
			}
			err := promAPI(promURL, "/api/v1/query_exemplars", url.Values{
				"query": {h}, "start": {strconv.FormatInt(t0.Add(-time.Minute).Unix(), 10)}, "end": {strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10)},
			}, &data)
			ok := false
			for _, s := range data {
				for _, e := range s.Exemplars {
					ok = ok || regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(e.Labels["trace_id"])
				}
			}
			if err != nil || !ok {
				missing = append(missing, fmt.Sprintf("no exemplar with a trace_id on %s (%v)", h, err))
			}
		}
		var rules struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := promAPI(promURL, "/api/v1/rules", nil, &rules); err != nil {
			missing = append(missing, err.Error())
		}
		n := 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					missing = append(missing, fmt.Sprintf("rule %s: health %q %s", r.Name, r.Health, r.LastError))
				}
			}
		}
		if n != len(alerts) {
			missing = append(missing, fmt.Sprintf("prometheus loaded %d rules, the file has %d alerts", n, len(alerts)))
		}
		var active struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		if err := promAPI(promURL, "/api/v1/alerts", nil, &active); err != nil {
			missing = append(missing, err.Error())
		}
		var got []string
		for _, a := range active.Alerts {
			got = append(got, a.Labels["alertname"]+"/"+a.Labels["job_id"])
		}
		for _, want := range []string{"PacerJobFailing/fails", "PacerSlotsSkipped/overlaps"} {
			if !slices.Contains(got, want) {
				missing = append(missing, fmt.Sprintf("alert %s not active (active: %v)", want, got))
			}
		}
		var jobs []string
		if err := promAPI(promURL, "/api/v1/label/job_id/values", url.Values{"match[]": {"pacer_job_runs_total"}}, &jobs); err != nil || len(jobs) != 3 {
			missing = append(missing, fmt.Sprintf("label_values(pacer_job_runs_total, job_id) = %v (%v), want the 3 jobs", jobs, err))
		}
		// The target keeps its own job label: the scrape job.
		var scrapeJobs []string
		if err := promAPI(promURL, "/api/v1/label/job/values", url.Values{"match[]": {"pacer_job_runs_total"}}, &scrapeJobs); err != nil || !slices.Equal(scrapeJobs, []string{liveScrapeJob}) {
			missing = append(missing, fmt.Sprintf("label_values(pacer_job_runs_total, job) = %v (%v), want [%s]", scrapeJobs, err, liveScrapeJob))
		}
		return missing
	}
	waitFor(t, "every query to return data", 45*time.Second, procs, func() []string {
		m := check()
		if len(parseErrs) > 0 {
			t.Fatalf("queries that prometheus rejects:\n  %s", strings.Join(parseErrs, "\n  "))
		}
		return m
	})
	t.Logf("all %d queries (%d dashboard, %d alert) parse; %d return data, %d are in cannotOccur; %d selectors match series; after %s",
		len(queries), len(dashQs), len(alerts), len(queries)-countCannot(queries), countCannot(queries), len(selectorSet), time.Since(began).Round(time.Millisecond))

	for name, why := range absentInTest {
		if n, _, err := instant(promURL, "count("+name+")"); err == nil && n > 0 {
			t.Errorf("%s is in absentInTest (%q) but has series: remove it from the list", name, why)
		}
	}

	// Alerts for conditions the test cannot produce must not fire in it,
	// and alerts that do fire name only the jobs that earn them.
	for _, q := range queries {
		reason := cannotOccur[q.key]
		if reason == "" {
			continue
		}
		n, _, err := instant(promURL, q.expr)
		switch {
		case err != nil:
			t.Errorf("%s: %v", q.what, err)
		case n > 0 && strings.HasPrefix(q.key, "alert "):
			t.Errorf("%s fires in a healthy run (%d series): %s", q.what, n, oneLine(q.expr))
		case n > 0:
			t.Logf("%s (listed in cannotOccur) has data after all", q.what)
		default:
			t.Logf("parses, empty as expected: %s — %s", q.what, reason)
		}
	}
	var failing []string
	var active struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	}
	if err := promAPI(promURL, "/api/v1/alerts", nil, &active); err != nil {
		t.Fatal(err)
	}
	for _, a := range active.Alerts {
		if a.Labels["alertname"] == "PacerJobFailing" {
			failing = append(failing, a.Labels["job_id"])
		}
	}
	if !slices.Equal(failing, []string{"fails"}) {
		t.Errorf("PacerJobFailing active for %v, want only [fails]", failing)
	}

	checkMetricsLint(t, promtool, "http://"+pacerHTTP+"/metrics")
	t.Logf("end-to-end test took %s", time.Since(began).Round(time.Millisecond))
}

func countCannot(qs []query) int {
	n := 0
	for _, q := range qs {
		if cannotOccur[q.key] != "" {
			n++
		}
	}
	return n
}

// checkMetricsLint pipes a scrape of the runner into `promtool check
// metrics`. Complaints about metrics the runner defines (pacer_*, and the
// go_* and process_* collectors it registers) are logged, not failed: they
// are fixed in observability/, not here. Anything else fails.
func checkMetricsLint(t *testing.T, promtool, metricsURL string) {
	t.Helper()
	resp, err := httpc.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: HTTP %d %v", metricsURL, resp.StatusCode, err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	t.Logf("promtool check metrics (scrape of %d bytes): exit %v, output:\n%s", len(body), exitCode(err), out)
	if err == nil && len(bytes.TrimSpace(out)) == 0 {
		return
	}
	var runnerLint, other []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		switch {
		case strings.HasPrefix(name, "pacer_"), strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
			runnerLint = append(runnerLint, line)
		default:
			other = append(other, line)
		}
	}
	if len(runnerLint) > 0 {
		t.Logf("LINT on metrics the runner defines (report, do not fail):\n  %s", strings.Join(runnerLint, "\n  "))
	}
	var exitErr *exec.ExitError
	if len(other) > 0 || (err != nil && !errors.As(err, &exitErr)) || (err != nil && len(runnerLint) == 0) {
		t.Errorf("promtool check metrics reports problems: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
