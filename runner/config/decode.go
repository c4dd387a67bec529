package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/pacerun/pacer/internal/didyoumean"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/schedule"
)

// The decoder walks the yaml.Node tree against the Config struct by yaml tag,
// instead of using yaml/v3's struct decoding, so that every problem can name
// the key path and the line, and so that all problems are collected.

const (
	// Decoding may visit minSteps nodes plus stepsPerByte per byte of the
	// file: far more than a file without aliases has, but a bound on
	// aliases expanding exponentially ("billion laughs").
	minSteps     = 10_000
	stepsPerByte = 10
	// maxDepth bounds recursion, which an anchor used inside itself would
	// otherwise make infinite.
	maxDepth = 100
)

var durationType = reflect.TypeFor[time.Duration]()

type decoder struct {
	file     string
	problems []Problem
	warnings []Problem
	lines    map[string]int  // key path -> line of its value
	keyLines map[string]int  // key path -> line of its key (of the item, in a sequence)
	failed   map[string]bool // key paths whose value could not be decoded
	// Params paths whose plain literal is an integer beyond ±2^53 that
	// yaml/v3 did not read as one (past 64 bits it reads it as a float,
	// in another base as a string), with the literal (validateParams).
	bigInts  map[string]string
	steps    int
	maxSteps int
	aborted  bool // maxSteps or maxDepth hit; the result is incomplete

	// Where the outermost alias being expanded is used, for reporting a
	// runaway expansion at a line the reader can act on.
	aliasLine  int
	aliasPath  string
	aliasLevel int
}

func newDecoder(file string) *decoder {
	return &decoder{
		file:     file,
		lines:    make(map[string]int),
		keyLines: make(map[string]int),
		failed:   make(map[string]bool),
		bigInts:  make(map[string]string),
	}
}

func (d *decoder) add(line int, path, format string, args ...any) {
	d.problems = append(d.problems, Problem{File: d.file, Line: line, Path: path, Msg: message(format, args...)})
}

// message formats a problem's message through the sanitizer: it may quote a
// value of the file, and a value in the wrong place may be a secret
// ("https://user:pw@host" as an address, "token=..." as a duration).
func message(format string, args ...any) string {
	return observability.DefaultSanitizer().String(fmt.Sprintf(format, args...))
}

// fail records a value that could not be decoded. Validation skips that path
// and everything below it, so one mistake gives one message.
func (d *decoder) fail(line int, path, format string, args ...any) {
	d.failed[path] = true
	d.add(line, path, format, args...)
}

func (d *decoder) err() error {
	if len(d.problems) == 0 {
		return nil
	}
	return &Error{Problems: sortProblems(d.problems)}
}

// lineOf returns the line of the value at path or, if the file does not set
// it, of the nearest enclosing value that it does set; 0 if none.
func (d *decoder) lineOf(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		parent, ok := parentPath(path)
		if !ok {
			return 0
		}
		path = parent
	}
}

// isSet reports whether the file gave a value for path.
func (d *decoder) isSet(path string) bool {
	_, ok := d.lines[path]
	return ok
}

// failedAt reports whether path or an enclosing value failed to decode.
func (d *decoder) failedAt(path string) bool {
	for {
		if d.failed[path] {
			return true
		}
		parent, ok := parentPath(path)
		if !ok {
			return false
		}
		path = parent
	}
}

// document parses data, checks that it is a single document whose top level
// is a mapping and returns that mapping; nil if there is nothing to decode.
func (d *decoder) document(data []byte) *yaml.Node {
	d.maxSteps = minSteps + stepsPerByte*len(data)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			d.syntaxError(data, err)
		}
		return nil
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.syntaxError(data, err)
			break
		}
		if len(next.Content) == 0 || isNull(next.Content[0]) {
			continue // a trailing "---" with nothing after it
		}
		d.add(next.Line, "", `found a second YAML document (after "---"); a config file must hold exactly one`)
		break
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		d.add(root.Line, "", "the top level must be a mapping with keys such as node, cluster and jobs, got %s", describe(root))
		return nil
	}
	return root
}

var (
	yamlErrRe       = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)
	unknownAnchorRe = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)
)

// syntaxError reports a YAML parse error. yaml/v3 is vague about where: it
// omits the line on line 1 and is one line early for some errors. The line is
// corrected by checking which prefix of the file first shows the error.
func (d *decoder) syntaxError(data []byte, err error) {
	msg, line := splitYAMLError(err)
	d.add(locateSyntaxError(data, msg, line), "", "invalid YAML: %s", msg)
}

