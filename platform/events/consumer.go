package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/telemetry"
)

const (
	// processedRetention is how long a consumer remembers an event id. It is
	// well beyond the NATS stream's retention (see natsbroker), after which no
	// redelivery of the event can happen.
	processedRetention = 14 * 24 * time.Hour
	pruneEvery         = time.Hour
	pruneBatch         = 10_000
)

// TxHandler handles one event inside the transaction that also records the
// event as processed: its writes commit exactly when the event counts as
// handled, so a redelivered duplicate never applies them twice.
type TxHandler func(ctx context.Context, tx pgx.Tx, e Envelope) error

// Consumer is a service's durable, deduplicating subscription: every instance
// of the service shares it by name, each event is handled by one of them, in
// a database transaction that records its id, and failures are retried with
// jittered exponential backoff until they succeed or are parked in the
// consumer's dead-letter stream.
type Consumer struct {
	name      string
	namespace string
	broker    Broker
	pool      *pgxpool.Pool
	store     *config.Store
	log       *slog.Logger
	tracer    trace.Tracer
	handlers  map[string]route

	handled      *prometheus.CounterVec
	retried      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	duration     *prometheus.HistogramVec
}

// route is what a topic's deliveries go to.
type route struct {
	eventType string
	handle    TxHandler
}

// NewConsumer returns the consumer called name (stable across releases: it
// names the broker's durable subscription and the dead-letter stream) on
// pool's database, which must carry the platform migrations. Retry settings
// are read from store on every failure, so they change live.
func NewConsumer(name string, b Broker, pool *pgxpool.Pool, namespace string, store *config.Store, log *slog.Logger, reg prometheus.Registerer, opts ...Option) *Consumer {
	o := buildOptions(opts)
	labels := []string{"consumer", "type"}
	return &Consumer{
		name:      name,
		namespace: namespace,
		broker:    b,
		pool:      pool,
		store:     store,
		log:       log.With("consumer", name),
		tracer:    o.tracer,
		handlers:  map[string]route{},
		handled: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_events_consumer_handled_total",
			Help: "Events a consumer handled and committed, by consumer and event type.",
		}, labels)),
		retried: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_events_consumer_retried_total",
			Help: "Failed deliveries handed back to the broker for a later attempt, by consumer and event type.",
		}, labels)),
		deadLettered: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_events_consumer_dead_lettered_total",
			Help: "Events parked in the consumer's dead-letter stream, by consumer and event type.",
		}, labels)),
		duplicates: register(reg, log, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_events_consumer_duplicates_total",
			Help: "Deliveries of events the consumer had already processed, skipped, by consumer and event type.",
		}, labels)),
		duration: register(reg, log, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mercato_events_consumer_handler_duration_seconds",
			Help:    "Time to handle one delivery in its transaction, by consumer and event type.",
			Buckets: telemetry.LatencyBuckets,
		}, labels)),
	}
}

// On routes events of eventType from source to h. Register every handler
// before Run.
func (c *Consumer) On(source, eventType string, h TxHandler) {
	c.handlers[Topic(c.namespace, source, eventType)] = route{eventType: eventType, handle: h}
}

// Run consumes until ctx ends and then returns nil; it returns an error when
// the subscription cannot be set up.
func (c *Consumer) Run(ctx context.Context) error {
	if len(c.handlers) == 0 {
		return fmt.Errorf("consumer %s: no handlers registered", c.name)
	}
	topics := make([]string, 0, len(c.handlers))
	for t := range c.handlers {
		topics = append(topics, t)
	}
	slices.Sort(topics)

	pctx, stopPruning := context.WithCancel(ctx)
	pruned := make(chan struct{})
	go func() {
		defer close(pruned)
		c.prune(pctx)
	}()
	defer func() {
		stopPruning()
		<-pruned
	}()

	err := c.broker.Subscribe(ctx, Subscription{Consumer: c.name, Topics: topics}, c.handle)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("consumer %s: %w", c.name, err)
	}
	return nil
}

// handle settles one delivery: handled, skipped as a duplicate, retried or
// parked.
func (c *Consumer) handle(ctx context.Context, d Delivery) {
	msg := d.Message()
	var env Envelope
	if err := json.Unmarshal(msg.Body, &env); err != nil || env.ID == "" || env.Type == "" {
		// No retry can make these bytes decode.
		reason := "undecodable envelope: missing id or type"
		if err != nil {
			reason = "undecodable envelope: " + err.Error()
		}
		c.park(ctx, d, msg, "undecodable", reason)
		return
	}
	r, ok := c.handlers[msg.Topic]
	if !ok {
		c.log.WarnContext(ctx, "event on a topic without a handler; acknowledged", "topic", msg.Topic, "event_id", env.ID)
		c.ack(ctx, d, env)
		return
	}

	ctx = telemetry.Propagator.Extract(ctx, propagation.MapCarrier(msg.Headers))
	ctx, span := c.tracer.Start(ctx, "consume "+env.Type, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", msg.Topic),
			attribute.String("messaging.consumer.group.name", c.name),
			attribute.String("messaging.message.id", env.ID),
			attribute.Int("messaging.delivery.attempt", d.Attempt())))
	defer span.End()

	start := time.Now()
	duplicate, handlerRan, err := c.process(ctx, r.handle, env)
	c.duration.WithLabelValues(c.name, r.eventType).Observe(time.Since(start).Seconds())
	switch {
	case err == nil && duplicate:
		c.duplicates.WithLabelValues(c.name, r.eventType).Inc()
		c.ack(ctx, d, env)
	case err == nil:
		c.handled.WithLabelValues(c.name, r.eventType).Inc()
		c.ack(ctx, d, env)
	default:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		c.fail(ctx, d, msg, env, r.eventType, handlerRan, err)
	}
}

