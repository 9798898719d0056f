package pgledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/services/inventory/domain"
)

// Commit records the sale of a reservation that Redis prepared in epoch: the
// reservation (if the stream has not brought it yet), its commit and the
// stock it moves, in one transaction that PostgreSQL refuses if committed
// would pass on_hand. It returns the reservation's status in the ledger
// afterwards: committed, or the status that rules the commit out (then
// nothing was written). Commits and Abandon of one reservation are
// serialised by a lock on its id, so exactly one of them decides.
func (s *Store) Commit(ctx context.Context, r domain.Reservation, epoch int64, now time.Time) (domain.Status, error) {
	var status domain.Status
	err := s.inEpoch(ctx, false, func(tx pgx.Tx, ledgerEpoch int64) error {
		if ledgerEpoch != epoch {
			return domain.ErrEpochChanged
		}
		st, err := s.decide(ctx, tx, r, domain.OpCommit, now)
		status = st
		return err
	})
	return status, err
}

// Abandon records that a reservation whose commit never finished expired:
// its units go back. Like Commit, it returns the ledger's status afterwards,
// which is committed if the commit won.
func (s *Store) Abandon(ctx context.Context, r domain.Reservation, now time.Time) (domain.Status, error) {
	var status domain.Status
	err := s.inEpoch(ctx, false, func(tx pgx.Tx, _ int64) error {
		st, err := s.decide(ctx, tx, r, domain.OpExpiry, now)
		status = st
		return err
	})
	return status, err
}

// decide ends r with op (commit or expiry) unless the ledger ended it
// already, and returns its status.
func (s *Store) decide(ctx context.Context, tx pgx.Tx, r domain.Reservation, op domain.Op, now time.Time) (domain.Status, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "reservation:"+r.ID); err != nil {
		return "", err
	}
	var status domain.Status
	err := tx.QueryRow(ctx, `SELECT status FROM reservations WHERE id = $1`, r.ID).Scan(&status)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	if status != "" && status != domain.StatusHeld {
		return status, nil
	}
	final, _ := op.Ends()
	ended := r
	ended.Status, ended.EndedAt = final, now
	if err := upsertReservations(ctx, tx, []string{r.ID}, map[string]domain.Reservation{r.ID: ended}); err != nil {
		return "", err
	}
	rows := make([]ledgerRow, 0, 2*len(r.Items))
	for _, p := range r.Items {
		base := ledgerRow{variant: p.VariantID, location: p.Location, reservation: r.ID, custom: r.CustomerID}
		held := base
		held.op, held.key, held.delta, held.at = domain.OpReservation, changeKey(domain.OpReservation, r.ID, 0), domain.OpReservation.Delta(p.Quantity), r.CreatedAt
		end := base
		end.op, end.key, end.delta, end.at = op, changeKey(op, r.ID, 0), op.Delta(p.Quantity), now
		rows = append(rows, held, end)
	}
	if err := s.insertLedger(ctx, tx, rows); err != nil {
		return "", err
	}
	return final, nil
}

// Reservation reads a reservation as the ledger knows it.
func (s *Store) Reservation(ctx context.Context, id string) (domain.Reservation, error) {
	r := domain.Reservation{ID: id}
	var ended *time.Time
	err := s.pool.QueryRow(ctx, `SELECT customer_id, idempotency_key, status, expires_at, created_at, ended_at
		FROM reservations WHERE id = $1`, id).Scan(&r.CustomerID, &r.IdempotencyKey, &r.Status, &r.ExpiresAt, &r.CreatedAt, &ended)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, domain.ErrNotFound
	}
	if err != nil {
		return r, classify(err)
	}
	if ended != nil {
		r.EndedAt = ended.UTC()
	}
	r.ExpiresAt, r.CreatedAt = r.ExpiresAt.UTC(), r.CreatedAt.UTC()
	rows, err := s.pool.Query(ctx, `SELECT variant_id, location, quantity FROM reservation_items
		WHERE reservation_id = $1 ORDER BY variant_id`, id)
	if err != nil {
		return r, classify(err)
	}
	r.Items, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Placement, error) {
		var p domain.Placement
		return p, row.Scan(&p.VariantID, &p.Location, &p.Quantity)
	})
	return r, classify(err)
}

