package events_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/eventstest"
	"github.com/mercato/mercato/platform/events/natsbroker"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/platformtest"
)

// world is one test's corner of the machine: a namespace, a migrated
// service database with an effects table for handlers to write to, and a
// connection to the real NATS server.
type world struct {
	cfg    config.Config
	ns     string
	pool   *pgxpool.Pool
	broker *natsbroker.Broker
}

func newWorld(t *testing.T) world {
	t.Helper()
	cfg := platformtest.Config(t)
	cfg.Broker.RelayInterval = 50 * time.Millisecond
	cfg.Broker.RetryBackoff = 20 * time.Millisecond
	cfg.Broker.RetryBackoffMax = 100 * time.Millisecond
	pool := platformtest.Postgres(t, cfg, "events")
	ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
	defer cancel()
	log := platformtest.Logger(t)
	if err := pg.Migrate(ctx, pool, events.Migrations, events.MigrationsTable, log); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE effects (event_id text NOT NULL, note text)"); err != nil {
		t.Fatalf("effects table: %v", err)
	}
	return world{cfg: cfg, ns: cfg.Namespace, pool: pool, broker: openBroker(t, cfg.Namespace)}
}

// openBroker connects one more instance to the test NATS server; the first
// one opened deletes the namespace's streams last.
func openBroker(t *testing.T, ns string) *natsbroker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
	defer cancel()
	b, err := natsbroker.Open(ctx, natsbroker.Config{URL: platformtest.NATSURL(), Namespace: ns}, platformtest.Logger(t))
	if err != nil {
		t.Fatalf("open nats: %v (is nats-server -js running on %s?)", err, platformtest.NATSURL())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventstest.Wait)
		defer cancel()
		if err := b.DeleteStreams(ctx); err != nil {
			t.Errorf("delete streams: %v", err)
		}
		_ = b.Close()
	})
	return b
}

// commit writes envs to the outbox in one committed transaction.
func (w world) commit(t *testing.T, ctx context.Context, envs ...events.Envelope) {
	t.Helper()
	err := pg.InTx(ctx, w.pool, func(tx pgx.Tx) error { return events.Add(ctx, tx, w.ns, envs...) })
	if err != nil {
		t.Fatalf("add: %v", err)
	}
}

// effects counts the rows handlers wrote for event id.
func (w world) effects(t *testing.T, eventID string) int {
	t.Helper()
	var n int
	if err := w.pool.QueryRow(context.Background(), "SELECT count(*) FROM effects WHERE event_id = $1", eventID).Scan(&n); err != nil {
		t.Fatalf("count effects: %v", err)
	}
	return n
}

// outboxLen counts rows waiting in the outbox.
func (w world) outboxLen(t *testing.T) int {
	t.Helper()
	var n int
	if err := w.pool.QueryRow(context.Background(), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatalf("count outbox: %v", err)
	}
	return n
}

// writeEffect is a handler's side effect, in the handler's transaction.
func writeEffect(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	_, err := tx.Exec(ctx, "INSERT INTO effects (event_id) VALUES ($1)", e.ID)
	return err
}

// envelope is an order.placed event from the order service.
func envelope(t *testing.T, n int) events.Envelope {
	t.Helper()
	e, err := events.New("order", "order.placed", "ord_test", map[string]int{"n": n})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// background runs fn until the test ends, then cancels it and waits for it
// to return nil.
func background(t *testing.T, name string, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s returned %v", name, err)
			}
		case <-time.After(eventstest.Wait):
			t.Errorf("%s did not stop within %v", name, eventstest.Wait)
		}
	})
}

// runRelay relays w's outbox to b until the test ends.
func runRelay(t *testing.T, w world, b events.Broker, cfg config.BrokerConfig, reg prometheus.Registerer) {
	t.Helper()
	r := events.NewRelay(w.pool, b, cfg, platformtest.Logger(t), reg)
	background(t, "relay", r.Run)
}

// faultyBroker is a real broker that fails on purpose: failBefore publishes
// are refused outright, then failAfter publishes reach the broker but report
// an error (a lost acknowledgement). It records what it passed on.
type faultyBroker struct {
	events.Broker

	mu              sync.Mutex
	failBefore      int
	failAfter       int
	failDeadLetters int
	refused         int
	published       []string
}

func (f *faultyBroker) DeadLetter(ctx context.Context, consumer string, m events.Message, reason string) error {
	f.mu.Lock()
	if f.failDeadLetters > 0 {
		f.failDeadLetters--
		f.mu.Unlock()
		return errors.New("dead-letter stream unavailable")
	}
	f.mu.Unlock()
	return f.Broker.DeadLetter(ctx, consumer, m, reason)
}

func (f *faultyBroker) Publish(ctx context.Context, msgs ...events.Message) error {
	f.mu.Lock()
	if f.failBefore > 0 {
		f.failBefore--
		f.refused++
		f.mu.Unlock()
		return errors.New("broker unavailable")
	}
	f.mu.Unlock()
	if err := f.Broker.Publish(ctx, msgs...); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range msgs {
		f.published = append(f.published, m.ID)
	}
	if f.failAfter > 0 {
		f.failAfter--
		return errors.New("acknowledgement lost")
	}
	return nil
}

func (f *faultyBroker) refusals() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

func (f *faultyBroker) publishedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.published...)
}

// metric reads a counter or gauge from reg, summed over the series whose
// labels include labels (name, value pairs).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// counter counts handler calls per event id.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) inc(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[id]++
}

func (c *counter) of(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	sum := 0
	for _, n := range c.n {
		sum += n
	}
	return sum
}

// storeOf is a static configuration store holding cfg.
func storeOf(cfg config.Config) *config.Store { return config.Static(cfg) }

// nilLogger discards.
func nilLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
