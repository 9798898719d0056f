package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/services/inventory/adapters/pgledger"
	"github.com/mercato/mercato/services/inventory/adapters/redisstock"
	"github.com/mercato/mercato/services/inventory/domain"
)

// Timings that are policy rather than configuration.
const (
	// retention is how long an ended reservation stays in Redis, so that a
	// retried Reserve, Commit or Release gets the same answer; the ledger
	// answers Commit and Release after that.
	retention = time.Hour
	// grace is how long a commit may take between its two steps in Redis
	// before the sweeper asks the ledger whether it happened.
	grace = 30 * time.Second
	// attempts bounds how often an operation starts again because the
	// Redis state was rebuilt under it.
	attempts = 3
)

// Inventory is the service's application layer: it validates, admits,
// and runs each operation across the Redis hot path and the PostgreSQL
// ledger in the order that keeps them consistent (docs/adr/0013).
type Inventory struct {
	redis     *redisstock.Store
	ledger    *pgledger.Store
	cfg       *config.Store
	log       *slog.Logger
	now       func() time.Time
	admission *admission
	metrics   *metrics
	// kick asks the guard to check the Redis state now.
	kick chan struct{}
}

// Locations are the configured stock locations, in the order reservations
// draw from them.
func (inv *Inventory) Locations() []string { return slices.Clone(inv.cfg.Get().Inventory.Locations) }

// Reserve validates req, admits it, and holds every item or none.
func (inv *Inventory) Reserve(ctx context.Context, req domain.ReserveRequest) (domain.Reservation, error) {
	cfg := inv.cfg.Get().Inventory
	if err := req.Validate(); err != nil {
		return domain.Reservation{}, err
	}
	ttl := req.TTL
	switch {
	case ttl == 0:
		ttl = cfg.ReservationTTL
	case ttl < time.Second || ttl > cfg.MaxReservationTTL:
		return domain.Reservation{}, &domain.ValidationError{Fields: []problem.FieldError{{Field: "ttl",
			Message: fmt.Sprintf("must be between 1s and %s", cfg.MaxReservationTTL)}}}
	}
	variants := make([]string, len(req.Items))
	for i, it := range req.Items {
		variants[i] = it.VariantID
	}
	done, ok := inv.admission.enter(variants, cfg.MaxInFlight, cfg.MaxInFlightPerVariant)
	if !ok {
		inv.metrics.reservations.WithLabelValues("overloaded").Inc()
		return domain.Reservation{}, domain.ErrOverloaded
	}
	defer done()
	now := inv.now()
	r, _, err := inv.redis.Reserve(ctx, redisstock.ReserveArgs{
		ID: domain.NewReservationID(), Request: req, Now: now, ExpiresAt: now.Add(ttl),
		Limit: cfg.PurchaseLimit, Retention: retention,
	})
	inv.metrics.reservations.WithLabelValues(outcome(err)).Inc()
	if err != nil {
		inv.notReady(err)
		return domain.Reservation{}, err
	}
	return r, nil
}

// Commit turns a held reservation into a sale: Redis fences it, the ledger
// records the sale (refusing it if it would pass on_hand), then Redis moves
// the units. A crash between the steps is settled by the sweeper.
func (inv *Inventory) Commit(ctx context.Context, id string) (domain.Reservation, error) {
	for range attempts {
		r, err := inv.commit(ctx, id)
		if !errors.Is(err, domain.ErrEpochChanged) {
			return r, err
		}
	}
	return domain.Reservation{}, domain.ErrNotReady
}