// Adjust records admins' counts in one transaction: it locks the rows, has
// begin check and mark them in Redis (see redisstock.Store.BeginAdjust),
// and appends one adjustment per changed row. begin returns the epoch of
// the Redis state, which must be the ledger's. The rows are returned with
// their sequence numbers for the caller to apply or abort in Redis; when
// the error is a *CommitError the outcome is unknown and the caller leaves
// the marks for the sweeper to settle.
func (s *Store) Adjust(ctx context.Context, adjustments []domain.Adjustment, now time.Time,
	begin func(rows []domain.AdjustRow) (int64, error)) ([]domain.AdjustRow, error) {
	var out []domain.AdjustRow
	err := s.inEpoch(ctx, false, func(tx pgx.Tx, epoch int64) error {
		rows, err := lockRows(ctx, tx, adjustments)
		if err != nil {
			return err
		}
		redisEpoch, err := begin(rows)
		if err != nil {
			return err
		}
		// From here on Redis holds marks that the caller must apply or
		// abort, whatever happens to this transaction.
		out = rows
		if redisEpoch != epoch {
			return domain.ErrEpochChanged
		}
		var ledger []ledgerRow
		for _, r := range rows {
			if !r.Changes() {
				continue
			}
			ledger = append(ledger, ledgerRow{
				op: domain.OpAdjustment, key: changeKey(domain.OpAdjustment, "", r.Seq), variant: r.VariantID, location: r.Location,
				delta: domain.Counters{OnHand: r.OnHand - r.PrevOnHand}, at: now,
			})
			if _, err := tx.Exec(ctx, `UPDATE stock SET adjust_seq = $3 WHERE variant_id = $1 AND location = $2`,
				r.VariantID, r.Location, r.Seq); err != nil {
				return err
			}
		}
		return s.insertLedger(ctx, tx, ledger)
	})
	return out, err
}

// lockRows locks the stock rows of adjustments (creating missing ones), in
// one order so that concurrent adjustments cannot deadlock, and numbers the
// changing ones.
func lockRows(ctx context.Context, tx pgx.Tx, adjustments []domain.Adjustment) ([]domain.AdjustRow, error) {
	vars, locs := make([]string, len(adjustments)), make([]string, len(adjustments))
	for i, a := range adjustments {
		vars[i], locs[i] = a.VariantID, a.Location
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO stock (variant_id, location)
		SELECT v, l FROM unnest($1::text[], $2::text[]) AS t(v, l) ORDER BY v, l
		ON CONFLICT DO NOTHING`, vars, locs); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `
		SELECT s.variant_id, s.location, s.on_hand, s.adjust_seq FROM stock s
		JOIN unnest($1::text[], $2::text[]) AS t(v, l) ON s.variant_id = t.v AND s.location = t.l
		ORDER BY s.variant_id, s.location FOR UPDATE OF s`, vars, locs)
	if err != nil {
		return nil, err
	}
	type key struct{ v, l string }
	current := map[key][2]int64{}
	for rows.Next() {
		var k key
		var oh, seq int64
		if err := rows.Scan(&k.v, &k.l, &oh, &seq); err != nil {
			rows.Close()
			return nil, err
		}
		current[k] = [2]int64{oh, seq}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]domain.AdjustRow, len(adjustments))
	for i, a := range adjustments {
		c := current[key{a.VariantID, a.Location}]
		r := domain.AdjustRow{Adjustment: a, PrevOnHand: c[0], PrevSeq: c[1], Seq: c[1]}
		if a.OnHand != c[0] {
			r.Seq = c[1] + 1
		}
		out[i] = r
	}
	return out, nil
}

// SettleRow brings Redis up to the ledger for one variant and location
// whose adjustment was left marked in progress: settle runs while the row
// is locked, so the adjustment has finished one way or the other.
func (s *Store) SettleRow(ctx context.Context, variant, location string, settle func(domain.StockRow) error) error {
	return s.inEpoch(ctx, false, func(tx pgx.Tx, _ int64) error {
		row := domain.StockRow{VariantID: variant, Location: location}
		err := tx.QueryRow(ctx, `SELECT on_hand, reserved, committed, adjust_seq FROM stock
			WHERE variant_id = $1 AND location = $2 FOR UPDATE`, variant, location).
			Scan(&row.OnHand, &row.Reserved, &row.Committed, &row.AdjustSeq)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return settle(row)
	})
}

// Stock reads variants' rows as the ledger adds them up, for every
// location that has one.
func (s *Store) Stock(ctx context.Context, variants []string) ([]domain.StockRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT variant_id, location, on_hand, reserved, committed, adjust_seq
		FROM stock WHERE variant_id = ANY($1) ORDER BY variant_id, location`, variants)
	if err != nil {
		return nil, classify(err)
	}
	out, err := pgx.CollectRows(rows, scanStockRow)
	return out, classify(err)
}

func scanStockRow(row pgx.CollectableRow) (domain.StockRow, error) {
	var r domain.StockRow
	return r, row.Scan(&r.VariantID, &r.Location, &r.OnHand, &r.Reserved, &r.Committed, &r.AdjustSeq)
}

