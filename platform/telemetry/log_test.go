package telemetry_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/telemetry"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		name string
		want slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"DEBUG", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"warning", slog.LevelWarn},
		{"Error", slog.LevelError},
		{"", slog.LevelInfo},
		{"verbose", slog.LevelInfo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := telemetry.ParseLevel(tt.name); got != tt.want {
				t.Errorf("ParseLevel(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestLoggerAddsTraceAndRequestIDs(t *testing.T) {
	tp, _ := tracerProvider(t)
	spanCtx, span := tp.Tracer("test").Start(context.Background(), "work")
	defer span.End()
	sc := span.SpanContext()
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		Remote:  true,
	})

	tests := []struct {
		name      string
		ctx       context.Context
		wantTrace string // "" means no trace_id or span_id
		wantSpan  string
		wantReqID string // "" means no request_id
	}{
		{name: "plain context", ctx: context.Background()},
		{name: "active span", ctx: spanCtx, wantTrace: sc.TraceID().String(), wantSpan: sc.SpanID().String()},
		{name: "remote span context", ctx: trace.ContextWithRemoteSpanContext(context.Background(), remote),
			wantTrace: "0102030405060708090a0b0c0d0e0f10", wantSpan: "0102030405060708"},
		{name: "invalid span context", ctx: trace.ContextWithSpanContext(context.Background(), trace.SpanContext{})},
		{name: "request id", ctx: telemetry.WithRequestID(context.Background(), "req-1"), wantReqID: "req-1"},
		{name: "span and request id", ctx: telemetry.WithRequestID(spanCtx, "req-2"),
			wantTrace: sc.TraceID().String(), wantSpan: sc.SpanID().String(), wantReqID: "req-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out platformtest.Buffer
			level := new(slog.LevelVar)
			log := telemetry.NewLogger(&out, "json", level, "catalog")
			log.InfoContext(tt.ctx, "hello", "sku", "SKU-1")

			rec := recordWithMsg(t, out.String(), "hello")
			wantFields(t, rec, map[string]string{
				"level":      "INFO",
				"service":    "catalog",
				"sku":        "SKU-1",
				"trace_id":   tt.wantTrace,
				"span_id":    tt.wantSpan,
				"request_id": tt.wantReqID,
			})
		})
	}
}

// wantFields checks the string fields of a log record; an empty want means
// the field must be absent.
func wantFields(t *testing.T, rec map[string]any, want map[string]string) {
	t.Helper()
	for key, w := range want {
		got, ok := rec[key]
		switch {
		case w == "" && ok:
			t.Errorf("%s = %v, want it absent", key, got)
		case w != "" && got != w:
			t.Errorf("%s = %v, want %q", key, got, w)
		}
	}
}

func TestLoggerKeepsIDsThroughWithAndGroups(t *testing.T) {
	tp, _ := tracerProvider(t)
	ctx, span := tp.Tracer("test").Start(context.Background(), "work")
	defer span.End()
	ctx = telemetry.WithRequestID(ctx, "req-9")

	var out platformtest.Buffer
	log := telemetry.NewLogger(&out, "json", new(slog.LevelVar), "")
	log.With("component", "relay").InfoContext(ctx, "with attrs")
	log.WithGroup("g").InfoContext(ctx, "in group", "k", "v")

	rec := recordWithMsg(t, out.String(), "with attrs")
	wantFields(t, rec, map[string]string{
		"component":  "relay",
		"trace_id":   span.SpanContext().TraceID().String(),
		"request_id": "req-9",
		"service":    "", // no service name given
	})
	g, ok := recordWithMsg(t, out.String(), "in group")["g"].(map[string]any)
	if !ok {
		t.Fatalf("group g missing from the grouped record")
	}
	if g["k"] != "v" || g["trace_id"] != span.SpanContext().TraceID().String() {
		t.Errorf("grouped record = %v, want k and trace_id in group g", g)
	}
}

func TestLoggerLevelFollowsLevelVar(t *testing.T) {
	var out platformtest.Buffer
	level := new(slog.LevelVar) // info
	log := telemetry.NewLogger(&out, "json", level, "catalog")
	ctx := context.Background()

	log.DebugContext(ctx, "debug while info")
	log.InfoContext(ctx, "info while info")
	level.Set(slog.LevelDebug)
	log.DebugContext(ctx, "debug while debug")
	level.Set(slog.LevelError)
	log.WarnContext(ctx, "warn while error")
	log.ErrorContext(ctx, "error while error")

	var got []string
	for _, rec := range records(t, out.String()) {
		got = append(got, rec["msg"].(string))
	}
	want := []string{"info while info", "debug while debug", "error while error"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("logged %q, want %q", got, want)
	}
}

func TestLoggerWithoutLevelVarLogsInfo(t *testing.T) {
	var out platformtest.Buffer
	log := telemetry.NewLogger(&out, "json", nil, "catalog")
	log.Debug("dropped")
	log.Info("kept")
	recs := records(t, out.String())
	if len(recs) != 1 || recs[0]["msg"] != "kept" {
		t.Errorf("records = %v, want only the info record", recs)
	}
}

func TestLoggerTextFormat(t *testing.T) {
	var out platformtest.Buffer
	log := telemetry.NewLogger(&out, "text", new(slog.LevelVar), "catalog")
	log.InfoContext(telemetry.WithRequestID(context.Background(), "req-3"), "hello")
	got := out.String()
	for _, want := range []string{"msg=hello", "service=catalog", "request_id=req-3"} {
		if !strings.Contains(got, want) {
			t.Errorf("text output %q lacks %q", got, want)
		}
	}
	if strings.HasPrefix(strings.TrimSpace(got), "{") {
		t.Errorf("text format wrote JSON: %s", got)
	}
}

func TestRequestID(t *testing.T) {
	if got := telemetry.RequestID(context.Background()); got != "" {
		t.Errorf("RequestID of a bare context = %q, want empty", got)
	}
	ctx := telemetry.WithRequestID(context.Background(), "abc")
	if got := telemetry.RequestID(ctx); got != "abc" {
		t.Errorf("RequestID = %q, want abc", got)
	}
}
