package telemetry_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// wait bounds every wait for something that should happen; it is generous
// because tests must not depend on the machine's speed.
const wait = 30 * time.Second

// records parses every line of JSON log output, failing the test on a line
// that is not a JSON object.
func records(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		recs = append(recs, rec)
	}
	return recs
}

// recordWithMsg returns the one record with message msg.
func recordWithMsg(t *testing.T, out, msg string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, rec := range records(t, out) {
		if rec["msg"] == msg {
			found = append(found, rec)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one record %q, found %d in:\n%s", msg, len(found), out)
	}
	return found[0]
}

// tracerProvider records every span (all are sampled) until the test ends.
func tracerProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, rec
}