// Rebuild replaces the Redis state from the ledger while holding the epoch
// lock exclusively: drain returns what the stream still holds (recorded
// first, so nothing Redis did is lost), then the epoch moves on, consumers
// are told of every variant whose availability differs from what they
// heard, and load gets the snapshot. retention bounds which ended
// reservations the snapshot carries.
func (s *Store) Rebuild(ctx context.Context, now time.Time, retention time.Duration,
	drain func(ctx context.Context) ([]domain.Change, error), load func(ctx context.Context, snap domain.Snapshot) error) error {
	return s.Exclusive(ctx, func(ctx context.Context) error {
		changes, err := drain(ctx)
		if err != nil {
			return err
		}
		var snap domain.Snapshot
		err = pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
			for start := 0; start < len(changes); start += 1000 {
				if err := s.apply(ctx, tx, changes[start:min(start+1000, len(changes))]); err != nil {
					return err
				}
			}
			if err := tx.QueryRow(ctx, `UPDATE redis_epoch SET epoch = epoch + 1 RETURNING epoch`).Scan(&snap.Epoch); err != nil {
				return err
			}
			if err := s.republish(ctx, tx); err != nil {
				return err
			}
			return snapshot(ctx, tx, now.Add(-retention), &snap)
		})
		if err != nil {
			return classify(err)
		}
		return load(ctx, snap)
	})
}

// republish tells consumers the ledger's state of every variant whose
// availability differs from what they last heard: reservations lost with
// Redis come back, and events the stream never delivered are made good.
func (s *Store) republish(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `
		WITH totals AS (
			SELECT variant_id, sum(on_hand) AS on_hand, sum(greatest(reserved, 0)) AS reserved, sum(committed) AS committed
			FROM stock GROUP BY variant_id
		)
		UPDATE variants v SET version = v.version + 1, published_version = v.version + 1,
			published_available = t.on_hand - t.reserved - t.committed
		FROM totals t, variants old
		WHERE v.variant_id = t.variant_id AND old.variant_id = v.variant_id
			AND v.published_available IS DISTINCT FROM t.on_hand - t.reserved - t.committed
		RETURNING v.variant_id, t.on_hand, t.reserved, t.committed, v.version, old.published_available`)
	if err != nil {
		return fmt.Errorf("compare published stock: %w", err)
	}
	type pending struct {
		variant string
		c       domain.Counters
		version int64
		before  *int64
	}
	var all []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.variant, &p.c.OnHand, &p.c.Reserved, &p.c.Committed, &p.version, &p.before); err != nil {
			rows.Close()
			return err
		}
		all = append(all, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range all {
		envs, err := stockEvents(p.variant, p.c, p.version, p.before)
		if err != nil {
			return err
		}
		if err := events.Add(ctx, tx, s.namespace, envs...); err != nil {
			return err
		}
	}
	return nil
}

// snapshot reads what a rebuild loads: every stock row, versions, held
// reservations and those ended since endedAfter, and purchase tallies.
func snapshot(ctx context.Context, tx pgx.Tx, endedAfter time.Time, snap *domain.Snapshot) error {
	rows, err := tx.Query(ctx, `SELECT variant_id, location, on_hand, greatest(reserved, 0), committed, adjust_seq FROM stock`)
	if err != nil {
		return err
	}
	if snap.Stock, err = pgx.CollectRows(rows, scanStockRow); err != nil {
		return err
	}
	snap.Versions = map[string]int64{}
	rows, err = tx.Query(ctx, `SELECT variant_id, version FROM variants`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var v string
		var n int64
		if err := rows.Scan(&v, &n); err != nil {
			rows.Close()
			return err
		}
		snap.Versions[v] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = tx.Query(ctx, `
		SELECT r.id, r.customer_id, r.idempotency_key, r.status, r.expires_at, r.created_at, r.ended_at,
			i.variant_id, i.location, i.quantity
		FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
		WHERE r.status = 'held' OR r.ended_at > $1
		ORDER BY r.id, i.variant_id`, endedAfter)
	if err != nil {
		return err
	}
	for rows.Next() {
		var r domain.Reservation
		var ended *time.Time
		var p domain.Placement
		if err := rows.Scan(&r.ID, &r.CustomerID, &r.IdempotencyKey, &r.Status, &r.ExpiresAt, &r.CreatedAt, &ended,
			&p.VariantID, &p.Location, &p.Quantity); err != nil {
			rows.Close()
			return err
		}
		if n := len(snap.Reservations); n > 0 && snap.Reservations[n-1].ID == r.ID {
			snap.Reservations[n-1].Items = append(snap.Reservations[n-1].Items, p)
			continue
		}
		if ended != nil {
			r.EndedAt = ended.UTC()
		}
		r.Items = []domain.Placement{p}
		snap.Reservations = append(snap.Reservations, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = tx.Query(ctx, `
		SELECT r.customer_id, i.variant_id, sum(i.quantity)
		FROM reservations r JOIN reservation_items i ON i.reservation_id = r.id
		WHERE r.customer_id <> '' AND r.status IN ('held', 'committed')
		GROUP BY r.customer_id, i.variant_id`)
	if err != nil {
		return err
	}
	snap.Tallies, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Tally, error) {
		var t domain.Tally
		return t, row.Scan(&t.CustomerID, &t.VariantID, &t.Units)
	})
	return err
}
