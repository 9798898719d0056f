package inventory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/services/inventory/adapters/redisstock"
	"github.com/mercato/mercato/services/inventory/domain"
)

// How often the background loops look; the sweep interval is configured.
const (
	guardInterval = 200 * time.Millisecond
	claimInterval = 5 * time.Second
	// claimIdle is how long an entry may sit with a writer that read it
	// before another writer takes it over.
	claimIdle = 30 * time.Second
	// readBlock is how long the writer waits for new entries.
	readBlock = time.Second
)

// errAlreadyWhole stops a rebuild that another replica finished first.
var errAlreadyWhole = errors.New("the redis state was rebuilt meanwhile")

// guard keeps the Redis state whole: when the epoch key is missing, belongs
// to another epoch than the ledger's, or was written before Redis last
// restarted, it rebuilds the state from the ledger. Until then every script
// refuses, so nothing is sold on numbers nobody can vouch for.
func (inv *Inventory) guard(ctx context.Context) error {
	t := time.NewTicker(guardInterval)
	defer t.Stop()
	for {
		if err := inv.ensureWhole(ctx); err != nil && ctx.Err() == nil {
			inv.log.Warn("the stock counters are not ready", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-inv.kick:
		}
	}
}

// ensureWhole rebuilds the state unless it is whole.
func (inv *Inventory) ensureWhole(ctx context.Context) error {
	whole, err := inv.whole(ctx)
	if err != nil || whole {
		return err
	}
	start := time.Now()
	err = inv.ledger.Rebuild(ctx, inv.now(), retention, func(ctx context.Context) ([]domain.Change, error) {
		// Another replica may have rebuilt while this one waited for the
		// lock.
		whole, err := inv.whole(ctx)
		if err != nil {
			return nil, err
		}
		if whole {
			return nil, errAlreadyWhole
		}
		if err := inv.redis.Invalidate(ctx); err != nil {
			return nil, err
		}
		entries, err := inv.redis.All(ctx)
		if err != nil {
			return nil, err
		}
		return inv.changes(entries), nil
	}, func(ctx context.Context, snap domain.Snapshot) error {
		return inv.redis.Load(ctx, snap, inv.now(), retention)
	})
	if errors.Is(err, errAlreadyWhole) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rebuild from the ledger: %w", err)
	}
	inv.metrics.rebuilds.Inc()
	inv.log.Info("rebuilt the stock counters from the ledger", "took", time.Since(start).Round(time.Millisecond))
	go func() {
		if err := inv.redis.DropOldGenerations(context.WithoutCancel(ctx)); err != nil {
			inv.log.Warn("old generations of the stock counters stay in redis", "error", err)
		}
	}()
	return nil
}

// whole reports whether Redis holds the state of the ledger's epoch,
// loaded since Redis last started.
func (inv *Inventory) whole(ctx context.Context) (bool, error) {
	st, err := inv.redis.State(ctx)
	if err != nil {
		return false, err
	}
	epoch, err := inv.ledger.Epoch(ctx)
	if err != nil {
		return false, err
	}
	return st.Whole(epoch), nil
}

// changes keeps the entries that parse; one that does not is a bug in a
// script, logged and dropped rather than retried forever.
func (inv *Inventory) changes(entries []redisstock.Entry) []domain.Change {
	out := make([]domain.Change, 0, len(entries))
	for _, e := range entries {
		if e.Err != nil {
			inv.log.Error("dropping an unreadable ledger stream entry", "entry", e.ID, "error", e.Err)
			continue
		}
		out = append(out, e.Change)
	}
	return out
}

// writer moves the ledger stream into PostgreSQL in batches: entries are
// acknowledged only after the ledger committed them, and a writer that dies
// with entries unacknowledged leaves them for another to claim, so every
// change is recorded at least once — and, being named, exactly once.
func (inv *Inventory) writer(ctx context.Context) error {
	host, _ := os.Hostname()
	consumer := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), domain.NewReservationID()[4:12])
	backoff := time.Duration(0)
	lastClaim, cursor := time.Time{}, "0-0"
	for ctx.Err() == nil {
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
		batch := inv.cfg.Get().Inventory.LedgerBatch
		var entries []redisstock.Entry
		var err error
		if time.Since(lastClaim) > claimInterval {
			lastClaim = time.Now()
			entries, cursor, err = inv.redis.Claim(ctx, consumer, claimIdle, cursor, batch)
		}
		if err == nil && len(entries) == 0 {
			entries, err = inv.redis.Read(ctx, consumer, batch, readBlock)
		}
		if err == nil && len(entries) > 0 {
			err = inv.record(ctx, entries)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			if errors.Is(err, domain.ErrNotReady) {
				// Until the guard loads a generation, there is nothing to
				// read.
				backoff = guardInterval
			} else {
				inv.log.Warn("ledger writer waits", "error", err, "retry_in", backoff)
			}
			continue
		}
		backoff = 0
	}
	return nil
}

// record writes entries to the ledger and acknowledges them.
func (inv *Inventory) record(ctx context.Context, entries []redisstock.Entry) error {
	if err := inv.ledger.Apply(ctx, inv.changes(entries)); err != nil {
		return err
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	inv.metrics.ledgerEntries.Add(float64(len(entries)))
	if err := inv.redis.Ack(ctx, ids); err != nil {
		// Recorded; a later claim delivers them again, which changes
		// nothing.
		inv.log.Debug("ledger entries recorded but not acknowledged", "error", err)
	}
	return nil
}

// sweeper returns the units of reservations whose time passed, and settles
// commits and adjustments that a crash left halfway with the ledger.
func (inv *Inventory) sweeper(ctx context.Context) error {
	for {
		interval := inv.cfg.Get().Inventory.SweepInterval
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
		if err := inv.sweep(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, domain.ErrNotReady) {
			inv.log.Warn("sweep failed", "error", err)
		}
	}
}

// sweep runs one round of the sweeper.
func (inv *Inventory) sweep(ctx context.Context) error {
	now := inv.now()
	res, err := inv.redis.Sweep(ctx, now, 1000, grace, retention)
	if err != nil {
		inv.notReady(err)
		return err
	}
	inv.metrics.expired.Add(float64(res.Expired))
	for _, id := range res.InDoubt {
		r, _, err := inv.redis.Record(ctx, id, now)
		if err != nil || r.Status != domain.StatusCommitting {
			continue
		}
		inv.log.Info("settling a commit that did not finish", "reservation", id)
		inv.abandon(ctx, r)
	}
	rows, err := inv.redis.PendingAdjustments(ctx, now.Add(-grace), 100)
	if err != nil {
		return err
	}
	for _, row := range rows {
		if err := inv.ledger.SettleRow(ctx, row.VariantID, row.Location, func(r domain.StockRow) error {
			return inv.redis.SettleAdjust(ctx, inv.now(), r)
		}); err != nil {
			return err
		}
	}
	return nil
}

// metrics are the inventory's own series.
type metrics struct {
	reservations  *prometheus.CounterVec
	rebuilds      prometheus.Counter
	expired       prometheus.Counter
	ledgerEntries prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reservations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_inventory_reservations_total", Help: "Reservation attempts by outcome.",
		}, []string{"outcome"}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mercato_inventory_rebuilds_total", Help: "Rebuilds of the Redis counters from the ledger.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mercato_inventory_expired_total", Help: "Reservations the sweeper expired.",
		}),
		ledgerEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mercato_inventory_ledger_entries_total", Help: "Stream entries the ledger writer recorded.",
		}),
	}
	for _, c := range []prometheus.Collector{m.reservations, m.rebuilds, m.expired, m.ledgerEntries} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