func (inv *Inventory) commit(ctx context.Context, id string) (domain.Reservation, error) {
	now := inv.now()
	p, err := inv.redis.PrepareCommit(ctx, id, now, grace, retention)
	if errors.Is(err, domain.ErrNotFound) {
		return inv.fromLedger(ctx, id, domain.StatusCommitted)
	}
	if err != nil {
		inv.notReady(err)
		return domain.Reservation{}, err
	}
	r := p.Reservation
	switch r.Status {
	case domain.StatusCommitted:
		return r, nil
	case domain.StatusReleased, domain.StatusExpired:
		return r, &domain.EndedError{Status: r.Status}
	case domain.StatusCommitting:
	default:
		return r, fmt.Errorf("reservation %s is %q in redis", id, r.Status)
	}
	status, err := inv.ledger.Commit(ctx, r, p.Epoch, now)
	switch {
	case errors.Is(err, domain.ErrOversold):
		// Redis promised units the ledger does not have: give them back,
		// and rebuild Redis from the ledger.
		inv.log.Error("the ledger refused a sale that redis allowed; rebuilding the counters", "reservation", id, "error", err)
		inv.abandon(ctx, r)
		inv.invalidate(ctx)
		return r, inv.shortOf(ctx, r)
	case err != nil:
		// Rolled back, or unknown after a failed COMMIT: either way the
		// reservation stays fenced until a retry or the sweeper settles it.
		return r, err
	}
	if status != domain.StatusCommitted {
		if _, err := inv.redis.AbortCommit(ctx, id, now, retention); err != nil {
			inv.log.Warn("redis did not take back a reservation the ledger had ended", "reservation", id, "error", err)
		}
		r.Status = status
		return r, &domain.EndedError{Status: status}
	}
	done, err := inv.redis.ApplyCommit(ctx, id, inv.now(), retention)
	if err != nil {
		// The sale is durable; the sweeper finishes it in Redis.
		inv.log.Warn("commit recorded but not applied in redis yet", "reservation", id, "error", err)
		r.Status, r.EndedAt = domain.StatusCommitted, now
		return r, nil
	}
	return done, nil
}

// fromLedger answers for a reservation Redis no longer knows: a retry of a
// commit (want committed) or release long after it ended.
func (inv *Inventory) fromLedger(ctx context.Context, id string, want domain.Status) (domain.Reservation, error) {
	r, err := inv.ledger.Reservation(ctx, id)
	if err != nil {
		return r, err
	}
	switch {
	case r.Status == want:
		return r, nil
	case want == domain.StatusReleased && r.Status == domain.StatusExpired:
		return r, nil
	case r.Status == domain.StatusHeld:
		// Held in the ledger but unknown to Redis: the state is not whole.
		inv.invalidate(ctx)
		return r, domain.ErrNotReady
	}
	return r, &domain.EndedError{Status: r.Status}
}

// Release gives a held reservation's units back.
func (inv *Inventory) Release(ctx context.Context, id string) (domain.Reservation, error) {
	r, err := inv.redis.Release(ctx, id, inv.now(), retention)
	if errors.Is(err, domain.ErrNotFound) {
		return inv.fromLedger(ctx, id, domain.StatusReleased)
	}
	if err != nil {
		inv.notReady(err)
		return r, err
	}
	switch r.Status {
	case domain.StatusReleased, domain.StatusExpired:
		return r, nil
	case domain.StatusCommitting:
		return r, domain.ErrCommitInProgress
	}
	return r, &domain.EndedError{Status: r.Status}
}

// Stock reads variants' live counters.
func (inv *Inventory) Stock(ctx context.Context, variants []string) ([]domain.VariantStock, error) {
	s, err := inv.redis.Stock(ctx, inv.now(), variants)
	inv.notReady(err)
	return s, err
}

