package events

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Option tunes a Consumer or Listener beyond its required dependencies.
type Option func(*options)

type options struct {
	tracer trace.Tracer
}

// WithTracer records a consumer span per handled event. Without it spans are
// not recorded, but the producer's trace id still reaches the handler's
// context (and so its logs).
func WithTracer(t trace.Tracer) Option {
	return func(o *options) { o.tracer = t }
}

func buildOptions(opts []Option) options {
	o := options{tracer: noop.NewTracerProvider().Tracer("")}
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

// register adds c to reg, or returns the collector already registered under
// the same description so that several consumers of one process share their
// metric families instead of failing.
func register[C prometheus.Collector](reg prometheus.Registerer, log *slog.Logger, c C) C {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	log.Warn("events metric not registered", "err", err)
	return c
}
