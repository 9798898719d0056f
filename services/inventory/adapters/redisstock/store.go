// Package redisstock keeps the inventory's live counters in Redis: stock per
// variant and location, reservations, idempotency keys, purchase tallies and
// the expiry schedule, changed only by Lua scripts that check and change
// them atomically and append every change to a Redis stream, from which the
// ledger writer moves them to PostgreSQL. An epoch key, set by a rebuild
// from the ledger, tells the scripts that the state is whole; without it
// they refuse.
package redisstock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/redisx"
	"github.com/mercato/mercato/services/inventory/domain"
)

// group is the consumer group of the ledger writers: every replica reads
// through it, so each entry goes to one of them.
const group = "ledger"

// loadChunk is how many commands a rebuild sends per pipeline round trip.
const loadChunk = 1000

// Store is the Redis side of the inventory. Its methods are safe for
// concurrent use.
type Store struct {
	rdb *redis.Client
	// base prefixes every key; the state of epoch N lives under
	// base + "gN:" (see prelude.lua).
	base string
	// keys are the KEYS of every script: the epoch key.
	keys []string
	// gen is the generation last seen whole or loaded.
	gen       atomic.Int64
	locations []string
	locArg    string
	s         scripts
	pipe      pipeliner
}

// New returns the store of the state under keys (the service's key
// builder); locations are the configured stock locations in the order
// reservations draw from them.
func New(rdb *redis.Client, keys redisx.Keys, locations []string) (*Store, error) {
	if err := domain.CheckLocations(locations); err != nil {
		return nil, err
	}
	s, err := loadScripts()
	if err != nil {
		return nil, err
	}
	// Everything lives under one sub-prefix, apart from the service's other
	// keys (idempotency records).
	base := keys.Key("state") + ":"
	return &Store{
		rdb:       rdb,
		base:      base,
		keys:      []string{base + "epoch"},
		locations: locations,
		locArg:    strings.Join(locations, ","),
		s:         s,
	}, nil
}

// Prefix is the prefix of every key of the current generation.
func (s *Store) Prefix() string { return s.genPrefix(s.gen.Load()) }

func (s *Store) genPrefix(gen int64) string { return s.base + "g" + strconv.FormatInt(gen, 10) + ":" }

// StreamKey is the current generation's ledger stream.
func (s *Store) StreamKey() string { return s.Prefix() + "ledger" }

// run runs script with the common arguments and extra ones, and returns its
// reply as a list whose first element is its tag.
func (s *Store) run(ctx context.Context, script *redis.Script, now time.Time, extra ...any) ([]any, string, error) {
	args := make([]any, 0, 3+len(extra))
	args = append(args, s.base, s.locArg, now.UnixMilli())
	args = append(args, extra...)
	v, err := s.eval(ctx, script, args)
	if err != nil {
		return nil, "", transportError(err)
	}
	out, ok := v.([]any)
	if !ok || len(out) == 0 {
		return nil, "", fmt.Errorf("redis script answered %T %v", v, v)
	}
	tag, _ := out[0].(string)
	if tag == "NOT_READY" {
		return nil, tag, domain.ErrNotReady
	}
	return out, tag, nil
}

// transportError marks failures to reach Redis as domain.ErrUnavailable;
// script errors (bugs) and the caller's own cancellation stay as they are.
func transportError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// A reply error is a bug in a script or its caller, except those that
	// say the server cannot serve right now (LOADING, BUSY, READONLY, ...).
	var rerr redis.Error
	if errors.As(err, &rerr) && (strings.HasPrefix(rerr.Error(), "ERR") || strings.HasPrefix(rerr.Error(), "WRONGTYPE")) {
		return fmt.Errorf("redis: %w", err)
	}
	return fmt.Errorf("%w: redis: %v", domain.ErrUnavailable, err)
}

// ReserveArgs is one reservation attempt.
type ReserveArgs struct {
	ID        string
	Request   domain.ReserveRequest
	Now       time.Time
	ExpiresAt time.Time
	// Limit is the purchase limit per customer and variant; 0 for none.
	Limit int64
	// Retention is how long an ended reservation stays for retries.
	Retention time.Duration
}

