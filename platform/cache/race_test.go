package cache

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStaleFillIsRefused plays the stale-fill race: a reader loads version 1
// and stalls, the record changes to version 2 and is invalidated, then the
// reader finishes. Version 1 must not come back in any tier or instance.
func TestStaleFillIsRefused(t *testing.T) {
	tests := []struct {
		name string
		// otherInstance: the slow reader runs in a second process, not in the
		// one that changed the record and called Invalidate.
		otherInstance bool
		// broadcastLate: the second process hears of the change only after
		// its slow fill (its Redis view must protect it meanwhile).
		broadcastLate bool
		// redisDown: only memory can refuse the fill.
		redisDown bool
		// purge: memory is purged (as after a bulk load) instead of the
		// record being invalidated.
		purge bool
	}{
		{name: "same instance"},
		{name: "other instance, broadcast before the fill", otherInstance: true},
		{name: "other instance, broadcast after the fill", otherInstance: true, broadcastLate: true},
		{name: "redis down", redisDown: true},
		{name: "redis down, memory purged instead", redisDown: true, purge: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var opts Options
			if tt.redisDown {
				e.rdb = deadClient(t)
				opts.RedisTimeout = deadTimeout
			}
			writer := newCache(t, e, opts)
			slow := writer
			if tt.otherInstance {
				slow = newCache(t, e, opts)
			}
			const key = "prod_1"
			src := newDatabase()
			src.set(key, 1)
			ctx := context.Background()

			read, release := make(chan struct{}), make(chan struct{})
			slowLoad := func(context.Context) (product, int64, error) {
				p, v, err := src.read(key)
				close(read)
				<-release
				return p, v, err
			}
			type result struct {
				p   product
				err error
			}
			first := make(chan result, 1)
			go func() {
				p, err := slow.Get(ctx, key, slowLoad)
				first <- result{p, err}
			}()
			<-read

			src.set(key, 2)
			if tt.purge {
				slow.PurgeLocal()
			} else if err := writer.Invalidate(ctx, key, 2); tt.redisDown != (err != nil) {
				t.Fatalf("Invalidate error = %v with redis down = %v", err, tt.redisDown)
			}
			if tt.otherInstance && !tt.broadcastLate {
				slow.InvalidateLocal(key, 2)
			}

			// A read that begins after the invalidation completed joins the
			// slow fetch if it is quick enough; it must get version 2 either way.
			var late chan result
			if !tt.broadcastLate {
				late = make(chan result, 1)
				go func() {
					p, err := slow.Get(ctx, key, src.loader(key))
					late <- result{p, err}
				}()
				time.Sleep(20 * time.Millisecond) // give it time to join; not needed for correctness
			}
			close(release)
			if r := <-first; r.err != nil {
				t.Fatalf("slow Get: %v", r.err)
			}
			if late != nil {
				if r := <-late; r.err != nil || r.p.Version != 2 {
					t.Fatalf("Get begun after the invalidation = %+v, %v; want version 2", r.p, r.err)
				}
			}

			if le, ok := localEntryOf(slow, key); ok && le.present && le.version < 2 {
				t.Fatalf("memory of the slow instance holds version %d", le.version)
			}
			if tt.broadcastLate {
				slow.InvalidateLocal(key, 2)
			}
			if !tt.redisDown {
				// The tombstone, or version 2 if the late read filled it since.
				if got := remoteEntryOf(t, e, key); got["v"] != "2" || got["d"] != "" && !strings.Contains(got["d"], `"version":2`) {
					t.Fatalf("redis entry = %v; want version 2", got)
				}
				if n := count(t, slow.m.staleRemote); n != 1 {
					t.Fatalf("stale fills refused by redis = %d, want 1", n)
				}
			} else if n := count(t, slow.m.staleLocal); n != 1 {
				t.Fatalf("stale fills refused by memory = %d, want 1", n)
			}

			instances := []*Cache[product]{slow, writer}
			if !tt.redisDown {
				instances = append(instances, newCache(t, e, Options{}))
			}
			for i, c := range instances {
				for range 2 { // a fill, then a hit
					if p := mustGet(t, c, key, src.loader(key)); p.Version != 2 {
						t.Fatalf("instance %d served version %d after the invalidation", i, p.Version)
					}
				}
			}
		})
	}
}

// TestConcurrentGetInvalidateNeverGoesBack runs readers against two
// instances while writers change records and invalidate them (Invalidate on
// one instance, InvalidateLocal on the other, as the broadcast would). A read
// that begins after an invalidation completed must not return an older
// version.
func TestConcurrentGetInvalidateNeverGoesBack(t *testing.T) {
	tests := []struct {
		name      string
		localSize int
	}{
		{"memory holds every key", 1000},
		{"memory smaller than the key set", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			a := newCache(t, e, Options{LocalSize: tt.localSize})
			b := newCache(t, e, Options{LocalSize: tt.localSize})
			instances := []*Cache[product]{a, b}
			const nkeys = 8
			src := newDatabase()
			keys := make([]string, nkeys)
			for i := range keys {
				keys[i] = "prod_" + strconv.Itoa(i)
				src.set(keys[i], 1)
			}
			// completed[i] is the newest version whose invalidation has
			// finished on both instances.
			var completed [nkeys]atomic.Int64
			load := func(key string) func(context.Context) (product, int64, error) {
				return func(context.Context) (product, int64, error) {
					p, v, err := src.read(key)
					if rand.IntN(3) == 0 { // widen the window between read and fill
						time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
					}
					return p, v, err
				}
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var writers, readers sync.WaitGroup
			var done atomic.Bool
			var reads, violations atomic.Int64
			for range 2 {
				writers.Go(func() {
					for range 150 {
						i := rand.IntN(nkeys)
						v := src.bump(keys[i])
						if err := a.Invalidate(ctx, keys[i], v); err != nil {
							t.Errorf("Invalidate: %v", err)
							return
						}
						b.InvalidateLocal(keys[i], v)
						for {
							old := completed[i].Load()
							if v <= old || completed[i].CompareAndSwap(old, v) {
								break
							}
						}
						if rand.IntN(50) == 0 {
							b.PurgeLocal()
						}
						time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
					}
				})
			}
			for range 6 {
				readers.Go(func() {
					for !done.Load() {
						i := rand.IntN(nkeys)
						c := instances[rand.IntN(len(instances))]
						floor := completed[i].Load()
						p, err := c.Get(ctx, keys[i], load(keys[i]))
						if err != nil {
							t.Errorf("Get: %v", err)
							return
						}
						reads.Add(1)
						if p.Version < floor {
							violations.Add(1)
							t.Errorf("read of %s began after version %d was invalidated and returned version %d", keys[i], floor, p.Version)
						}
					}
				})
			}
			writers.Wait()
			done.Store(true)
			readers.Wait()
			t.Logf("%d reads, %d loads, %d violations; stale fills refused: redis %d+%d, memory %d+%d",
				reads.Load(), src.reads.Load(), violations.Load(),
				count(t, a.m.staleRemote), count(t, b.m.staleRemote), count(t, a.m.staleLocal), count(t, b.m.staleLocal))
		})
	}
}