func splitYAMLError(err error) (msg string, line int) {
	msg = err.Error()
	if m := yamlErrRe.FindStringSubmatch(msg); m != nil {
		msg = m[2]
		line, _ = strconv.Atoi(m[1])
	}
	return msg, line
}

func locateSyntaxError(data []byte, msg string, line int) int {
	lines := strings.SplitAfter(string(data), "\n")
	if m := unknownAnchorRe.FindStringSubmatch(msg); m != nil {
		ref := regexp.MustCompile(`\*` + regexp.QuoteMeta(m[1]) + `(?:[\s,\]}]|$)`)
		for i, l := range lines {
			if ref.MatchString(l) {
				return i + 1
			}
		}
		return line
	}
	if strings.Contains(msg, "UTF-8") {
		// yaml/v3 checks the encoding before it reads lines, and says
		// line 1 (attack 32, C1): the line is the first that is not UTF-8.
		for i, l := range lines {
			if !utf8.ValidString(l) {
				return i + 1
			}
		}
		return line
	}
	if strings.Contains(msg, "control characters") {
		for i, l := range lines {
			if strings.IndexFunc(l, func(r rune) bool {
				return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r'
			}) >= 0 {
				return i + 1
			}
		}
		return line
	}
	prefix := func(k int) string { return prefixErr(strings.Join(lines[:k], "")) }
	if line > len(lines) {
		return line
	}
	atLine := prefix(line)
	switch {
	case line >= 1 && atLine == msg:
		return line
	case line+1 <= len(lines) && prefix(line+1) == msg:
		return line + 1
	case atLine == "":
		// The file up to that line parses, so yaml/v3 gave the 0-based line
		// of the construct that is broken.
		return line + 1
	}
	return line
}

// prefixErr returns the message of the first parse error in src, or "".
func prefixErr(src string) string {
	dec := yaml.NewDecoder(strings.NewReader(src))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return ""
		}
		if err != nil {
			msg, _ := splitYAMLError(err)
			return msg
		}
	}
}

// step counts work and depth; false means stop decoding.
func (d *decoder) step(n *yaml.Node, path string, depth int) bool {
	if d.aborted {
		return false
	}
	d.steps++
	if d.steps <= d.maxSteps && depth <= maxDepth {
		return true
	}
	d.aborted = true
	line := n.Line
	if d.aliasLevel > 0 {
		line, path = d.aliasLine, d.aliasPath
	}
	if depth > maxDepth {
		d.fail(line, path, "nested too deeply (is an anchor used inside itself?)")
	} else {
		d.fail(line, path, "expands too many aliases: the expanded document is too large")
	}
	return false
}

// resolve follows aliases to the node they name.
func (d *decoder) resolve(n *yaml.Node, path string, depth int) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		if !d.step(n, path, depth) {
			return nil
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.DocumentNode:
		return "a document"
	case yaml.AliasNode:
		if n.Alias != nil {
			return describe(n.Alias)
		}
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!bool":
		return "a boolean " + v
	case "!!int", "!!float":
		return "a number " + v
	case "!!str":
		return "a string " + strconv.Quote(v)
	case "!!timestamp":
		return "a timestamp " + v
	}
	return "a value tagged " + n.ShortTag()
}

// decode decodes n into v. path is the key path of v. The result is false if
// the value was not stored; the problem has then been reported.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, depth int) bool {
	if !d.step(n, path, depth) {
		return false
	}
	line := n.Line
	if n.Kind == yaml.AliasNode {
		if d.aliasLevel == 0 {
			d.aliasLine, d.aliasPath = line, path
		}
		d.aliasLevel++
		defer func() { d.aliasLevel-- }()
	}
	if n = d.resolve(n, path, depth); n == nil {
		return false
	}
	if path != "" {
		d.lines[path] = line
	}
	if isNull(n) {
		return true // absent: keep the default
	}
	return d.decodeValue(n, line, v, path, depth)
}

