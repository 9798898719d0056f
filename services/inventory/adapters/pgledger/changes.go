package pgledger

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/services/inventory/domain"
)

// source is the inventory's name in event envelopes.
const source = "inventory"

// Apply records changes read from the ledger stream: ledger rows, the stock
// they add up to, reservations' statuses, and one event per variant with
// its latest state. Every change is named (see the ledger table), so
// applying a change twice — a redelivered entry, or a commit written
// synchronously and later seen in the stream — changes nothing.
func (s *Store) Apply(ctx context.Context, changes []domain.Change) error {
	if len(changes) == 0 {
		return nil
	}
	return s.inEpoch(ctx, true, func(tx pgx.Tx, epoch int64) error {
		// Changes of an earlier epoch were settled by the rebuild that
		// ended it: it drained what the stream still held, and what Redis
		// lost before that never happened as far as the new state knows.
		// Recording them now would hold units no reservation in Redis
		// holds.
		current := make([]domain.Change, 0, len(changes))
		for _, c := range changes {
			if c.Epoch == epoch {
				current = append(current, c)
			}
		}
		return s.apply(ctx, tx, current)
	})
}

// ledgerRow is one row of the ledger table.
type ledgerRow struct {
	op                  domain.Op
	key                 string
	variant, location   string
	delta               domain.Counters
	reservation, custom string
	epoch               *int64
	streamID            *string
	at                  time.Time
}

// changeKey names a change of a reservation or an adjustment.
func changeKey(op domain.Op, reservationID string, seq int64) string {
	if op == domain.OpAdjustment {
		return string(op) + ":" + strconv.FormatInt(seq, 10)
	}
	return string(op) + ":" + reservationID
}

func (s *Store) apply(ctx context.Context, tx pgx.Tx, changes []domain.Change) error {
	var rows []ledgerRow
	reservations := map[string]domain.Reservation{}
	var order []string
	latest := map[string]domain.ChangeLine{}
	for _, c := range changes {
		c := c
		for _, l := range c.Lines {
			rows = append(rows, ledgerRow{
				op: c.Op, key: changeKey(c.Op, c.Reservation.ID, c.AdjustSeq), variant: l.VariantID, location: l.Location,
				delta: c.Op.Delta(l.Quantity), reservation: c.Reservation.ID, custom: c.Reservation.CustomerID,
				epoch: &c.Epoch, streamID: &c.StreamID, at: c.At,
			})
			if prev, ok := latest[l.VariantID]; !ok || l.Version > prev.Version {
				latest[l.VariantID] = l
			}
		}
		if c.Op == domain.OpAdjustment {
			continue
		}
		r := c.Reservation
		prev, seen := reservations[r.ID]
		if !seen {
			order = append(order, r.ID)
		}
		// An ended status wins over held, whichever arrived first.
		if !seen || prev.Status == domain.StatusHeld {
			reservations[r.ID] = r
		}
	}
	if err := upsertReservations(ctx, tx, order, reservations); err != nil {
		return err
	}
	if err := s.insertLedger(ctx, tx, rows); err != nil {
		return err
	}
	return s.publish(ctx, tx, latest)
}

// upsertReservations records reservations and their items; a status only
// moves forward from held, so an old entry never revives an ended one.
func upsertReservations(ctx context.Context, tx pgx.Tx, ids []string, byID map[string]domain.Reservation) error {
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	n := len(ids)
	var (
		cus, keys, sts            = make([]string, n), make([]string, n), make([]string, n)
		exps, creates             = make([]time.Time, n), make([]time.Time, n)
		ends                      = make([]*time.Time, n)
		itemRes, itemVar, itemLoc []string
		itemQty                   []int64
	)
	for i, id := range ids {
		r := byID[id]
		cus[i], keys[i], sts[i], exps[i], creates[i] = r.CustomerID, r.IdempotencyKey, string(r.Status), r.ExpiresAt, r.CreatedAt
		if !r.EndedAt.IsZero() {
			e := r.EndedAt
			ends[i] = &e
		}
		for _, p := range r.Items {
			itemRes, itemVar, itemLoc, itemQty = append(itemRes, id), append(itemVar, p.VariantID), append(itemLoc, p.Location), append(itemQty, p.Quantity)
		}
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO reservations (id, customer_id, idempotency_key, status, expires_at, created_at, ended_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[])
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, ended_at = excluded.ended_at
		WHERE reservations.status = 'held' AND excluded.status <> 'held'`,
		ids, cus, keys, sts, exps, creates, ends); err != nil {
		return fmt.Errorf("record reservations: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO reservation_items (reservation_id, variant_id, location, quantity)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
		ON CONFLICT DO NOTHING`, itemRes, itemVar, itemLoc, itemQty); err != nil {
		return fmt.Errorf("record reservation items: %w", err)
	}
	return nil
}

