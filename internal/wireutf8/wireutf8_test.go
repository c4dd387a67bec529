package wireutf8_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pacerun/pacer/internal/wireutf8"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

func TestFixMakesEveryStringMarshalable(t *testing.T) {
	bad := "caf\xe9 \xff\xfe ok"
	data, err := structpb.NewStruct(map[string]any{"k": "x", "list": []any{"y", map[string]any{"z": "w"}}})
	if err != nil {
		t.Fatal(err)
	}
	// structpb.NewStruct refuses invalid UTF-8: put it in by hand.
	data.Fields["k"] = structpb.NewStringValue(bad)
	data.Fields[bad] = structpb.NewStringValue("key was bad")
	data.Fields["list"].GetListValue().Values[0] = structpb.NewStringValue(bad)
	data.Fields["list"].GetListValue().Values[1].GetStructValue().Fields["z"] = structpb.NewStringValue(bad)
	events := []*pluginv1.RunEvent{
		{Event: &pluginv1.RunEvent_Result{Result: &pluginv1.RunResult{Output: bad, Error: bad, ProcessesLeft: bad, Data: data}}},
		{Event: &pluginv1.RunEvent_Log{Log: &pluginv1.LogRecord{Message: bad, Attrs: []*pluginv1.Attr{{Key: bad, Value: structpb.NewStringValue(bad)}}}}},
		{Event: &pluginv1.RunEvent_Progress{Progress: &pluginv1.Progress{Message: bad}}},
		{Event: &pluginv1.RunEvent_Span{Span: &pluginv1.SpanData{Name: bad, StatusMessage: bad, Attributes: []*pluginv1.Attr{{Key: "a", Value: structpb.NewStringValue(bad)}},
			Events: []*pluginv1.SpanEvent{{Name: bad}}}}},
	}
	const want = "caf\uFFFD \uFFFD ok"
	for _, ev := range events {
		if _, err := proto.Marshal(ev); err == nil {
			t.Fatalf("%v marshals before the fix: the test proves nothing", ev)
		}
		if !wireutf8.Fix(ev) {
			t.Fatalf("Fix(%v) changed nothing", ev)
		}
		if _, err := proto.Marshal(ev); err != nil {
			t.Fatalf("after Fix: %v", err)
		}
		if wireutf8.Fix(ev) {
			t.Fatal("a second Fix changed something")
		}
	}
	r := events[0].GetResult()
	if r.Output != want || r.Error != want || r.Data.Fields["k"].GetStringValue() != want ||
		r.Data.Fields[want].GetStringValue() != "key was bad" ||
		r.Data.Fields["list"].GetListValue().Values[0].GetStringValue() != want ||
		r.Data.Fields["list"].GetListValue().Values[1].GetStructValue().Fields["z"].GetStringValue() != want {
		t.Fatalf("result after Fix: %v", r)
	}
	if got := events[1].GetLog().Attrs[0]; got.Key != want || got.Value.GetStringValue() != want {
		t.Fatalf("attr after Fix: %v", got)
	}
	rc := &pluginv1.RunContext{Env: map[string]string{"A": bad}}
	wireutf8.Fix(rc)
	if rc.Env["A"] != want {
		t.Fatalf("env after Fix: %q", rc.Env["A"])
	}
}

func TestStringKeepsValidText(t *testing.T) {
	for _, s := range []string{"", "plain", "héllo ✓", "\uFFFD"} {
		if got := wireutf8.String(s); got != s {
			t.Errorf("String(%q) = %q", s, got)
		}
	}
	if got := wireutf8.String("\xff\xfe\xfd"); got != "\uFFFD" {
		t.Errorf("a run of bad bytes is one U+FFFD: got %q", got)
	}
}

func validLogEvent() *pluginv1.RunEvent {
	return &pluginv1.RunEvent{Event: &pluginv1.RunEvent_Log{Log: &pluginv1.LogRecord{Message: "a typical log line of a command's output, valid UTF-8",
		Attrs: []*pluginv1.Attr{{Key: "stream", Value: structpb.NewStringValue("stdout")}}}}}
}

func BenchmarkFixValidLogEvent(b *testing.B) {
	ev := validLogEvent()
	for b.Loop() {
		wireutf8.Fix(ev)
	}
}

func BenchmarkFixEventValidLogEvent(b *testing.B) {
	ev := validLogEvent()
	for b.Loop() {
		wireutf8.FixEvent(ev)
	}
}

// FixEvent's fast path lets nothing invalid through.
func TestFixEventFixesWhatFixFixes(t *testing.T) {
	bad := "\xff"
	for _, ev := range []*pluginv1.RunEvent{
		{Event: &pluginv1.RunEvent_Log{Log: &pluginv1.LogRecord{Message: bad}}},
		{Event: &pluginv1.RunEvent_Log{Log: &pluginv1.LogRecord{Message: "ok", Attrs: []*pluginv1.Attr{{Key: bad, Value: structpb.NewNumberValue(1)}}}}},
		{Event: &pluginv1.RunEvent_Log{Log: &pluginv1.LogRecord{Message: "ok", Attrs: []*pluginv1.Attr{{Key: "k", Value: structpb.NewStringValue(bad)}}}}},
		{Event: &pluginv1.RunEvent_Log{Log: &pluginv1.LogRecord{Message: "ok", Attrs: []*pluginv1.Attr{{Key: "k",
			Value: structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue(bad)}})}}}}},
		{Event: &pluginv1.RunEvent_Progress{Progress: &pluginv1.Progress{Message: bad}}},
	} {
		if !wireutf8.FixEvent(ev) {
			t.Errorf("FixEvent(%v) changed nothing", ev)
		}
		if _, err := proto.Marshal(ev); err != nil {
			t.Errorf("after FixEvent: %v", err)
		}
	}
	if wireutf8.FixEvent(validLogEvent()) {
		t.Error("FixEvent changed a valid event")
	}
}

func TestValueFixesNestedDataWithoutTouchingTheInput(t *testing.T) {
	in := map[string]any{"ok": "fine", "n": 3.0, "bad\xff": []any{"x", "y\xfe", map[string]any{"z": "\xff"}}}
	out := wireutf8.Map(in)
	if _, err := structpb.NewStruct(in); err == nil {
		t.Fatal("structpb accepts the input: the test proves nothing")
	}
	if _, err := structpb.NewStruct(out); err != nil {
		t.Fatalf("fixed map: %v", err)
	}
	l := out["bad\uFFFD"].([]any)
	if l[0] != "x" || l[1] != "y\uFFFD" || l[2].(map[string]any)["z"] != "\uFFFD" || out["ok"] != "fine" || out["n"] != 3.0 {
		t.Fatalf("fixed map: %#v", out)
	}
	if in["bad\xff"].([]any)[1] != "y\xfe" {
		t.Fatal("the input was modified")
	}
}
