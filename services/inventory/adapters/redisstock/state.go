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

// State is what Redis says about the generation of its state.
type State struct {
	// Present reports whether the epoch key exists.
	Present bool
	// Epoch is the generation the last rebuild loaded.
	Epoch int64
	// RunID is the Redis run id the last rebuild loaded into, and
	// ServerRunID the server's run id now: they differ after a restart
	// (even one that reloaded a snapshot) or a failover, either of which
	// may have lost changes.
	RunID, ServerRunID string
}

// Whole reports whether the state can be trusted for the ledger's epoch.
func (s State) Whole(ledgerEpoch int64) bool {
	return s.Present && s.Epoch == ledgerEpoch && s.RunID == s.ServerRunID && s.RunID != ""
}

// State reads the epoch key and the server's run id.
func (s *Store) State(ctx context.Context) (State, error) {
	pipe := s.rdb.Pipeline()
	epoch := pipe.Get(ctx, s.keys[0])
	info := pipe.Info(ctx, "server")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return State{}, transportError(err)
	}
	var st State
	st.ServerRunID = runID(info.Val())
	if v, err := epoch.Result(); err == nil {
		st.Present = true
		n, rest, _ := strings.Cut(v, ":")
		st.Epoch, _ = strconv.ParseInt(n, 10, 64)
		st.RunID = rest
		s.gen.Store(st.Epoch)
	}
	return st, nil
}

// runID finds run_id in the text of INFO server.
func runID(info string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	return ""
}

// Dedicated returns a client of its own for the state, configured like
// shared, whose every new connection first checks that the epoch key was
// written by the Redis server it reaches, and retires it otherwise. After a
// restart every connection is new, so a Redis that came back with an old
// state (from AOF or RDB) refuses every script before the first one runs,
// instead of selling from that state until the guard looks.
func (s *Store) Dedicated(shared *redis.Client) *redis.Client {
	opt := *shared.Options()
	opt.OnConnect = s.fence
	rdb := redis.NewClient(&opt)
	s.rdb = rdb
	return rdb
}

// fence retires an epoch key that another run of the server wrote.
func (s *Store) fence(ctx context.Context, cn *redis.Conn) error {
	v, err := cn.Get(ctx, s.keys[0]).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return err
	}
	info, err := cn.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	if _, loadedInto, _ := strings.Cut(v, ":"); loadedInto == runID(info) {
		return nil
	}
	err = cn.Rename(ctx, s.keys[0], s.base+"retired").Err()
	if err != nil && strings.Contains(err.Error(), "no such key") {
		return nil
	}
	return err
}

// Invalidate removes the epoch key: from then on every script refuses, so
// nothing changes the state until a rebuild loads a new one. A script that
// is running finishes first, since Redis runs one command at a time. The
// key is kept as retired, which tells DropOldGenerations that a generation
// was left behind.
func (s *Store) Invalidate(ctx context.Context) error {
	err := s.rdb.Rename(ctx, s.keys[0], s.base+"retired").Err()
	if err != nil && strings.Contains(err.Error(), "no such key") {
		return nil
	}
	return transportError(err)
}