// insertLedger appends rows that are not there yet and moves the stock by
// the ones it inserted.
func (s *Store) insertLedger(ctx context.Context, tx pgx.Tx, rows []ledgerRow) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	var (
		ops, keys, vars, locs = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		oh, rs, cm            = make([]int64, n), make([]int64, n), make([]int64, n)
		res, cus              = make([]*string, n), make([]string, n)
		eps                   = make([]*int64, n)
		sids                  = make([]*string, n)
		ats                   = make([]time.Time, n)
	)
	for i, r := range rows {
		ops[i], keys[i], vars[i], locs[i] = string(r.op), r.key, r.variant, r.location
		oh[i], rs[i], cm[i] = r.delta.OnHand, r.delta.Reserved, r.delta.Committed
		if r.reservation != "" {
			id := r.reservation
			res[i] = &id
		}
		cus[i], eps[i], sids[i], ats[i] = r.custom, r.epoch, r.streamID, r.at
	}
	inserted, err := tx.Query(ctx, `
		INSERT INTO ledger (op, change_key, variant_id, location, on_hand_delta, reserved_delta, committed_delta,
			reservation_id, customer_id, epoch, stream_id, changed_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
			$8::text[], $9::text[], $10::bigint[], $11::text[], $12::timestamptz[])
		ON CONFLICT DO NOTHING
		RETURNING variant_id, location, on_hand_delta, reserved_delta, committed_delta`,
		ops, keys, vars, locs, oh, rs, cm, res, cus, eps, sids, ats)
	if err != nil {
		return fmt.Errorf("append to the ledger: %w", err)
	}
	type loc struct{ variant, location string }
	moved := map[loc]domain.Counters{}
	for inserted.Next() {
		var k loc
		var d domain.Counters
		if err := inserted.Scan(&k.variant, &k.location, &d.OnHand, &d.Reserved, &d.Committed); err != nil {
			inserted.Close()
			return err
		}
		moved[k] = moved[k].Add(d)
	}
	inserted.Close()
	if err := inserted.Err(); err != nil {
		return fmt.Errorf("append to the ledger: %w", err)
	}
	if len(moved) == 0 {
		return nil
	}
	// Rows are updated in one order everywhere, so concurrent writers
	// cannot deadlock.
	keysSorted := make([]loc, 0, len(moved))
	for k := range moved {
		keysSorted = append(keysSorted, k)
	}
	slices.SortFunc(keysSorted, func(a, b loc) int {
		return cmp.Or(cmp.Compare(a.variant, b.variant), cmp.Compare(a.location, b.location))
	})
	var (
		sv, sl     []string
		so, sr, sc []int64
	)
	for _, k := range keysSorted {
		d := moved[k]
		sv, sl, so, sr, sc = append(sv, k.variant), append(sl, k.location), append(so, d.OnHand), append(sr, d.Reserved), append(sc, d.Committed)
	}
	// The rows are created or locked first, in that order, and moved after:
	// PostgreSQL checks an upsert's proposed row against stock_never_oversold
	// before it finds the existing one, so the deltas cannot ride on it.
	if _, err := tx.Exec(ctx, `
		INSERT INTO stock (variant_id, location)
		SELECT v, l FROM unnest($1::text[], $2::text[]) AS t(v, l) ORDER BY v, l
		ON CONFLICT (variant_id, location) DO UPDATE SET updated_at = now()`, sv, sl); err != nil {
		return fmt.Errorf("lock stock: %w", err)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE stock SET
			on_hand = stock.on_hand + d.o,
			reserved = stock.reserved + d.r,
			committed = stock.committed + d.c,
			updated_at = now()
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) AS d(v, l, o, r, c)
		WHERE stock.variant_id = d.v AND stock.location = d.l`, sv, sl, so, sr, sc); err != nil {
		return fmt.Errorf("move stock: %w", err)
	}
	return nil
}

// publish tells consumers each variant's latest state, once per batch and
// only when it is newer than what they were told: stock.changed always,
// and stock.depleted when nothing is left to reserve and something was
// before.
func (s *Store) publish(ctx context.Context, tx pgx.Tx, latest map[string]domain.ChangeLine) error {
	if len(latest) == 0 {
		return nil
	}
	ids := make([]string, 0, len(latest))
	for v := range latest {
		ids = append(ids, v)
	}
	slices.Sort(ids)
	vers, avails := make([]int64, len(ids)), make([]int64, len(ids))
	for i, v := range ids {
		vers[i], avails[i] = latest[v].Version, latest[v].Totals.Available()
	}
	// published_version moves only forward; the rows returned are those
	// whose state consumers had not heard yet, with what they heard before.
	rows, err := tx.Query(ctx, `
		WITH input AS (
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(variant_id, version, available)
		), previous AS (
			SELECT v.variant_id, v.published_available FROM variants v JOIN input USING (variant_id) FOR UPDATE OF v
		), upserted AS (
			INSERT INTO variants (variant_id, version, published_version, published_available)
			SELECT variant_id, version, version, available FROM input
			ON CONFLICT (variant_id) DO UPDATE SET
				version = greatest(variants.version, excluded.version),
				published_version = excluded.published_version,
				published_available = excluded.published_available
			WHERE variants.published_version < excluded.published_version
			RETURNING variant_id
		)
		SELECT u.variant_id, p.published_available FROM upserted u LEFT JOIN previous p USING (variant_id)`,
		ids, vers, avails)
	if err != nil {
		return fmt.Errorf("record published versions: %w", err)
	}
	var envs []events.Envelope
	for rows.Next() {
		var v string
		var before *int64
		if err := rows.Scan(&v, &before); err != nil {
			rows.Close()
			return err
		}
		l := latest[v]
		evs, err := stockEvents(v, l.Totals, l.Version, before)
		if err != nil {
			rows.Close()
			return err
		}
		envs = append(envs, evs...)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("record published versions: %w", err)
	}
	if len(envs) == 0 {
		return nil
	}
	return events.Add(ctx, tx, s.namespace, envs...)
}

// stockEvents are the events that tell a variant's new state, given what
// consumers were told before (nil: nothing).
func stockEvents(variant string, totals domain.Counters, version int64, before *int64) ([]events.Envelope, error) {
	data := domain.NewStockEvent(variant, totals, version)
	changed, err := events.New(source, domain.EventStockChanged, variant, data)
	if err != nil {
		return nil, err
	}
	out := []events.Envelope{changed}
	if data.Available <= 0 && (before == nil || *before > 0) {
		depleted, err := events.New(source, domain.EventStockDepleted, variant, data)
		if err != nil {
			return nil, err
		}
		out = append(out, depleted)
	}
	return out, nil
}