// process runs h in a transaction that first claims the event id for this
// consumer. handlerRan is false when the failure came from the database
// before the handler was called.
func (c *Consumer) process(ctx context.Context, h TxHandler, env Envelope) (duplicate, handlerRan bool, err error) {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return false, false, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// A concurrent delivery of the same event blocks on this row until the
	// first one commits or rolls back, so at most one of them applies it.
	tag, err := tx.Exec(ctx, `
		INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, c.name, env.ID)
	if err != nil {
		return false, false, fmt.Errorf("record event %s as processed: %w", env.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return true, false, nil
	}
	if err := safely(func() error { return h(ctx, tx, env) }); err != nil {
		return false, true, err
	}
	if err := tx.Commit(ctx); err != nil {
		return false, true, fmt.Errorf("commit: %w", err)
	}
	return false, true, nil
}

// safely turns a handler panic into an error, so one bad event is retried
// and parked instead of taking the process down.
func safely(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return fn()
}

// fail decides between another attempt and the dead-letter stream.
func (c *Consumer) fail(ctx context.Context, d Delivery, msg Message, env Envelope, eventType string, handlerRan bool, err error) {
	if ctx.Err() != nil {
		// Shutting down: hand the event back at once for another instance.
		_ = d.Retry(context.WithoutCancel(ctx), 0)
		return
	}
	cfg := c.store.Get().Broker
	attempt := d.Attempt()
	// Only the handler's own failures count towards parking: a database
	// outage must not push healthy events into the dead-letter stream.
	if handlerRan && (IsPermanent(err) || attempt >= cfg.MaxAttempts) {
		c.park(ctx, d, msg, eventType, err.Error())
		return
	}
	delay := retryDelay(attempt, cfg.RetryBackoff, cfg.RetryBackoffMax)
	c.retried.WithLabelValues(c.name, eventType).Inc()
	c.log.WarnContext(ctx, "event handler failed; retrying", "type", env.Type, "event_id", env.ID,
		"attempt", attempt, "max_attempts", cfg.MaxAttempts, "retry_in", delay, "err", err)
	if rerr := d.Retry(ctx, delay); rerr != nil {
		c.log.ErrorContext(ctx, "retry not scheduled; the broker will redeliver after its ack timeout", "event_id", env.ID, "err", rerr)
	}
}

// park moves the delivery to the dead-letter stream and acknowledges it. If
// the broker refuses the dead letter, the delivery is retried instead, since
// acknowledging it would lose the event.
func (c *Consumer) park(ctx context.Context, d Delivery, msg Message, eventType, reason string) {
	if err := c.broker.DeadLetter(ctx, c.name, msg, reason); err != nil {
		c.log.ErrorContext(ctx, "dead letter failed; retrying the event instead", "topic", msg.Topic, "message_id", msg.ID, "err", err)
		cfg := c.store.Get().Broker
		c.retried.WithLabelValues(c.name, eventType).Inc()
		if rerr := d.Retry(ctx, retryDelay(d.Attempt(), cfg.RetryBackoff, cfg.RetryBackoffMax)); rerr != nil {
			c.log.ErrorContext(ctx, "retry not scheduled; the broker will redeliver after its ack timeout", "message_id", msg.ID, "err", rerr)
		}
		return
	}
	c.deadLettered.WithLabelValues(c.name, eventType).Inc()
	c.log.ErrorContext(ctx, "event parked in the dead-letter stream", "topic", msg.Topic, "message_id", msg.ID,
		"attempt", d.Attempt(), "reason", reason, "dead_letter_topic", DeadLetterTopic(c.namespace, c.name))
	if err := d.Ack(ctx); err != nil {
		c.log.WarnContext(ctx, "ack after dead letter failed; the event may be parked twice", "message_id", msg.ID, "err", err)
	}
}

func (c *Consumer) ack(ctx context.Context, d Delivery, env Envelope) {
	if err := d.Ack(ctx); err != nil {
		// The event is committed; a redelivery will be skipped as a duplicate.
		c.log.WarnContext(ctx, "ack failed; a redelivery will be skipped as a duplicate", "event_id", env.ID, "err", err)
	}
}

// prune forgets processed event ids older than processedRetention, hourly.
func (c *Consumer) prune(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		for {
			tag, err := c.pool.Exec(ctx, `
				DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
					SELECT ctid FROM processed_events
					WHERE consumer = $1 AND processed_at < $2
					LIMIT $3))`, c.name, time.Now().Add(-processedRetention), pruneBatch)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					c.log.WarnContext(ctx, "processed events not pruned", "err", err)
				}
				break
			}
			if tag.RowsAffected() < pruneBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// retryDelay is the wait before attempt+1: base doubled per attempt up to
// max, drawn uniformly from ±25% around that so that consumers failing
// together do not retry in lockstep, and never above max.
func retryDelay(attempt int, base, limit time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	if limit < base {
		limit = base
	}
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	jittered := d - d/4 + rand.N(d/2+1)
	return min(jittered, limit)
}
