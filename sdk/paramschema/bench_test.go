package paramschema

import "testing"

// A realistic params check, as the SDK runs it before every task and the
// runner runs it for every job at config load.
func BenchmarkValidate(b *testing.B) {
	s, err := Parse(`{"type":"object","additionalProperties":false,"required":["command"],"properties":{
		"command":{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]},
		"shell":{"type":"boolean"},
		"dir":{"type":"string"},
		"env":{"type":"object","additionalProperties":{"type":"string"}},
		"inherit_env":{"type":"array","items":{"type":"string"}},
		"max_output_bytes":{"type":"integer","minimum":1}}}`)
	if err != nil {
		b.Fatal(err)
	}
	params := map[string]any{
		"command":          []any{"pg_dump", "--format=custom", "app"},
		"env":              map[string]any{"PGHOST": "db.internal", "PGPORT": "5432"},
		"inherit_env":      []any{"PATH", "HOME"},
		"max_output_bytes": 65536,
	}
	b.ReportAllocs()
	for b.Loop() {
		if errs := s.Validate(params); errs != nil {
			b.Fatal(errs)
		}
	}
}
