// Command dashlint checks Grafana dashboards against the rules of Grafana's
// dashboard-linter (github.com/grafana/dashboard-linter), which the Go module
// proxy does not serve. Each rule below is written from the linter's source
// and carries its name; PromQL is parsed with Prometheus' own parser, as the
// linter does. deploy/deploy_test.go runs it on deploy/grafana/dashboards.
//
//	dashlint DASHBOARD.json...
//
// Beyond the linter, the checks it applies to the job and instance
// variables (multi-select, "All", a query on $datasource, refreshed on a
// time-range change) apply to every deployment variable named with -vars
// (default cluster,namespace,job,instance), and every query must filter on
// each of them. The "All" value of cluster and namespace is ".*", not ".+":
// a Prometheus outside Kubernetes has no such labels, and ".+" would match
// nothing there.
//
// It prints every problem as FILE: RULE: message and exits 1 if there is one.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Label      string          `json:"label"`
	Type       string          `json:"type"`
	Datasource *datasource     `json:"datasource"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Refresh    int             `json:"refresh"`
}

// query returns the variable's query: a string, or the "query" field of the
// query editor's object.
func (v variable) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

type target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Datasource  *datasource `json:"datasource"`
	Targets     []target    `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Panels []panel `json:"panels"`
}

type dashboard struct {
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

func (d *dashboard) variable(name string) *variable {
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == name {
			return &d.Templating.List[i]
		}
	}
	return nil
}

func (d *dashboard) panels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

func main() {
	vars := flag.String("vars", "cluster,namespace,job,instance", "deployment variables every query must filter on")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: dashlint [-vars a,b] DASHBOARD.json...")
		os.Exit(2)
	}
	var problems []string
	for _, f := range flag.Args() {
		b, err := os.ReadFile(f)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f, err))
			continue
		}
		for _, p := range lint(&d, strings.Split(*vars, ",")) {
			problems = append(problems, f+": "+p)
		}
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}

// Panel types the linter's panel rules look at.
var queryPanels = []string{"stat", "singlestat", "graph", "table", "timeseries", "gauge"}

