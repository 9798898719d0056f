package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/eventstest"
)

func TestConsumerAppliesARedeliveredEventOnce(t *testing.T) {
	w := newWorld(t)
	reg := prometheus.NewRegistry()
	c := events.NewConsumer("inventory", w.broker, w.pool, w.ns, storeOf(w.cfg), nilLogger(), reg)
	calls := counter{}
	c.On("order", "order.placed", func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
		calls.inc(e.ID)
		return writeEffect(ctx, tx, e)
	})
	background(t, "consumer", c.Run)

	// The same event twice under different transport ids, as after a relay
	// crash outside the broker's duplicate window.
	e := envelope(t, 1)
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	topic := events.Topic(w.ns, e.Source, e.Type)
	ctx := context.Background()
	if err := w.broker.Publish(ctx,
		events.Message{Topic: topic, ID: e.ID + "-a", Body: body},
		events.Message{Topic: topic, ID: e.ID + "-b", Body: body}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	labels := []string{"consumer", "inventory", "type", "order.placed"}
	eventstest.Eventually(t, func() bool {
		return metric(t, reg, "mercato_events_consumer_handled_total", labels...)+
			metric(t, reg, "mercato_events_consumer_duplicates_total", labels...) >= 2
	}, "both deliveries settled")
	if got := metric(t, reg, "mercato_events_consumer_duplicates_total", labels...); got != 1 {
		t.Errorf("duplicates metric %v, want 1", got)
	}
	if n := w.effects(t, e.ID); n != 1 {
		t.Errorf("side effect applied %d times, want once", n)
	}
	if n := calls.of(e.ID); n != 1 {
		t.Errorf("handler called %d times, want once", n)
	}
}

func TestConsumerRetriesWithBackoffUntilTheHandlerSucceeds(t *testing.T) {
	w := newWorld(t)
	cfg := w.cfg
	cfg.Broker.MaxAttempts = 5
	cfg.Broker.RetryBackoff = 200 * time.Millisecond
	cfg.Broker.RetryBackoffMax = 2 * time.Second
	reg := prometheus.NewRegistry()
	c := events.NewConsumer("inventory", w.broker, w.pool, w.ns, storeOf(cfg), nilLogger(), reg)
	var mu sync.Mutex
	var attempts []time.Time
	c.On("order", "order.placed", func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
		if err := writeEffect(ctx, tx, e); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
		if len(attempts) <= 2 {
			return errors.New("stock service unavailable")
		}
		return nil
	})
	background(t, "consumer", c.Run)
	runRelay(t, w, w.broker, w.cfg.Broker, prometheus.NewRegistry())

	e := envelope(t, 1)
	w.commit(t, context.Background(), e)
	labels := []string{"consumer", "inventory", "type", "order.placed"}
	eventstest.Eventually(t, func() bool { return metric(t, reg, "mercato_events_consumer_handled_total", labels...) == 1 }, "the event handled")

	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 3 {
		t.Fatalf("handler ran %d times, want 3", len(attempts))
	}
	// Each wait is the doubled backoff less at most a quarter of jitter.
	for i, min := range []time.Duration{150 * time.Millisecond, 300 * time.Millisecond} {
		if waited := attempts[i+1].Sub(attempts[i]); waited < min {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+2, waited, min)
		}
	}
	if n := w.effects(t, e.ID); n != 1 {
		t.Errorf("side effects of %d attempts kept, want only the successful one", n)
	}
	if got := metric(t, reg, "mercato_events_consumer_retried_total", labels...); got != 2 {
		t.Errorf("retried metric %v, want 2", got)
	}
}

// deadLetters subscribes to the consumer's dead-letter topic and waits until
// the subscription is in place.
func deadLetters(t *testing.T, w world, consumer string) *eventstest.Subscriber {
	t.Helper()
	dlq := events.DeadLetterTopic(w.ns, consumer)
	sub := eventstest.Subscribe(t, w.broker, events.Subscription{Consumer: "inspector", Topics: []string{dlq}}, nil)
	eventstest.WaitReady(t, w.broker, dlq, sub)
	return sub
}

func TestConsumerParksEvents(t *testing.T) {
	cases := []struct {
		name      string
		handler   func() error
		wantCalls int
		reason    string
	}{
		{"after max attempts", func() error { return errors.New("boom") }, 3, "boom"},
		{"at once when permanent", func() error { return events.Permanent(errors.New("unknown sku")) }, 1, "unknown sku"},
		{"when the handler panics", func() error { panic("nil map") }, 3, "handler panicked: nil map"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			cfg := w.cfg
			cfg.Broker.MaxAttempts = 3
			reg := prometheus.NewRegistry()
			parked := deadLetters(t, w, "inventory")
			consumer := events.NewConsumer("inventory", w.broker, w.pool, w.ns, storeOf(cfg), nilLogger(), reg)
			calls := counter{}
			consumer.On("order", "order.placed", func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
				calls.inc(e.ID)
				if e.Subject == "ord_ok" {
					return writeEffect(ctx, tx, e)
				}
				if err := writeEffect(ctx, tx, e); err != nil {
					return err
				}
				return c.handler()
			})
			background(t, "consumer", consumer.Run)
			runRelay(t, w, w.broker, w.cfg.Broker, prometheus.NewRegistry())

			bad := envelope(t, 1)
			w.commit(t, context.Background(), bad)
			got := parked.WaitFor(t, bad.ID)
			if r := got.Msg.Headers[events.HeaderDeadLetterReason]; !strings.Contains(r, c.reason) {
				t.Errorf("dead-letter reason %q, want it to mention %q", r, c.reason)
			}
			var env events.Envelope
			if err := json.Unmarshal(got.Msg.Body, &env); err != nil || env.ID != bad.ID {
				t.Errorf("dead letter body %s is not the event (err %v)", got.Msg.Body, err)
			}

			// A later event goes through, and the parked one never comes back.
			ok := envelope(t, 2)
			ok.Subject = "ord_ok"
			w.commit(t, context.Background(), ok)
			eventstest.Eventually(t, func() bool { return w.effects(t, ok.ID) == 1 }, "the next event handled")
			if n := calls.of(bad.ID); n != c.wantCalls {
				t.Errorf("handler ran %d times for the parked event, want %d", n, c.wantCalls)
			}
			if n := w.effects(t, bad.ID); n != 0 {
				t.Errorf("failed attempts left %d side effects, want none", n)
			}
			if got := metric(t, reg, "mercato_events_consumer_dead_lettered_total", "type", "order.placed"); got != 1 {
				t.Errorf("dead-lettered metric %v, want 1", got)
			}
		})
	}
}