// Adjust sets on_hand of every row or none: the ledger locks the rows,
// Redis checks them against what is reserved and committed and caps them
// while the ledger records the change, then Redis applies it.
func (inv *Inventory) Adjust(ctx context.Context, adjustments []domain.Adjustment) ([]domain.VariantStock, error) {
	for range attempts {
		now := inv.now()
		rows, err := inv.ledger.Adjust(ctx, adjustments, now, func(rows []domain.AdjustRow) (int64, error) {
			return inv.redis.BeginAdjust(ctx, now, rows)
		})
		var unknown *pgledger.CommitError
		switch {
		case errors.As(err, &unknown):
			// Whether the ledger recorded it is unknown: the marks stay
			// and the sweeper settles them with the ledger.
			return nil, fmt.Errorf("%w: %v", domain.ErrUnavailable, err)
		case err != nil:
			if rows != nil {
				if aerr := inv.redis.AbortAdjust(context.WithoutCancel(ctx), now, rows); aerr != nil {
					inv.log.Warn("adjustment marks left for the sweeper", "error", aerr)
				}
			}
			if errors.Is(err, domain.ErrEpochChanged) {
				continue
			}
			inv.notReady(err)
			return nil, err
		}
		if err := inv.redis.ApplyAdjust(context.WithoutCancel(ctx), now, rows); err != nil {
			inv.log.Warn("adjustment recorded but not applied in redis yet; the sweeper will", "error", err)
		}
		variants := make([]string, 0, len(adjustments))
		for _, a := range adjustments {
			if !slices.Contains(variants, a.VariantID) {
				variants = append(variants, a.VariantID)
			}
		}
		return inv.Stock(ctx, variants)
	}
	return nil, domain.ErrNotReady
}

// abandon ends a fenced reservation the ledger would not sell: the ledger
// records its expiry (unless a commit won) and Redis gives the units back.
func (inv *Inventory) abandon(ctx context.Context, r domain.Reservation) {
	ctx = context.WithoutCancel(ctx)
	status, err := inv.ledger.Abandon(ctx, r, inv.now())
	if err != nil {
		inv.log.Warn("could not settle a reservation with the ledger; the sweeper will", "reservation", r.ID, "error", err)
		return
	}
	if status == domain.StatusCommitted {
		_, err = inv.redis.ApplyCommit(ctx, r.ID, inv.now(), retention)
	} else {
		_, err = inv.redis.AbortCommit(ctx, r.ID, inv.now(), retention)
	}
	if err != nil && !errors.Is(err, domain.ErrNotReady) {
		inv.log.Warn("could not settle a reservation in redis", "reservation", r.ID, "error", err)
	}
}

// shortOf describes the items of r as the ledger sees them after it
// refused to sell them.
func (inv *Inventory) shortOf(ctx context.Context, r domain.Reservation) error {
	oos := &domain.OutOfStockError{}
	variants := make([]string, 0, len(r.Items))
	for _, p := range r.Items {
		variants = append(variants, p.VariantID)
	}
	rows, _ := inv.ledger.Stock(context.WithoutCancel(ctx), variants)
	for _, p := range r.Items {
		var left int64
		for _, row := range rows {
			if row.VariantID == p.VariantID && row.Location == p.Location {
				left = max(row.OnHand-row.Committed, 0)
			}
		}
		oos.Shortages = append(oos.Shortages, domain.Shortage{VariantID: p.VariantID, Requested: p.Quantity, Available: left})
	}
	return oos
}

// notReady wakes the guard when Redis said its state is missing.
func (inv *Inventory) notReady(err error) {
	if errors.Is(err, domain.ErrNotReady) {
		select {
		case inv.kick <- struct{}{}:
		default:
		}
	}
}

// invalidate makes Redis refuse until the guard rebuilds it.
func (inv *Inventory) invalidate(ctx context.Context) {
	if err := inv.redis.Invalidate(context.WithoutCancel(ctx)); err != nil {
		inv.log.Warn("could not invalidate the redis state", "error", err)
	}
	inv.notReady(domain.ErrNotReady)
}

// outcome labels a reservation's result for metrics.
func outcome(err error) string {
	var (
		oos   *domain.OutOfStockError
		limit *domain.PurchaseLimitError
		inval *domain.ValidationError
	)
	switch {
	case err == nil:
		return "held"
	case errors.As(err, &oos):
		return "out_of_stock"
	case errors.As(err, &limit):
		return "purchase_limit"
	case errors.As(err, &inval), errors.Is(err, domain.ErrKeyReused):
		return "invalid"
	case errors.Is(err, domain.ErrNotReady):
		return "not_ready"
	case errors.Is(err, domain.ErrUnavailable):
		return "unavailable"
	}
	return "error"
}
