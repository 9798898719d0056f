package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/config"
)

// relayLockID is the transaction-scoped advisory lock that lets one relay of
// a database publish at a time, so batches reach the broker in outbox order
// even when several replicas run.
const relayLockID int64 = 0x6d6572636f757462 // "mercoutb"

const (
	// relayPublishTimeout bounds one batch's wait for broker acknowledgements,
	// so a broker that hangs frees the claimed rows for the next attempt.
	relayPublishTimeout = 30 * time.Second
	// relayBusyRecheck is how soon a relay that found another replica working
	// looks again: a row committed just as the other one finished would
	// otherwise wait for the next poll.
	relayBusyRecheck = 25 * time.Millisecond
	relayBackoffMin  = 100 * time.Millisecond
	relayBackoffMax  = 10 * time.Second
)

// Relay forwards committed outbox rows to the broker: it wakes on the outbox
// trigger's notification (and polls as a safety net), publishes the oldest
// rows in order and deletes them only once the broker has acknowledged them.
// A broker outage leaves the rows in place; the relay retries with backoff.
type Relay struct {
	cfg    config.BrokerConfig
	pool   *pgxpool.Pool
	broker Broker
	log    *slog.Logger

	published prometheus.Counter
	failures  prometheus.Counter
	backlog   prometheus.Gauge
	oldest    prometheus.Gauge
	lag       prometheus.Histogram
}

// NewRelay returns a relay for the outbox in pool's database. Several relays
// may run against one database (one per replica); they take turns.
func NewRelay(pool *pgxpool.Pool, b Broker, cfg config.BrokerConfig, log *slog.Logger, reg prometheus.Registerer) *Relay {
	if cfg.RelayInterval <= 0 {
		cfg.RelayInterval = time.Second
	}
	if cfg.RelayBatch <= 0 {
		cfg.RelayBatch = 256
	}
	return &Relay{
		cfg:    cfg,
		pool:   pool,
		broker: b,
		log:    log,
		published: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mercato_events_relay_published_total",
			Help: "Outbox events the relay published and the broker acknowledged.",
		})),
		failures: register(reg, log, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mercato_events_relay_failures_total",
			Help: "Relay batches that failed to publish or commit; their rows stay in the outbox.",
		})),
		backlog: register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mercato_events_outbox_backlog",
			Help: "Rows waiting in the outbox, as of the relay's last poll.",
		})),
		oldest: register(reg, log, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mercato_events_outbox_oldest_age_seconds",
			Help: "Age of the oldest row waiting in the outbox, as of the relay's last poll (0 when empty).",
		})),
		lag: register(reg, log, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mercato_events_relay_lag_seconds",
			Help:    "Time from an event's insert into the outbox to the broker's acknowledgement.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		})),
	}
}

// Run relays until ctx ends and then returns nil. Rows it could not publish
// stay in the outbox for the next run.
func (r *Relay) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { r.listen(ctx, wake) })
	defer wg.Wait()

	poll := time.NewTicker(r.cfg.RelayInterval)
	defer poll.Stop()
	r.measureBacklog(ctx)
	backoff := time.Duration(0)
	for {
		busy, err := r.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.failures.Inc()
			backoff = min(max(2*backoff, relayBackoffMin), relayBackoffMax)
			r.log.WarnContext(ctx, "outbox relay could not publish; the rows stay and will be retried", "err", err, "retry_in", backoff)
			// Notifications are ignored while backing off: they would only
			// hammer a broker that is down.
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		var recheck <-chan time.Time
		if busy {
			recheck = time.After(relayBusyRecheck)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-recheck:
		case <-poll.C:
			r.measureBacklog(ctx)
		}
	}
}

// drain publishes batches until the outbox is empty. busy reports that
// another relay holds the turn.
func (r *Relay) drain(ctx context.Context) (busy bool, err error) {
	for {
		n, busy, err := r.relayBatch(ctx)
		if err != nil || busy || n < r.cfg.RelayBatch {
			return busy, err
		}
	}
}

// outboxRow is one claimed row of the outbox.
type outboxRow struct {
	msg     Message
	created time.Time
}

// relayBatch claims, publishes and deletes the oldest batch of rows in one
// transaction, so a crash at any point leaves the rows to be published again
// (at least once; consumers deduplicate by event id).
func (r *Relay) relayBatch(ctx context.Context) (n int, busy bool, err error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("outbox relay: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var turn bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", relayLockID).Scan(&turn); err != nil {
		return 0, false, fmt.Errorf("outbox relay: take turn: %w", err)
	}
	if !turn {
		return 0, true, nil
	}
	// SKIP LOCKED keeps the claim safe even without the turn lock (an older
	// relay, an operator's script): a locked row belongs to someone else.
	rows, err := tx.Query(ctx, `
		SELECT id, topic, payload, headers, created_at FROM outbox
		ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`, r.cfg.RelayBatch)
	if err != nil {
		return 0, false, fmt.Errorf("outbox relay: claim: %w", err)
	}
	batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		var headers []byte
		if err := row.Scan(&o.msg.ID, &o.msg.Topic, &o.msg.Body, &headers, &o.created); err != nil {
			return o, err
		}
		if err := json.Unmarshal(headers, &o.msg.Headers); err != nil {
			return o, fmt.Errorf("outbox row %s headers: %w", o.msg.ID, err)
		}
		return o, nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("outbox relay: read: %w", err)
	}
	if len(batch) == 0 {
		return 0, false, nil
	}
	msgs := make([]Message, len(batch))
	ids := make([]string, len(batch))
	for i, o := range batch {
		msgs[i], ids[i] = o.msg, o.msg.ID
	}
	pctx, cancel := context.WithTimeout(ctx, relayPublishTimeout)
	err = r.broker.Publish(pctx, msgs...)
	cancel()
	if err != nil {
		return 0, false, fmt.Errorf("outbox relay: publish %d events: %w", len(msgs), err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM outbox WHERE id = ANY($1)", ids); err != nil {
		return 0, false, fmt.Errorf("outbox relay: delete published rows: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, fmt.Errorf("outbox relay: commit: %w", err)
	}
	now := time.Now()
	r.published.Add(float64(len(batch)))
	for _, o := range batch {
		r.lag.Observe(now.Sub(o.created).Seconds())
	}
	return len(batch), false, nil
}

// measureBacklog refreshes the backlog gauges; it runs at each poll rather
// than per batch because counting rows is not free on a long outbox.
func (r *Relay) measureBacklog(ctx context.Context) {
	var n int64
	var age float64
	err := r.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
		FROM outbox`).Scan(&n, &age)
	if err != nil {
		if ctx.Err() == nil {
			r.log.WarnContext(ctx, "outbox backlog not measured", "err", err)
		}
		return
	}
	r.backlog.Set(float64(n))
	r.oldest.Set(max(age, 0))
}

// listen holds a dedicated connection that LISTENs for outbox inserts and
// signals wake for each; it reconnects until ctx ends, waking the relay after
// each reconnect in case a notification was missed while it was away.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, wake, func() { backoff = 0 })
		if ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, relayBackoffMin), relayBackoffMax)
		r.log.WarnContext(ctx, "outbox relay lost its notification connection; polling until it is back", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, wake chan<- struct{}, connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{notifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	connected()
	signal(wake)
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		signal(wake)
	}
}

// signal wakes the relay without blocking; one pending wake is enough since
// the relay drains the whole outbox each time.
func signal(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}

// sleep waits d and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