func (d *decoder) decodeValue(n *yaml.Node, line int, v reflect.Value, path string, depth int) bool {
	t := v.Type()
	if t == durationType {
		return d.duration(n, line, v, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		return d.structure(n, line, v, path, depth)
	case reflect.Pointer:
		nv := reflect.New(t.Elem())
		if !v.IsNil() {
			nv.Elem().Set(v.Elem())
		}
		if !d.decodeValue(n, line, nv.Elem(), path, depth) {
			return false
		}
		v.Set(nv)
		return true
	case reflect.Slice:
		return d.sequence(n, line, v, path, depth)
	case reflect.Map:
		return d.mapping(n, line, v, path, depth)
	case reflect.Interface:
		x, ok := d.anyValue(n, line, path, depth)
		if ok && x != nil {
			v.Set(reflect.ValueOf(x))
		}
		return ok
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(line, path, "expected a string, got %s", describe(n))
			return false
		}
		v.SetString(n.Value)
		return true
	case reflect.Bool:
		return d.boolean(n, line, v, path)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return d.integer(n, line, v, path)
	case reflect.Float32, reflect.Float64:
		return d.float(n, line, v, path)
	}
	panic("config: no decoder for field type " + t.String())
}

type structInfo struct {
	index map[string]int // yaml key -> field index
	names []string       // yaml keys in declaration order
}

func fieldsOf(t reflect.Type) structInfo {
	info := structInfo{index: make(map[string]int)}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		info.index[name] = i
		info.names = append(info.names, name)
	}
	return info
}

func (d *decoder) structure(n *yaml.Node, line int, v reflect.Value, path string, depth int) bool {
	if n.Kind != yaml.MappingNode {
		d.fail(line, path, "expected a mapping, got %s", describe(n))
		return false
	}
	info := fieldsOf(v.Type())
	for _, e := range d.entries(n, path, depth) {
		key := e.key.Value
		p := joinPath(path, key)
		d.keyLines[p] = e.key.Line
		i, ok := info.index[key]
		if !ok {
			if path == "" && strings.HasPrefix(key, "x-") {
				continue // extension key, e.g. to hold anchors
			}
			d.unknownKey(e.key.Line, p, key, info.names)
			continue
		}
		d.decode(e.val, v.Field(i), p, depth+1)
	}
	if job, ok := v.Addr().Interface().(*Job); ok {
		job.Line = line
		job.keys = keyIndex{path: path, lines: d.keyLines}
	}
	return true
}

func (d *decoder) unknownKey(line int, path, key string, known []string) {
	if s := didyoumean.Closest(key, known); s != "" {
		d.add(line, path, "unknown key %q (did you mean %q?)", key, s)
		return
	}
	d.add(line, path, "unknown key %q (known keys: %s)", key, strings.Join(known, ", "))
}

type entry struct{ key, val *yaml.Node }

// entries returns the key/value pairs of mapping n with merge keys (<<)
// expanded: keys written in n win over merged ones, and earlier merged
// mappings win over later ones. Duplicate keys written in n are reported.
func (d *decoder) entries(n *yaml.Node, path string, depth int) []entry {
	seen := make(map[string]*yaml.Node)
	var out []entry
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k = d.resolve(k, path, depth); k == nil {
			return out
		}
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, path, "keys must be strings, got %s", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p := joinPath(path, k.Value)
			d.add(k.Line, p, "duplicate key %q (first defined at line %d)", k.Value, first.Line)
			continue
		}
		seen[k.Value] = k
		out = append(out, entry{k, v})
	}
	for _, m := range merges {
		for _, src := range d.mergeSources(m, path, depth) {
			for _, e := range d.entries(src, path, depth+1) {
				if _, ok := seen[e.key.Value]; ok {
					continue
				}
				seen[e.key.Value] = e.key
				out = append(out, e)
			}
		}
	}
	return out
}

// mergeSources returns the mappings named by the value of a merge key: a
// mapping, or a sequence of mappings.
func (d *decoder) mergeSources(m *yaml.Node, path string, depth int) []*yaml.Node {
	if !d.step(m, path, depth+1) {
		return nil
	}
	line := m.Line
	if m = d.resolve(m, path, depth+1); m == nil {
		return nil
	}
	switch m.Kind {
	case yaml.MappingNode:
		return []*yaml.Node{m}
	case yaml.SequenceNode:
		var out []*yaml.Node
		for _, item := range m.Content {
			r := d.resolve(item, path, depth+1)
			if r == nil {
				return out
			}
			if r.Kind != yaml.MappingNode {
				d.add(item.Line, path, "merge key (<<) must name a mapping or a sequence of mappings, got %s in the sequence", describe(r))
				continue
			}
			out = append(out, r)
		}
		return out
	}
	d.add(line, path, "merge key (<<) must name a mapping or a sequence of mappings, got %s", describe(m))
	return nil
}