// Reserve holds every item of the request or none. existed reports that the
// idempotency key had made a reservation already, which is returned as it
// is now.
func (s *Store) Reserve(ctx context.Context, a ReserveArgs) (r domain.Reservation, existed bool, err error) {
	extra := make([]any, 0, 7+2*len(a.Request.Items))
	extra = append(extra, a.ID, a.ExpiresAt.UnixMilli(), a.Request.CustomerID, a.Limit, a.Request.IdempotencyKey,
		a.Request.Fingerprint(), a.Retention.Milliseconds())
	for _, it := range a.Request.Items {
		extra = append(extra, it.VariantID, it.Quantity)
	}
	out, tag, err := s.run(ctx, s.s.reserve, a.Now, extra...)
	if err != nil {
		return domain.Reservation{}, false, err
	}
	switch tag {
	case "OK", "EXISTS":
		r, err := parseReservation(out)
		return r, tag == "EXISTS", err
	case "KEY_REUSED":
		return domain.Reservation{}, false, domain.ErrKeyReused
	case "LIMIT":
		if len(out) < 4 {
			break
		}
		return domain.Reservation{}, false, &domain.PurchaseLimitError{VariantID: str(out[1]), Limit: num(out[2]), AlreadyHeld: num(out[3])}
	case "OUT":
		oos := &domain.OutOfStockError{}
		for i := 1; i+2 < len(out); i += 3 {
			oos.Shortages = append(oos.Shortages, domain.Shortage{VariantID: str(out[i]), Requested: num(out[i+1]), Available: max(num(out[i+2]), 0)})
		}
		return domain.Reservation{}, false, oos
	}
	return domain.Reservation{}, false, fmt.Errorf("reserve script answered %v", out)
}

// Prepared is the first step of a commit.
type Prepared struct {
	// Reservation is the reservation now; its status is committing when
	// prepared, otherwise what it already was.
	Reservation domain.Reservation
	// Epoch is the generation of the state it was prepared in.
	Epoch int64
}

// PrepareCommit fences a held reservation for its commit (see prepare.lua);
// a reservation in any other status is returned unchanged (or just expired).
func (s *Store) PrepareCommit(ctx context.Context, id string, now time.Time, grace, retention time.Duration) (Prepared, error) {
	out, tag, err := s.run(ctx, s.s.prepare, now, id, grace.Milliseconds(), retention.Milliseconds())
	if err != nil {
		return Prepared{}, err
	}
	switch tag {
	case "NOT_FOUND":
		return Prepared{}, domain.ErrNotFound
	case "RES":
		r, err := parseReservation(out)
		return Prepared{Reservation: r}, err
	case "PREPARED":
		r, err := parseReservation(out)
		if err != nil || len(out) < 10 {
			return Prepared{}, fmt.Errorf("prepare script answered %v: %v", out, err)
		}
		ep, err := strconv.ParseInt(str(out[9]), 10, 64)
		return Prepared{Reservation: r, Epoch: ep}, err
	}
	return Prepared{}, fmt.Errorf("prepare script answered %v", out)
}

// ApplyCommit moves a reservation the ledger recorded as sold to committed;
// the returned status tells what Redis held if it was not held or
// committing.
func (s *Store) ApplyCommit(ctx context.Context, id string, now time.Time, retention time.Duration) (domain.Reservation, error) {
	return s.reservationStep(ctx, s.s.commit, id, now, retention.Milliseconds())
}

// AbortCommit expires a reservation whose commit the ledger did not record.
func (s *Store) AbortCommit(ctx context.Context, id string, now time.Time, retention time.Duration) (domain.Reservation, error) {
	return s.reservationStep(ctx, s.s.abort, id, now, retention.Milliseconds())
}

// Release gives a held reservation's units back; other statuses are
// returned unchanged.
func (s *Store) Release(ctx context.Context, id string, now time.Time, retention time.Duration) (domain.Reservation, error) {
	return s.reservationStep(ctx, s.s.release, id, now, retention.Milliseconds())
}