// Load writes snap as a new generation beside the old ones and then sets
// the epoch, so that scripts accept calls again, in that generation. It
// fails, leaving the state refused, if Redis restarted meanwhile.
// retention bounds how long ended reservations in snap are kept for
// retries, counted from their end. Older generations stay until
// DropOldGenerations removes them.
func (s *Store) Load(ctx context.Context, snap domain.Snapshot, now time.Time, retention time.Duration) error {
	before, err := s.State(ctx)
	if err != nil {
		return err
	}
	if before.ServerRunID == "" {
		return errors.New("redis did not report its run_id")
	}
	token := randomToken()
	if err := s.rdb.Set(ctx, s.base+"loading", token, 0).Err(); err != nil {
		return transportError(err)
	}
	// Each rebuild moves the ledger's epoch on before it loads, so this
	// generation is empty even if an earlier load failed halfway.
	prefix := s.genPrefix(snap.Epoch)
	b := &batch{ctx: ctx, pipe: s.rdb.Pipeline()}
	seen := make(map[string]bool, len(snap.Versions))
	for _, row := range snap.Stock {
		l := row.Location
		b.add(func(p redis.Pipeliner) {
			p.HSet(ctx, prefix+"v:"+row.VariantID, l+":oh", row.OnHand, l+":rs", row.Reserved, l+":cm", row.Committed, l+":as", row.AdjustSeq)
		})
		if !seen[row.VariantID] {
			seen[row.VariantID] = true
			ver := snap.Versions[row.VariantID]
			b.add(func(p redis.Pipeliner) { p.HSet(ctx, prefix+"v:"+row.VariantID, "ver", ver) })
		}
	}
	for _, r := range snap.Reservations {
		var keep time.Duration
		if r.Status != domain.StatusHeld {
			keep = retention - now.Sub(r.EndedAt)
			if keep < time.Second {
				continue
			}
		}
		placements := make([]string, len(r.Items))
		for i, p := range r.Items {
			placements[i] = p.VariantID + "," + p.Location + "," + strconv.FormatInt(p.Quantity, 10)
		}
		fields := []any{"st", string(r.Status), "cus", r.CustomerID, "key", r.IdempotencyKey,
			"exp", r.ExpiresAt.UnixMilli(), "c", r.CreatedAt.UnixMilli(), "it", strings.Join(placements, ";"),
			"fp", domain.Fingerprint(r.CustomerID, r.Requested())}
		if !r.EndedAt.IsZero() {
			fields = append(fields, "e", r.EndedAt.UnixMilli())
		}
		rk, kk := prefix+"r:"+r.ID, prefix+"k:"+r.IdempotencyKey
		b.add(func(p redis.Pipeliner) {
			p.HSet(ctx, rk, fields...)
			if keep > 0 {
				p.PExpire(ctx, rk, keep)
			} else {
				p.ZAdd(ctx, prefix+"expiry", redis.Z{Score: float64(r.ExpiresAt.UnixMilli()), Member: r.ID})
			}
			p.Set(ctx, kk, r.ID, keep)
		})
	}
	for _, t := range snap.Tallies {
		b.add(func(p redis.Pipeliner) { p.HSet(ctx, prefix+"c:"+t.CustomerID, t.VariantID, t.Units) })
	}
	if err := b.flush(); err != nil {
		return err
	}
	s.gen.Store(snap.Epoch)
	if err := s.EnsureGroup(ctx); err != nil {
		return err
	}
	out, tag, err := s.run(ctx, s.s.loadDone, now, token, fmt.Sprintf("%d:%s", snap.Epoch, before.ServerRunID))
	if err != nil {
		return err
	}
	if tag != "OK" {
		return fmt.Errorf("%w: redis lost the state while it was being loaded (%v)", domain.ErrUnavailable, out)
	}
	return nil
}

// DropOldGenerations deletes the keys of every generation but the current
// one, if a rebuild retired one (a Redis that restarted empty has none).
// It walks the whole keyspace in small steps, so it runs in the background
// after a rebuild rather than inside it.
func (s *Store) DropOldGenerations(ctx context.Context) error {
	n, err := s.rdb.Exists(ctx, s.base+"retired").Result()
	if err != nil || n == 0 {
		return transportError(err)
	}
	keep := s.Prefix()
	if err := s.unlinkMatching(ctx, s.base+"g*", func(k string) bool { return !strings.HasPrefix(k, keep) }); err != nil {
		return err
	}
	return transportError(s.rdb.Del(ctx, s.base+"retired").Err())
}

// unlinkMatching deletes the keys matching pattern that doomed accepts.
func (s *Store) unlinkMatching(ctx context.Context, pattern string, doomed func(string) bool) error {
	// A small COUNT keeps each SCAN call short on a large shared keyspace.
	iter := s.rdb.Scan(ctx, 0, pattern, scanCount).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if k := iter.Val(); doomed(k) {
			batch = append(batch, k)
		}
		if len(batch) == loadChunk {
			if err := s.rdb.Unlink(ctx, batch...).Err(); err != nil {
				return transportError(err)
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return transportError(err)
	}
	if len(batch) > 0 {
		return transportError(s.rdb.Unlink(ctx, batch...).Err())
	}
	return nil
}

// scanCount is how many keys one SCAN call looks at.
const scanCount = 200

// batch sends commands in pipelines of loadChunk.
type batch struct {
	ctx  context.Context
	pipe redis.Pipeliner
	n    int
	err  error
}

func (b *batch) add(fn func(redis.Pipeliner)) {
	if b.err != nil {
		return
	}
	fn(b.pipe)
	if b.n++; b.n >= loadChunk {
		b.err = b.flush()
	}
}

func (b *batch) flush() error {
	if b.err != nil {
		return b.err
	}
	b.n = 0
	if b.pipe.Len() == 0 {
		return nil
	}
	_, err := b.pipe.Exec(b.ctx)
	return transportError(err)
}