func (d *decoder) sequence(n *yaml.Node, line int, v reflect.Value, path string, depth int) bool {
	if n.Kind != yaml.SequenceNode {
		d.fail(line, path, "expected a sequence, got %s", describe(n))
		return false
	}
	t := v.Type()
	out := reflect.MakeSlice(t, 0, len(n.Content))
	for i, item := range n.Content {
		p := path + "[" + strconv.Itoa(i) + "]"
		d.keyLines[p] = item.Line
		ev := reflect.New(t.Elem()).Elem()
		if t.Elem() == reflect.TypeFor[Job]() {
			ev.Set(reflect.ValueOf(defaultJob()))
		}
		if isNull(item) {
			d.lines[p] = item.Line
			d.fail(item.Line, p, "empty entry in a sequence")
		} else {
			d.decode(item, ev, p, depth+1)
		}
		// Keep failed entries so that later indexes match the file.
		out = reflect.Append(out, ev)
	}
	v.Set(out)
	return true
}

func (d *decoder) mapping(n *yaml.Node, line int, v reflect.Value, path string, depth int) bool {
	if n.Kind != yaml.MappingNode {
		d.fail(line, path, "expected a mapping, got %s", describe(n))
		return false
	}
	t := v.Type()
	out := reflect.MakeMap(t)
	for _, e := range d.entries(n, path, depth) {
		ev := reflect.New(t.Elem()).Elem()
		d.keyLines[joinPath(path, e.key.Value)] = e.key.Line
		if d.decode(e.val, ev, joinPath(path, e.key.Value), depth+1) {
			out.SetMapIndex(reflect.ValueOf(e.key.Value).Convert(t.Key()), ev)
		}
	}
	v.Set(out)
	return true
}

// anyValue decodes free-form YAML (job params) into map[string]any, []any and
// scalars, with the same duplicate-key and merge handling as the rest of the
// file. Mapping keys are always strings, so the result converts to JSON.
func (d *decoder) anyValue(n *yaml.Node, line int, path string, depth int) (any, bool) {
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any)
		for _, e := range d.entries(n, path, depth) {
			var x any
			d.keyLines[joinPath(path, e.key.Value)] = e.key.Line
			if d.decode(e.val, reflect.ValueOf(&x).Elem(), joinPath(path, e.key.Value), depth+1) {
				m[e.key.Value] = x
			}
		}
		return m, true
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, item := range n.Content {
			d.keyLines[path+"["+strconv.Itoa(i)+"]"] = item.Line
			d.decode(item, reflect.ValueOf(&s[i]).Elem(), path+"["+strconv.Itoa(i)+"]", depth+1)
		}
		return s, true
	}
	var x any
	if err := n.Decode(&x); err != nil {
		msg := cleanDecodeError(err)
		if observability.DefaultSanitizer().SensitiveKey(lastKey(path)) {
			// yaml/v3 quotes the value ("cannot decode !!str `x` as a
			// !!int"), which the sanitizer cannot tell is the key's
			// (attack 32, S8).
			msg = backquotedRe.ReplaceAllString(msg, "`[redacted]`")
		}
		d.fail(line, path, "%s", msg)
		return nil, false
	}
	if n.Style == 0 && n.ShortTag() != "!!int" && integerBeyondDouble(n.Value) {
		lit := n.Value
		if len(lit) > 40 {
			lit = lit[:37] + "..."
		}
		d.bigInts[path] = lit
	}
	return x, true
}

// integerLitRe matches what YAML reads as an integer when it fits in 64
// bits: decimal, 0x, 0o and 0b (YAML 1.1), "_" separators removed.
var integerLitRe = regexp.MustCompile(`^[-+]?(?:[0-9]+|0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+)$`)

// integerBeyondDouble reports whether lit, a plain scalar, is an integer
// beyond ±2^53, which params (a double per number) cannot hold exactly.
// Only its size is needed, so it is not read as a big integer (a
// megabyte of digits would take seconds).
func integerBeyondDouble(lit string) bool {
	s := strings.ReplaceAll(lit, "_", "")
	if !integerLitRe.MatchString(s) {
		return false
	}
	s = strings.TrimLeft(s, "+-")
	base := 10
	if len(s) > 2 && s[0] == '0' {
		switch s[1] {
		case 'x', 'X':
			base = 16
		case 'o', 'O':
			base = 8
		case 'b', 'B':
			base = 2
		}
		if base != 10 {
			s = s[2:]
		}
	}
	u, err := strconv.ParseUint(s, base, 64)
	return errors.Is(err, strconv.ErrRange) || err == nil && u > 1<<53
}