// Record reads a reservation and the epoch of the state holding it.
func (s *Store) Record(ctx context.Context, id string, now time.Time) (domain.Reservation, int64, error) {
	out, tag, err := s.run(ctx, s.s.record, now, id)
	if err != nil {
		return domain.Reservation{}, 0, err
	}
	if tag == "NOT_FOUND" {
		return domain.Reservation{}, 0, domain.ErrNotFound
	}
	r, err := parseReservation(out)
	if err != nil || len(out) < 10 {
		return domain.Reservation{}, 0, fmt.Errorf("record script answered %v: %v", out, err)
	}
	ep, err := strconv.ParseInt(str(out[9]), 10, 64)
	return r, ep, err
}

func (s *Store) reservationStep(ctx context.Context, script *redis.Script, id string, now time.Time, extra ...any) (domain.Reservation, error) {
	out, tag, err := s.run(ctx, script, now, append([]any{id}, extra...)...)
	if err != nil {
		return domain.Reservation{}, err
	}
	switch tag {
	case "NOT_FOUND":
		return domain.Reservation{}, domain.ErrNotFound
	case "RES":
		return parseReservation(out)
	}
	return domain.Reservation{}, fmt.Errorf("script answered %v", out)
}

// SweepResult is what one sweep did.
type SweepResult struct {
	Epoch   int64
	Looked  int
	Expired int
	// InDoubt are reservations whose commit started more than the grace
	// ago and never finished.
	InDoubt []string
}

// Sweep expires up to limit reservations whose time passed.
func (s *Store) Sweep(ctx context.Context, now time.Time, limit int, grace, retention time.Duration) (SweepResult, error) {
	out, _, err := s.run(ctx, s.s.sweep, now, limit, grace.Milliseconds(), retention.Milliseconds())
	if err != nil {
		return SweepResult{}, err
	}
	if len(out) < 4 {
		return SweepResult{}, fmt.Errorf("sweep script answered %v", out)
	}
	ep, err := strconv.ParseInt(str(out[1]), 10, 64)
	res := SweepResult{Epoch: ep, Looked: int(num(out[2])), Expired: int(num(out[3]))}
	for _, v := range out[4:] {
		res.InDoubt = append(res.InDoubt, str(v))
	}
	return res, err
}

// Stock reads variants' counters at every configured location.
func (s *Store) Stock(ctx context.Context, now time.Time, variants []string) ([]domain.VariantStock, error) {
	extra := make([]any, len(variants))
	for i, v := range variants {
		extra[i] = v
	}
	out, _, err := s.run(ctx, s.s.stock, now, extra...)
	if err != nil {
		return nil, err
	}
	per := 4*len(s.locations) + 1
	if len(out) != 1+per*len(variants) {
		return nil, fmt.Errorf("stock script answered %d values for %d variants", len(out), len(variants))
	}
	res := make([]domain.VariantStock, len(variants))
	for i, v := range variants {
		base := 1 + i*per
		vs := domain.VariantStock{VariantID: v, Version: num(out[base+per-1])}
		for j, l := range s.locations {
			c := domain.Counters{OnHand: num(out[base+4*j]), Reserved: num(out[base+4*j+1]), Committed: num(out[base+4*j+2])}
			// A count in progress caps what is promised (see avail in
			// prelude.lua); it shows as a lower on_hand until recorded.
			if pending := num(out[base+4*j+3]); pending >= 0 && pending < c.OnHand {
				c.OnHand = pending
			}
			vs.Locations = append(vs.Locations, domain.LocationStock{Location: l, Counters: c})
		}
		res[i] = vs
	}
	return res, nil
}

