package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/telemetry"
)

// Listener receives every event of its topics in every running instance of
// a service, with no database and no retry: it exists to drop entries from an
// instance's in-process cache when the data behind them changes. An event
// published while the instance is down is not delivered to it; the cache's
// TTL covers that gap.
type Listener struct {
	namespace string
	broker    Broker
	log       *slog.Logger
	tracer    trace.Tracer
	handlers  map[string]listenRoute

	handled *prometheus.CounterVec
}

// listenRoute is what a topic's broadcast deliveries go to.
type listenRoute struct {
	eventType string
	handle    func(ctx context.Context, e Envelope) error
}

// NewListener returns a broadcast listener on namespace's events.
func NewListener(b Broker, namespace string, log *slog.Logger, reg prometheus.Registerer, opts ...Option) *Listener {
	o := buildOptions(opts)
	return &Listener{
		namespace: namespace,
		broker:    b,
		log:       log,
		tracer:    o.tracer,
		handlers:  map[string]listenRoute{},
		handled: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_events_listener_handled_total",
			Help: "Broadcast events handled by this instance, by event type and result (ok, error, undecodable).",
		}, []string{"type", "result"})),
	}
}

// On routes events of eventType from source to h. Register every handler
// before Run.
func (l *Listener) On(source, eventType string, h func(ctx context.Context, e Envelope) error) {
	l.handlers[Topic(l.namespace, source, eventType)] = listenRoute{eventType: eventType, handle: h}
}

// Run listens until ctx ends and then returns nil; it returns an error when
// the subscription cannot be set up.
func (l *Listener) Run(ctx context.Context) error {
	if len(l.handlers) == 0 {
		return fmt.Errorf("listener: no handlers registered")
	}
	topics := make([]string, 0, len(l.handlers))
	for t := range l.handlers {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	err := l.broker.Subscribe(ctx, Subscription{Topics: topics}, l.handle)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("listener: %w", err)
	}
	return nil
}

// handle runs the handler and acknowledges whatever the outcome: a cache
// invalidation that failed is not worth a redelivery to every instance.
func (l *Listener) handle(ctx context.Context, d Delivery) {
	defer func() {
		if err := d.Ack(ctx); err != nil && ctx.Err() == nil {
			l.log.WarnContext(ctx, "broadcast ack failed", "err", err)
		}
	}()
	msg := d.Message()
	r, ok := l.handlers[msg.Topic]
	if !ok {
		return
	}
	var env Envelope
	if err := json.Unmarshal(msg.Body, &env); err != nil {
		l.handled.WithLabelValues(r.eventType, "undecodable").Inc()
		l.log.ErrorContext(ctx, "undecodable broadcast event dropped", "topic", msg.Topic, "message_id", msg.ID, "err", err)
		return
	}
	ctx = telemetry.Propagator.Extract(ctx, propagation.MapCarrier(msg.Headers))
	ctx, span := l.tracer.Start(ctx, "receive "+env.Type, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", msg.Topic),
			attribute.String("messaging.message.id", env.ID)))
	defer span.End()
	if err := safely(func() error { return r.handle(ctx, env) }); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		l.handled.WithLabelValues(r.eventType, "error").Inc()
		l.log.ErrorContext(ctx, "broadcast event handler failed", "type", env.Type, "event_id", env.ID, "err", err)
		return
	}
	l.handled.WithLabelValues(r.eventType, "ok").Inc()
}