func lint(d *dashboard, deploymentVars []string) []string {
	var out []string
	add := func(rule, format string, args ...any) {
		out = append(out, rule+": "+fmt.Sprintf(format, args...))
	}

	// template-datasource-rule
	var dsVars []variable
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			dsVars = append(dsVars, v)
		}
	}
	if len(dsVars) == 0 {
		add("template-datasource-rule", "no templated data source")
	}
	for _, v := range dsVars {
		specific := strings.ToLower(v.query()) + "_datasource"
		okName := v.Name == specific || (len(dsVars) == 1 && v.Name == "datasource")
		okLabel := v.Label == strings.ToUpper(v.query()[:1])+v.query()[1:]+" data source" || (len(dsVars) == 1 && v.Label == "Data source")
		if !okName {
			add("template-datasource-rule", "data source variable %q should be named %q or \"datasource\"", v.Name, specific)
		}
		if !okLabel {
			add("template-datasource-rule", "data source variable %q should be labeled \"Data source\"", v.Name)
		}
	}
	promDS := len(dsVars) > 0 && dsVars[0].query() == "prometheus"

	// template-job-rule, template-instance-rule, and the same for the other
	// deployment variables.
	for _, name := range deploymentVars {
		rule := "template-" + name + "-rule"
		v := d.variable(name)
		if v == nil {
			add(rule, "is missing the %s template", name)
			continue
		}
		if v.Datasource == nil || !slices.Contains([]string{"$datasource", "${datasource}"}, v.Datasource.UID) {
			add(rule, "%s template should use datasource '$datasource', is %+v", name, v.Datasource)
		}
		if v.Type != "query" {
			add(rule, "%s template should be a Prometheus query, is %q", name, v.Type)
		}
		if want := strings.ToUpper(name[:1]) + name[1:]; v.Label != want {
			add(rule, "%s template should be labeled %q, is %q", name, want, v.Label)
		}
		if !v.Multi || !v.IncludeAll {
			add(rule, "%s template should be a multi select with All", name)
		}
		wantAll := ".+"
		if name == "cluster" || name == "namespace" {
			wantAll = ".*" // absent outside Kubernetes: see the package doc
		}
		if v.AllValue != wantAll {
			add(rule, "%s template allValue should be %q, is %q", name, wantAll, v.AllValue)
		}
	}

	// template-label-promql-rule, template-on-time-change-reload
	fnRe := regexp.MustCompile(`^([a-z_]+)\((.+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.query()
		m := fnRe.FindStringSubmatch(strings.TrimSpace(q))
		switch {
		case m == nil:
			add("template-label-promql-rule", "variable %q: invalid query %q", v.Name, q)
		case !slices.Contains([]string{"label_names", "label_values", "metrics", "query_result"}, m[1]):
			add("template-label-promql-rule", "variable %q: invalid function %q", v.Name, m[1])
		default:
			arg := m[2]
			if m[1] == "label_values" {
				if i := strings.LastIndex(arg, ","); i > 0 {
					arg = arg[:i]
				}
			}
			if _, err := parser.ParseExpr(expand(arg, d)); err != nil && m[1] != "label_names" {
				add("template-label-promql-rule", "variable %q: %v", v.Name, err)
			}
		}
		if v.Definition != "" && v.Definition != q {
			add("template-label-promql-rule", "variable %q: definition %q differs from query %q", v.Name, v.Definition, q)
		}
		if v.Refresh != 2 {
			add("template-on-time-change-reload", "variable %q should refresh on time range change (2), is %d", v.Name, v.Refresh)
		}
	}

	for _, p := range d.panels() {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if !slices.Contains(queryPanels, p.Type) {
			continue
		}
		// panel-datasource-rule
		if p.Datasource == nil || !slices.Contains([]string{"$datasource", "${datasource}"}, p.Datasource.UID) {
			add("panel-datasource-rule", "%s does not use the templated datasource: %+v", where, p.Datasource)
		}
		// panel-title-description-rule
		if p.Title == "" || p.Description == "" {
			add("panel-title-description-rule", "%s has no title or no description", where)
		}
		// panel-units-rule
		if !slices.Contains(validUnits, p.FieldConfig.Defaults.Unit) {
			add("panel-units-rule", "%s has no or an invalid unit: %q", where, p.FieldConfig.Defaults.Unit)
		}
		// panel-no-targets-rule
		if len(p.Targets) == 0 {
			add("panel-no-targets-rule", "%s has no targets", where)
		}
		for _, t := range p.Targets {
			where := fmt.Sprintf("%s target %s", where, t.RefID)
			if !promDS {
				continue
			}
			// target-promql-rule
			expr, err := parser.ParseExpr(expand(t.Expr, d))
			if err != nil {
				add("target-promql-rule", "%s: %v: %s", where, err, t.Expr)
				continue
			}
			// target-rate-interval-rule, target-counter-agg-rule
			if err := parser.Walk(inspector(func(n parser.Node, path []parser.Node) error {
				return checkNode(n, path)
			}), expr, nil); err != nil {
				rule, msg, _ := strings.Cut(err.Error(), ": ")
				add(rule, "%s: %s: %s", where, msg, t.Expr)
			}
			// target-job-rule, target-instance-rule (and cluster, namespace)
			for _, name := range deploymentVars {
				for _, sel := range parser.ExtractSelectors(expr) {
					if err := checkForMatcher(sel, name, labels.MatchRegexp, "$"+name); err != nil {
						add("target-"+name+"-rule", "%s: %v: %s", where, err, t.Expr)
						break
					}
				}
			}
		}
	}
	return out
}

// rateInterval stands for $__rate_interval while parsing, as the linter's
// magic duration does; other time variables get durations of their own.
const rateInterval = 211*24*time.Hour + 12*time.Hour + 44*time.Minute + 22*time.Second

var timeVars = map[string]string{
	"__rate_interval": "211d12h44m22s",
	"__interval":      "211d12h44m23s",
	"__range":         "211d12h44m24s",
}

var varRe = regexp.MustCompile(`"?\$(\{[a-zA-Z_]+\}|[a-zA-Z_]+)`)

// expand replaces variables outside quotes (inside quotes they stay, so
// that matchers can be checked for $job) with placeholders that parse.
func expand(expr string, d *dashboard) string {
	return varRe.ReplaceAllStringFunc(expr, func(s string) string {
		if strings.HasPrefix(s, `"`) {
			return s
		}
		name := strings.Trim(s, "${}")
		if v, ok := timeVars[name]; ok {
			return v
		}
		return "bgludgvy_" + name
	})
}

type inspector func(parser.Node, []parser.Node) error

func (f inspector) Visit(n parser.Node, path []parser.Node) (parser.Visitor, error) {
	if err := f(n, path); err != nil {
		return nil, err
	}
	return f, nil
}

func checkNode(n parser.Node, path []parser.Node) error {
	if ms, ok := n.(*parser.MatrixSelector); ok && ms.Range != rateInterval && len(path) > 0 {
		if call, ok := path[len(path)-1].(*parser.Call); ok && (call.Func.Name == "rate" || call.Func.Name == "irate") {
			return errors.New("target-rate-interval-rule: should use $__rate_interval")
		}
	}
	if vs, ok := n.(*parser.VectorSelector); ok && strings.HasSuffix(vs.Name, "_total") {
		msg := fmt.Errorf("target-counter-agg-rule: counter metric %q is not aggregated with rate, irate, or increase", vs.Name)
		if len(path) < 2 {
			return msg
		}
		if _, ok := path[len(path)-1].(*parser.MatrixSelector); !ok {
			return msg
		}
		call, ok := path[len(path)-2].(*parser.Call)
		if !ok || (call.Func.Name != "rate" && call.Func.Name != "irate" && call.Func.Name != "increase") {
			return msg
		}
	}
	return nil
}

func checkForMatcher(sel []*labels.Matcher, name string, ty labels.MatchType, value string) error {
	result := fmt.Errorf("%s selector not found", name)
	for _, m := range sel {
		if m.Name != name {
			continue
		}
		if m.Type == ty && m.Value == value {
			return nil
		}
		result = fmt.Errorf("%s selector is %s%q, not %s%q", name, m.Type, m.Value, ty, value)
	}
	return result
}

// validUnits are Grafana's unit ids, as the linter lists them.
var validUnits = []string{
	"none", "string", "short", "percent", "percentunit", "humidity", "dB", "hex0x", "hex", "sci", "locale", "pixel",
	"bytes", "decbytes", "bits", "decbits", "kbytes", "deckbytes", "mbytes", "decmbytes", "gbytes", "decgbytes",
	"pps", "binBps", "Bps", "binbps", "bps",
	"dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS", "dateTimeAsUSNoDateIfToday", "dateTimeAsLocal",
	"dateTimeAsLocalNoDateIfToday", "dateTimeAsSystem", "dateTimeFromNow",
	"hertz", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms", "dtdhms", "timeticks", "clockms", "clocks",
	"cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
	"bool", "bool_yes_no", "bool_on_off",
}
