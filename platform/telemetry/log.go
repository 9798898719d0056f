// Package telemetry sets up logs, traces and metrics the same way in every
// Mercato process: JSON logs through log/slog that carry the trace id,
// OpenTelemetry traces propagated with W3C trace context, and Prometheus RED
// metrics per route and RPC on an injected registry.
package telemetry

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// ParseLevel maps a configured level name to a slog level; unknown names
// mean info.
func ParseLevel(name string) slog.Level {
	switch strings.ToLower(name) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// NewLogger returns a logger writing JSON (or text) to w at the level held by
// level, which may change while the process runs (nil means info). Every
// record made with a context that carries a span gets trace_id and span_id.
func NewLogger(w io.Writer, format string, level *slog.LevelVar, service string) *slog.Logger {
	opts := &slog.HandlerOptions{}
	if level != nil {
		// A nil *LevelVar in the Leveler interface would panic on first use.
		opts.Level = level
	}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	l := slog.New(traceHandler{h})
	if service != "" {
		l = l.With("service", service)
	}
	return l
}

// traceHandler adds the active span's ids to each record.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
