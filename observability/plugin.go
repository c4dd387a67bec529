package observability

import (
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/attribute"
)

// What a plugin supplies (the attributes of its log records, the JSON lines
// its process writes to stderr, the attributes of its spans) is logged and
// exported beside the runner's own fields, but it is not the runner's: a
// plugin chooses its names and values, and may choose the runner's. So
// none of the exemptions meant for the runner's own fields applies to it
// (the trusted keys such as remote_addr and trace_id, a number under a
// fencing-token name, a generated ID under correlation_id), and a name the
// runner uses on the same line or span is renamed, so that every key
// appears once and the runner's value is the one under it.

// ReservedLogKeys are the attribute keys of the fields the runner writes on
// the log lines that carry what a plugin logs (slog's time, level and msg;
// the node's, the component's and the run's fields; source and plugin; the
// logger and timestamp of a line from a plugin process's stderr), and of
// the fields a reader takes for the runner's everywhere (job_id,
// trigger_id, fencing_token, remote_addr). PluginAttr renames them.
var ReservedLogKeys = []string{
	"time", "level", "msg", "source", "plugin", "logger", "timestamp", "node", "component",
	"job", "job_id", "run_id", "correlation_id", "trigger_id", "trace_id", "span_id",
	"fencing_token", "remote_addr",
}

// PluginKeyPrefix is put in front of a plugin's log attribute key that is
// one of ReservedLogKeys ("plugin.correlation_id") and of a plugin's span
// attribute key in Pacer's namespace ("plugin.pacer.correlation_id").
const PluginKeyPrefix = "plugin."

// pacerSpanPrefix starts the keys of the attributes the runner sets on a
// run's spans (pacer.job.id, pacer.correlation_id, pacer.plugin, …).
const pacerSpanPrefix = "pacer."

// PluginAttr returns a log attribute a plugin supplied, to be logged beside
// the runner's fields: under PluginKeyPrefix+key when its key is one of
// ReservedLogKeys, and sanitized as if its name were nobody's: no key is
// trusted, a fencing-token name is as sensitive as any other name ending
// in "token", and an ID is masked like any other text. Values under the
// other keys are sanitized as the logging handler does (see
// NewSanitizingHandler), which leaves what PluginAttr returns as it is. A
// nil s means the built-in masks only.
func (s *Sanitizer) PluginAttr(a slog.Attr) slog.Attr {
	a.Key = pluginLogKey(a.Key)
	return s.forPlugins().attr(a, 0)
}

// PluginSpanAttr returns an attribute of a span (or span event) a plugin
// finished, to be exported with the runner's spans: under
// PluginKeyPrefix+key when its key is in Pacer's namespace ("pacer.…"),
// which is the runner's alone; a string value sanitized, any value but a
// boolean under a sensitive key (fencing-token names included) redacted. A
// nil s means the built-in masks only.
func (s *Sanitizer) PluginSpanAttr(kv attribute.KeyValue) attribute.KeyValue {
	p := s.forPlugins()
	key := string(kv.Key)
	if strings.HasPrefix(key, pacerSpanPrefix) {
		key = PluginKeyPrefix + key
	}
	switch {
	case kv.Value.Type() == attribute.BOOL:
		return attribute.KeyValue{Key: attribute.Key(key), Value: kv.Value}
	case p.SensitiveKey(key):
		return attribute.String(key, phRedacted)
	}
	switch kv.Value.Type() {
	case attribute.STRING:
		return attribute.String(key, p.String(kv.Value.AsString()))
	case attribute.STRINGSLICE:
		vs := kv.Value.AsStringSlice()
		for i, v := range vs {
			vs[i] = p.String(v)
		}
		return attribute.StringSlice(key, vs)
	}
	return attribute.KeyValue{Key: attribute.Key(key), Value: kv.Value}
}

// pluginLogKey is the key a plugin's log attribute is written under.
func pluginLogKey(key string) string {
	for _, r := range ReservedLogKeys {
		if key == r {
			return PluginKeyPrefix + key
		}
	}
	return key
}

// forPlugins returns the Sanitizer that sanitizes what plugins supply: s's
// masks, patterns and redact keys, without the exemptions for the
// runner's own fields (see the Sanitizer's foreign field).
func (s *Sanitizer) forPlugins() *Sanitizer {
	if s == nil {
		s = defaultSanitizer()
	}
	if s.plugins != nil {
		return s.plugins
	}
	return s.newForPlugins()
}

// newForPlugins builds forPlugins' Sanitizer (NewSanitizer keeps one).
func (s *Sanitizer) newForPlugins() *Sanitizer {
	p := *s
	p.trusted = nil
	p.foreign = true
	p.plugins = nil
	return &p
}