var (
	typeErrLineRe = regexp.MustCompile(`^line \d+: `)
	backquotedRe  = regexp.MustCompile("`[^`]*`")
)

// lastKey is the last key of path as joinPath writes it ("" when path
// ends with an index).
func lastKey(path string) string {
	if strings.HasSuffix(path, `"]`) {
		if i := strings.LastIndex(path, `["`); i >= 0 {
			if k, err := strconv.Unquote(path[i+1 : len(path)-1]); err == nil {
				return k
			}
		}
	}
	if strings.HasSuffix(path, "]") {
		return ""
	}
	return path[strings.LastIndexAny(path, ".]")+1:]
}

func cleanDecodeError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return typeErrLineRe.ReplaceAllString(te.Errors[0], "")
	}
	msg, _ := splitYAMLError(err)
	return msg
}

// yaml11Bools are the YAML 1.1 spellings that yaml/v3 still accepts for
// bool fields when they are written unquoted.
var yaml11Bools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true, "on": true, "On": true, "ON": true,
	"n": false, "N": false, "no": false, "No": false, "NO": false, "off": false, "Off": false, "OFF": false,
}

func (d *decoder) boolean(n *yaml.Node, line int, v reflect.Value, path string) bool {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!bool":
			var b bool
			if n.Decode(&b) == nil {
				v.SetBool(b)
				return true
			}
		case "!!str":
			if b, ok := yaml11Bools[n.Value]; ok && n.Style == 0 {
				v.SetBool(b)
				return true
			}
		}
	}
	d.fail(line, path, "expected true or false, got %s", describe(n))
	return false
}

func (d *decoder) integer(n *yaml.Node, line int, v reflect.Value, path string) bool {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		var i int64
		if n.Decode(&i) != nil || v.OverflowInt(i) {
			d.fail(line, path, "integer %s is out of range", n.Value)
			return false
		}
		v.SetInt(i)
		return true
	}
	d.fail(line, path, "expected an integer, got %s", describe(n))
	return false
}

func (d *decoder) float(n *yaml.Node, line int, v reflect.Value, path string) bool {
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		var f float64
		if n.Decode(&f) != nil || v.OverflowFloat(f) {
			d.fail(line, path, "number %s is out of range", n.Value)
			return false
		}
		v.SetFloat(f)
		return true
	}
	d.fail(line, path, "expected a number, got %s", describe(n))
	return false
}

var bareNumberRe = regexp.MustCompile(`^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?$`)

func (d *decoder) duration(n *yaml.Node, line int, v reflect.Value, path string) bool {
	if n.Kind != yaml.ScalarNode {
		d.fail(line, path, `expected a duration such as "10s", got %s`, describe(n))
		return false
	}
	s := strings.TrimSpace(n.Value)
	tag := n.ShortTag()
	if tag != "!!str" && tag != "!!int" && tag != "!!float" {
		d.fail(line, path, `expected a duration such as "10s", got %s`, describe(n))
		return false
	}
	if tag != "!!str" || bareNumberRe.MatchString(s) {
		// A bare number: only zero is unambiguous.
		if f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64); err == nil && f == 0 {
			v.SetInt(0)
			return true
		}
		d.fail(line, path, `invalid duration %q: a bare number has no unit; write e.g. "%ss" (units: ns, us, ms, s, m, h)`, s, s)
		return false
	}
	dur, err := schedule.ParseDuration(s)
	switch {
	case errors.Is(err, schedule.ErrDurationTooLarge):
		d.fail(line, path, "duration %q is too large: at most %s (about 292 years)", s, schedule.MaxDuration.Truncate(time.Second))
		return false
	case err != nil:
		d.fail(line, path, `invalid duration %q: want a number with a unit, such as "10s", "1m30s" or "2h"`, s)
		return false
	}
	v.SetInt(int64(dur))
	return true
}

// joinPath appends key to a key path: jobs[0] + retries = jobs[0].retries.
// Keys that are not plain words are quoted: plugins.checksums["my.plugin"].
func joinPath(path, key string) string {
	plain := key != ""
	for _, r := range key {
		if !(r == '_' || r == '-' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			plain = false
			break
		}
	}
	if !plain {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// parentPath strips the last element of a key path; ok is false for the root.
func parentPath(p string) (parent string, ok bool) {
	if p == "" {
		return "", false
	}
	if strings.HasSuffix(p, `"]`) {
		if i := strings.LastIndex(p, `["`); i >= 0 {
			return p[:i], true
		}
	}
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i], true
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i], true
	}
	return "", true
}