// BeginAdjust settles rows with the ledger and marks the changing ones in
// progress, or refuses them all with a *domain.StockConflictError. It
// returns the epoch of the state. The caller holds the rows' ledger locks.
func (s *Store) BeginAdjust(ctx context.Context, now time.Time, rows []domain.AdjustRow) (int64, error) {
	extra := make([]any, 0, 6*len(rows))
	for _, r := range rows {
		extra = append(extra, r.VariantID, r.Location, r.Seq, r.OnHand, r.PrevSeq, r.PrevOnHand)
	}
	out, tag, err := s.run(ctx, s.s.adjustBegin, now, extra...)
	if err != nil {
		return 0, err
	}
	switch tag {
	case "OK":
		if len(out) < 2 {
			break
		}
		return strconv.ParseInt(str(out[1]), 10, 64)
	case "CONFLICT":
		c := &domain.StockConflictError{}
		for i := 1; i+2 < len(out); i += 3 {
			c.Conflicts = append(c.Conflicts, domain.HeldConflict{Index: int(num(out[i])), Reserved: num(out[i+1]), Committed: num(out[i+2])})
		}
		return 0, c
	}
	return 0, fmt.Errorf("adjust_begin answered %v", out)
}

// ApplyAdjust sets the recorded counts of rows.
func (s *Store) ApplyAdjust(ctx context.Context, now time.Time, rows []domain.AdjustRow) error {
	extra := make([]any, 0, 4*len(rows))
	for _, r := range rows {
		if r.Changes() {
			extra = append(extra, r.VariantID, r.Location, r.Seq, r.OnHand)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	_, _, err := s.run(ctx, s.s.adjustApply, now, extra...)
	return err
}

// AbortAdjust drops the in-progress marks of rows the ledger did not
// record.
func (s *Store) AbortAdjust(ctx context.Context, now time.Time, rows []domain.AdjustRow) error {
	extra := make([]any, 0, 3*len(rows))
	for _, r := range rows {
		if r.Changes() {
			extra = append(extra, r.VariantID, r.Location, r.Seq)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	_, _, err := s.run(ctx, s.s.adjustAbort, now, extra...)
	return err
}

// SettleAdjust brings one variant and location up to the ledger's last
// adjustment; the caller holds the row's ledger lock.
func (s *Store) SettleAdjust(ctx context.Context, now time.Time, row domain.StockRow) error {
	_, _, err := s.run(ctx, s.s.adjustSettle, now, row.VariantID, row.Location, row.AdjustSeq, row.OnHand)
	return err
}

// PendingAdjustments lists up to limit variant-locations whose adjustment
// was marked in progress before before.
func (s *Store) PendingAdjustments(ctx context.Context, before time.Time, limit int) ([]domain.StockRow, error) {
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.Prefix() + "adj", ByScore: true, Start: "-inf", Stop: strconv.FormatInt(before.UnixMilli(), 10), Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, transportError(err)
	}
	out := make([]domain.StockRow, 0, len(members))
	for _, m := range members {
		v, l, ok := strings.Cut(m, "|")
		if ok {
			out = append(out, domain.StockRow{VariantID: v, Location: l})
		}
	}
	return out, nil
}

// parseReservation reads a reservation as the scripts return it (see
// reply in prelude.lua), starting after the tag.
func parseReservation(out []any) (domain.Reservation, error) {
	if len(out) < 9 {
		return domain.Reservation{}, fmt.Errorf("reservation reply too short: %v", out)
	}
	r := domain.Reservation{
		ID:             str(out[1]),
		Status:         domain.Status(str(out[2])),
		ExpiresAt:      millis(str(out[3])),
		CreatedAt:      millis(str(out[4])),
		CustomerID:     str(out[6]),
		IdempotencyKey: str(out[7]),
	}
	if e := millis(str(out[8])); e.UnixMilli() > 0 {
		r.EndedAt = e
	}
	items, err := parsePlacements(str(out[5]))
	r.Items = items
	return r, err
}

// parsePlacements reads "variant,location,quantity;...".
func parsePlacements(s string) ([]domain.Placement, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ";")
	out := make([]domain.Placement, 0, len(parts))
	for _, p := range parts {
		f := strings.Split(p, ",")
		if len(f) < 3 {
			return nil, fmt.Errorf("placement %q", p)
		}
		q, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("placement %q: %w", p, err)
		}
		out = append(out, domain.Placement{VariantID: f[0], Location: f[1], Quantity: q})
	}
	return out, nil
}

func millis(s string) time.Time {
	ms, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(ms).UTC()
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return fmt.Sprint(v)
}

func num(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

// randomToken returns an unguessable token.
func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