// TestConsumerRetriesWhenTheDeadLetterIsRefused checks that an event is
// never acknowledged without being parked.
func TestConsumerRetriesWhenTheDeadLetterIsRefused(t *testing.T) {
	w := newWorld(t)
	parked := deadLetters(t, w, "inventory")
	faulty := &faultyBroker{Broker: w.broker, failDeadLetters: 2}
	c := events.NewConsumer("inventory", faulty, w.pool, w.ns, storeOf(w.cfg), nilLogger(), prometheus.NewRegistry())
	calls := counter{}
	c.On("order", "order.placed", func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
		calls.inc(e.ID)
		return events.Permanent(errors.New("unknown sku"))
	})
	background(t, "consumer", c.Run)
	runRelay(t, w, w.broker, w.cfg.Broker, prometheus.NewRegistry())

	e := envelope(t, 1)
	w.commit(t, context.Background(), e)
	parked.WaitFor(t, e.ID)
	if n := calls.of(e.ID); n != 3 {
		t.Errorf("handler ran %d times, want 3 (two refused dead letters, then parked)", n)
	}
}

func TestConsumerParksUndecodableMessagesAtOnce(t *testing.T) {
	w := newWorld(t)
	parked := deadLetters(t, w, "inventory")
	c := events.NewConsumer("inventory", w.broker, w.pool, w.ns, storeOf(w.cfg), nilLogger(), prometheus.NewRegistry())
	calls := counter{}
	c.On("order", "order.placed", func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
		calls.inc(e.ID)
		return nil
	})
	background(t, "consumer", c.Run)

	garbage := events.Message{Topic: events.Topic(w.ns, "order", "order.placed"), ID: "evt_garbage", Body: []byte("not json")}
	if err := w.broker.Publish(context.Background(), garbage); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got := parked.WaitFor(t, garbage.ID)
	if r := got.Msg.Headers[events.HeaderDeadLetterReason]; !strings.HasPrefix(r, "undecodable envelope") {
		t.Errorf("reason %q, want undecodable envelope", r)
	}
	if got.Msg.Headers[events.HeaderOriginalTopic] != garbage.Topic {
		t.Errorf("original topic %q, want %q", got.Msg.Headers[events.HeaderOriginalTopic], garbage.Topic)
	}
	if n := calls.total(); n != 0 {
		t.Errorf("handler called %d times for an undecodable message", n)
	}
}

func TestTraceContextFlowsFromAddToTheHandler(t *testing.T) {
	w := newWorld(t)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	c := events.NewConsumer("inventory", w.broker, w.pool, w.ns, storeOf(w.cfg), nilLogger(), prometheus.NewRegistry(),
		events.WithTracer(tp.Tracer("events")))
	handled := make(chan trace.SpanContext, 1)
	c.On("order", "order.placed", func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
		handled <- trace.SpanContextFromContext(ctx)
		return nil
	})
	background(t, "consumer", c.Run)
	runRelay(t, w, w.broker, w.cfg.Broker, prometheus.NewRegistry())

	ctx, producer := tp.Tracer("test").Start(context.Background(), "place order")
	w.commit(t, ctx, envelope(t, 1))
	producer.End()

	var got trace.SpanContext
	select {
	case got = <-handled:
	case <-time.After(eventstest.Wait):
		t.Fatal("event not handled")
	}
	want := producer.SpanContext()
	if got.TraceID() != want.TraceID() {
		t.Errorf("handler trace %s, want the producer's %s", got.TraceID(), want.TraceID())
	}
	if got.SpanID() == want.SpanID() {
		t.Error("handler runs in the producer's span, want a consumer span of its own")
	}
	eventstest.Eventually(t, func() bool { return len(spans.Ended()) >= 2 }, "the consumer span to end")
	for _, s := range spans.Ended() {
		if s.Name() != "consume order.placed" {
			continue
		}
		if s.Parent().SpanID() != want.SpanID() || s.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("consumer span parent %s kind %v, want parent %s kind consumer", s.Parent().SpanID(), s.SpanKind(), want.SpanID())
		}
		return
	}
	t.Error("no consume span recorded")
}

func TestConsumerWithoutHandlersRefusesToRun(t *testing.T) {
	w := newWorld(t)
	c := events.NewConsumer("inventory", w.broker, w.pool, w.ns, storeOf(w.cfg), nilLogger(), prometheus.NewRegistry())
	ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
	defer cancel()
	if err := c.Run(ctx); err == nil {
		t.Fatal("Run without handlers returned nil")
	}
}
