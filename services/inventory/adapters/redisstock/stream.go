package redisstock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/services/inventory/domain"
)

// Entry is one stream entry: a change, or the reason it could not be read.
type Entry struct {
	ID     string
	Change domain.Change
	// Err is set for an entry that cannot be parsed; it is acknowledged and
	// logged rather than retried forever.
	Err error
}

// EnsureGroup creates the ledger writers' consumer group (and the stream)
// if missing, reading from the stream's first entry.
func (s *Store) EnsureGroup(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.StreamKey(), group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return transportError(err)
	}
	return nil
}

// Read delivers up to count entries no writer has seen to consumer, waiting
// up to block for the first.
func (s *Store) Read(ctx context.Context, consumer string, count int, block time.Duration) ([]Entry, error) {
	streams, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: []string{s.StreamKey(), ">"}, Count: int64(count), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil && (strings.HasPrefix(err.Error(), "NOGROUP") || strings.HasPrefix(err.Error(), "UNBLOCKED")) {
		// No generation was loaded yet, or the one being read was
		// replaced (a rebuild creates the next one with its group).
		return nil, domain.ErrNotReady
	}
	if err != nil {
		return nil, transportError(err)
	}
	var out []Entry
	for _, st := range streams {
		out = append(out, s.entries(st.Messages)...)
	}
	return out, nil
}

// Claim takes over up to count entries that another consumer read more than
// minIdle ago and never acknowledged — a writer that died mid-batch — from
// cursor on; it returns them and the cursor of the next call ("0-0" once
// the pending list was walked through).
func (s *Store) Claim(ctx context.Context, consumer string, minIdle time.Duration, cursor string, count int) ([]Entry, string, error) {
	msgs, next, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: s.StreamKey(), Group: group, Consumer: consumer, MinIdle: minIdle, Start: cursor, Count: int64(count),
	}).Result()
	if err != nil && strings.HasPrefix(err.Error(), "NOGROUP") {
		return nil, "0-0", domain.ErrNotReady
	}
	if err != nil {
		return nil, "0-0", transportError(err)
	}
	return s.entries(msgs), next, nil
}

// Ack acknowledges entries the ledger recorded and trims the stream below
// the oldest entry any writer still holds.
func (s *Store) Ack(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.rdb.XAck(ctx, s.StreamKey(), group, ids...).Err(); err != nil {
		return transportError(err)
	}
	// Entries below the oldest pending one are acknowledged, and so are all
	// up to the last one acknowledged here when none is pending: XREADGROUP
	// hands entries out in order, so everything older was delivered.
	minID := maxID(ids)
	if p, err := s.rdb.XPending(ctx, s.StreamKey(), group).Result(); err == nil && p.Count > 0 {
		minID = p.Lower
	} else if err != nil {
		return nil // trimming waits for the next batch
	}
	return transportError(s.rdb.XTrimMinIDApprox(ctx, s.StreamKey(), minID, 0).Err())
}

