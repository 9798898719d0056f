package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/eventstest"
	"github.com/mercato/mercato/platform/pg"
)

func TestMigrationsApplyTwice(t *testing.T) {
	w := newWorld(t) // applied once
	ctx := context.Background()
	if err := pg.Migrate(ctx, w.pool, events.Migrations, events.MigrationsTable, nilLogger()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	var versions int
	if err := w.pool.QueryRow(ctx, "SELECT count(*) FROM "+events.MigrationsTable+" WHERE version_id > 0").Scan(&versions); err != nil || versions == 0 {
		t.Errorf("no versions recorded in %s (err %v)", events.MigrationsTable, err)
	}
	for _, table := range []string{"outbox", "processed_events"} {
		var ok bool
		if err := w.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing after migration (err %v)", table, err)
		}
	}
}

func TestAddRefusesIncompleteEnvelopes(t *testing.T) {
	w := newWorld(t)
	good := envelope(t, 1)
	cases := []struct {
		name   string
		mutate func(*events.Envelope)
	}{
		{"no id", func(e *events.Envelope) { e.ID = "" }},
		{"no type", func(e *events.Envelope) { e.Type = "" }},
		{"no source", func(e *events.Envelope) { e.Source = "" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := good
			c.mutate(&e)
			ctx := context.Background()
			err := pg.InTx(ctx, w.pool, func(tx pgx.Tx) error { return events.Add(ctx, tx, w.ns, e) })
			if err == nil {
				t.Fatal("Add accepted an incomplete envelope")
			}
		})
	}
	if n := w.outboxLen(t); n != 0 {
		t.Errorf("outbox holds %d rows after refused adds", n)
	}
}

// TestCommittedEventsArePublished also proves that the notification wakes
// the relay: its poll interval is far longer than the test waits.
func TestCommittedEventsArePublished(t *testing.T) {
	w := newWorld(t)
	topic := events.Topic(w.ns, "order", "order.placed")
	sub := eventstest.Subscribe(t, w.broker, events.Subscription{Consumer: "reader", Topics: []string{topic}}, nil)
	reg := prometheus.NewRegistry()
	cfg := w.cfg.Broker
	cfg.RelayInterval = time.Hour
	runRelay(t, w, w.broker, cfg, reg)

	ctx := context.Background()
	first, second := envelope(t, 1), envelope(t, 2)
	start := time.Now()
	w.commit(t, ctx, first, second)
	got := sub.WaitFor(t, first.ID)
	t.Logf("commit to delivery: %v", time.Since(start))
	sub.WaitFor(t, second.ID)

	if got.Msg.Topic != topic {
		t.Errorf("topic %q, want %q", got.Msg.Topic, topic)
	}
	var env events.Envelope
	if err := json.Unmarshal(got.Msg.Body, &env); err != nil {
		t.Fatalf("body is not an envelope: %v", err)
	}
	if env.ID != first.ID || env.Type != first.Type || env.Source != first.Source || env.Subject != first.Subject ||
		!env.Time.Equal(first.Time) || string(env.Data) != string(first.Data) {
		t.Errorf("published envelope %+v, want %+v", env, first)
	}
	order := sub.Received()
	if order[0].Msg.ID != first.ID || order[1].Msg.ID != second.ID {
		t.Errorf("published out of order: %s then %s", order[0].Msg.ID, order[1].Msg.ID)
	}
	eventstest.Eventually(t, func() bool { return w.outboxLen(t) == 0 }, "the outbox to empty")
	if got := metric(t, reg, "mercato_events_relay_published_total"); got != 2 {
		t.Errorf("published metric %v, want 2", got)
	}
}

func TestRolledBackEventsAreNotPublished(t *testing.T) {
	w := newWorld(t)
	topic := events.Topic(w.ns, "order", "order.placed")
	sub := eventstest.Subscribe(t, w.broker, events.Subscription{Consumer: "reader", Topics: []string{topic}}, nil)
	runRelay(t, w, w.broker, w.cfg.Broker, prometheus.NewRegistry())

	ctx := context.Background()
	rolledBack := envelope(t, 1)
	errAbort := errors.New("abort")
	err := pg.InTx(ctx, w.pool, func(tx pgx.Tx) error {
		if err := events.Add(ctx, tx, w.ns, rolledBack); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("transaction: %v", err)
	}
	// The relay publishes in outbox order: once the marker committed after
	// the rollback arrives, the rolled-back event would have arrived first.
	marker := envelope(t, 2)
	w.commit(t, ctx, marker)
	sub.WaitFor(t, marker.ID)
	if n := len(sub.ReceivedID(rolledBack.ID)); n != 0 {
		t.Errorf("rolled-back event published %d times", n)
	}
}

func TestRelayResumesAfterBrokerOutage(t *testing.T) {
	w := newWorld(t)
	faulty := &faultyBroker{Broker: w.broker, failBefore: 3, failAfter: 1}
	reg := prometheus.NewRegistry()
	runRelay(t, w, faulty, w.cfg.Broker, reg)

	c := events.NewConsumer("inventory", w.broker, w.pool, w.ns, storeOf(w.cfg), nilLogger(), prometheus.NewRegistry())
	handled := counter{}
	c.On("order", "order.placed", func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
		handled.inc(e.ID)
		return writeEffect(ctx, tx, e)
	})
	background(t, "consumer", c.Run)

	ctx := context.Background()
	var envs []events.Envelope
	for i := range 20 {
		e := envelope(t, i)
		envs = append(envs, e)
		w.commit(t, ctx, e)
	}
	eventstest.Eventually(t, func() bool { return handled.total() >= len(envs) }, "%d events handled", len(envs))
	eventstest.Eventually(t, func() bool { return w.outboxLen(t) == 0 }, "the outbox to empty")
	for _, e := range envs {
		if n := w.effects(t, e.ID); n != 1 {
			t.Errorf("event %s applied %d times, want once", e.ID, n)
		}
	}
	if got := metric(t, reg, "mercato_events_relay_failures_total"); got < 4 {
		t.Errorf("relay failures metric %v, want at least 4 (3 refused, 1 lost ack)", got)
	}
	if n := faulty.refusals(); n != 3 {
		t.Errorf("broker refused %d publishes, want 3", n)
	}
}

func TestTwoRelaysPublishEachEventOnceInOrder(t *testing.T) {
	w := newWorld(t)
	recorder := &faultyBroker{Broker: w.broker}
	cfg := w.cfg.Broker
	cfg.RelayBatch = 7 // many small batches, so the relays interleave
	runRelay(t, w, recorder, cfg, prometheus.NewRegistry())
	runRelay(t, w, recorder, cfg, prometheus.NewRegistry())

	ctx := context.Background()
	var want []string
	for i := range 20 {
		batch := make([]events.Envelope, 10)
		for j := range batch {
			batch[j] = envelope(t, i*10+j)
			want = append(want, batch[j].ID)
		}
		w.commit(t, ctx, batch...)
	}
	eventstest.Eventually(t, func() bool { return len(recorder.publishedIDs()) >= len(want) && w.outboxLen(t) == 0 },
		"%d events published and the outbox empty", len(want))
	if got := recorder.publishedIDs(); !slices.Equal(got, want) {
		t.Errorf("relays published %d events (%d distinct), want each of %d once in commit order",
			len(got), len(distinct(got)), len(want))
	}
}

func distinct(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}
