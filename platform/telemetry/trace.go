package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is the one propagation format Mercato speaks: W3C trace context
// and baggage, across HTTP, RPC and event headers.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Tracing owns a process's tracer provider.
type Tracing struct {
	Provider *sdktrace.TracerProvider
}

// NewTracing builds a tracer provider for service. Spans always get ids, so
// logs can carry trace_id; they are recorded and exported over OTLP/HTTP only
// when endpoint is set, for the sampled share of new traces (a sampled parent
// is always followed).
func NewTracing(ctx context.Context, service, endpoint string, ratio float64) (*Tracing, error) {
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName("mercato-"+service))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if endpoint == "" {
		opts = append(opts, sdktrace.WithSampler(sdktrace.NeverSample()))
	} else {
		// The exporter ignores a URL it cannot parse (and sends to
		// localhost:4318) or one without a scheme (and sends nowhere), so a
		// typo would lose every span without a word.
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("otlp endpoint %q: want an http:// or https:// URL such as http://otel-collector:4318", endpoint)
		}
		// A trailing slash (http://collector:4318/) would make the path
		// //v1/traces, which collectors answer with 404.
		traces := strings.TrimRight(endpoint, "/") + "/v1/traces"
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(traces))
		if err != nil {
			return nil, fmt.Errorf("otlp exporter %s: %w", endpoint, err)
		}
		opts = append(opts,
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
			sdktrace.WithBatcher(exp))
	}
	return &Tracing{Provider: sdktrace.NewTracerProvider(opts...)}, nil
}

// Tracer returns a named tracer from the provider.
func (t *Tracing) Tracer(name string) trace.Tracer { return t.Provider.Tracer(name) }

// Shutdown flushes pending spans.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.Provider.Shutdown(ctx) }