// All reads every entry in the stream, acknowledged or not: what a rebuild
// drains into the ledger before it replaces the state.
func (s *Store) All(ctx context.Context) ([]Entry, error) {
	var out []Entry
	start := "-"
	for {
		msgs, err := s.rdb.XRangeN(ctx, s.StreamKey(), start, "+", loadChunk).Result()
		if err != nil {
			return nil, transportError(err)
		}
		out = append(out, s.entries(msgs)...)
		if len(msgs) < loadChunk {
			return out, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

// Length is the number of entries in the stream, and the number delivered
// to a writer and not yet acknowledged.
func (s *Store) Length(ctx context.Context) (length, pending int64, err error) {
	pipe := s.rdb.Pipeline()
	l := pipe.XLen(ctx, s.StreamKey())
	p := pipe.XPending(ctx, s.StreamKey(), group)
	_, _ = pipe.Exec(ctx)
	if err := l.Err(); err != nil {
		return 0, 0, transportError(err)
	}
	if p.Err() == nil {
		pending = p.Val().Count
	}
	return l.Val(), pending, nil
}

func (s *Store) entries(msgs []redis.XMessage) []Entry {
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		c, err := parseChange(m)
		out = append(out, Entry{ID: m.ID, Change: c, Err: err})
	}
	return out
}

// parseChange reads a stream entry written by the scripts (see finish and
// settle in prelude.lua and the end of reserve.lua).
func parseChange(m redis.XMessage) (domain.Change, error) {
	f := func(k string) string { s, _ := m.Values[k].(string); return s }
	c := domain.Change{StreamID: m.ID, Op: domain.Op(f("op")), At: millis(f("t"))}
	var err error
	if c.Epoch, err = strconv.ParseInt(f("ep"), 10, 64); err != nil {
		return c, fmt.Errorf("entry %s: epoch %q", m.ID, f("ep"))
	}
	for _, part := range strings.Split(f("it"), ";") {
		fs := strings.Split(part, ",")
		if len(fs) != 7 {
			return c, fmt.Errorf("entry %s: line %q", m.ID, part)
		}
		var n [5]int64
		for i := range n {
			if n[i], err = strconv.ParseInt(fs[2+i], 10, 64); err != nil {
				return c, fmt.Errorf("entry %s: line %q: %w", m.ID, part, err)
			}
		}
		c.Lines = append(c.Lines, domain.ChangeLine{
			VariantID: fs[0], Location: fs[1], Quantity: n[0],
			Totals: domain.Counters{OnHand: n[1], Reserved: n[2], Committed: n[3]}, Version: n[4],
		})
	}
	switch c.Op {
	case domain.OpAdjustment:
		if c.AdjustSeq, err = strconv.ParseInt(f("seq"), 10, 64); err != nil {
			return c, fmt.Errorf("entry %s: seq %q", m.ID, f("seq"))
		}
	case domain.OpReservation, domain.OpCommit, domain.OpRelease, domain.OpExpiry:
		r := domain.Reservation{
			ID: f("res"), CustomerID: f("cus"), IdempotencyKey: f("key"), Status: domain.StatusHeld,
			ExpiresAt: millis(f("exp")), CreatedAt: millis(f("c")),
		}
		if st, ends := c.Op.Ends(); ends {
			r.Status, r.EndedAt = st, c.At
		}
		for _, l := range c.Lines {
			r.Items = append(r.Items, domain.Placement{VariantID: l.VariantID, Location: l.Location, Quantity: l.Quantity})
		}
		if !domain.ValidReservationID(r.ID) {
			return c, fmt.Errorf("entry %s: reservation %q", m.ID, r.ID)
		}
		c.Reservation = r
	default:
		return c, fmt.Errorf("entry %s: op %q", m.ID, c.Op)
	}
	return c, nil
}

// maxID returns the greatest of stream ids.
func maxID(ids []string) string {
	best := ids[0]
	for _, id := range ids[1:] {
		if compareIDs(id, best) > 0 {
			best = id
		}
	}
	return best
}

// compareIDs orders stream ids ("ms-seq").
func compareIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	an, _ := strconv.ParseUint(am, 10, 64)
	bn, _ := strconv.ParseUint(bm, 10, 64)
	if an != bn {
		if an < bn {
			return -1
		}
		return 1
	}
	asn, _ := strconv.ParseUint(as, 10, 64)
	bsn, _ := strconv.ParseUint(bs, 10, 64)
	switch {
	case asn < bsn:
		return -1
	case asn > bsn:
		return 1
	}
	return 0
}

// CaughtUp reports whether the ledger writers have recorded and
// acknowledged every entry of the stream.
func (s *Store) CaughtUp(ctx context.Context) (bool, error) {
	groups, err := s.rdb.XInfoGroups(ctx, s.StreamKey()).Result()
	if err != nil {
		return false, transportError(err)
	}
	for _, g := range groups {
		if g.Name == group {
			return g.Pending == 0 && g.Lag == 0, nil
		}
	}
	return false, nil
}
