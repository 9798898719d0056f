package cache

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/platformtest"
)

func TestNewRejectsBadSettings(t *testing.T) {
	e := newEnv(t)
	log := platformtest.Logger(t)
	tests := []struct {
		name  string
		cache string
		opts  Options
	}{
		{"empty name", "", Options{}},
		{"name with colon", "a:b", Options{}},
		{"negative size", "p", Options{LocalSize: -1}},
		{"negative local ttl", "p", Options{LocalTTL: -time.Second}},
		{"negative remote ttl", "p", Options{RemoteTTL: -time.Second}},
		{"remote ttl below a millisecond", "p", Options{RemoteTTL: time.Microsecond}},
		{"negative redis timeout", "p", Options{RedisTimeout: -time.Second}},
		{"negative load timeout", "p", Options{LoadTimeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New[product](tt.cache, tt.opts, e.rdb, e.keys, JSON[product]{}, prometheus.NewRegistry(), log)
			if err == nil {
				t.Fatal("New accepted the settings")
			}
		})
	}
}

func TestMetricsAreRegisteredOncePerRegistry(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	for _, name := range []string{"product", "category", "product"} {
		if _, err := New[product](name, Options{}, e.rdb, e.keys, JSON[product]{}, reg, platformtest.Logger(t)); err != nil {
			t.Fatalf("New(%s) on a shared registry: %v", name, err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
	}
	want := map[string]int{
		"cache_hits_total":                2 * 2, // local and redis, per cache
		"cache_misses_total":              2,
		"cache_loads_total":               2,
		"cache_load_errors_total":         2,
		"cache_stale_fills_refused_total": 2 * 2,
		"cache_invalidations_total":       3 * 2,
		"cache_redis_errors_total":        5 * 2,
		"cache_redis_rejected_total":      2,
		"cache_redis_breaker_state":       2,
	}
	for name, n := range want {
		if series[name] != n {
			t.Errorf("%s has %d series, want %d", name, series[name], n)
		}
	}
}

func TestCodecs(t *testing.T) {
	t.Run("json round trip", func(t *testing.T) {
		in := product{ID: "prod_1", Name: "Mug", Version: 7}
		b, err := JSON[product]{}.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := JSON[product]{}.Unmarshal(b)
		if err != nil || out != in {
			t.Fatalf("round trip = %+v, %v; want %+v", out, err, in)
		}
	})
	t.Run("json rejects garbage", func(t *testing.T) {
		if _, err := (JSON[product]{}).Unmarshal([]byte("{not json")); err == nil {
			t.Fatal("garbage decoded")
		}
	})
	t.Run("raw keeps bytes", func(t *testing.T) {
		in := []byte{0, 1, 2, 0xff}
		b, _ := Raw{}.Marshal(in)
		out, _ := Raw{}.Unmarshal(b)
		if !bytes.Equal(out, in) {
			t.Fatalf("raw = %v, want %v", out, in)
		}
	})
}

// TestRawCacheStoresBytes runs the raw codec through both tiers.
func TestRawCacheStoresBytes(t *testing.T) {
	e := newEnv(t)
	newRaw := func() *Cache[[]byte] {
		c, err := New[[]byte]("page", Options{}, e.rdb, e.keys, Raw{}, prometheus.NewRegistry(), platformtest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name string
		body []byte
	}{
		{"document", []byte(`{"id":"prod_1"}`)},
		{"empty", []byte{}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newRaw().Get(ctx, tt.name, func(context.Context) ([]byte, int64, error) { return tt.body, 1, nil })
			if err != nil || !bytes.Equal(got, tt.body) {
				t.Fatalf("load = %q, %v", got, err)
			}
			other := newRaw()
			got, err = other.Get(ctx, tt.name, func(context.Context) ([]byte, int64, error) {
				t.Error("loader called; redis should have answered")
				return nil, 0, errors.New("unexpected load")
			})
			if err != nil || !bytes.Equal(got, tt.body) || count(t, other.m.hitsRemote) != 1 {
				t.Fatalf("redis hit = %q, %v", got, err)
			}
		})
	}
}

func TestGetFillsAndServesEachTier(t *testing.T) {
	e := newEnv(t)
	src := newDatabase()
	src.set("prod_1", 3)
	a := newCache(t, e, Options{})
	b := newCache(t, e, Options{}) // another process sharing Redis

	t.Run("total miss loads and fills both tiers", func(t *testing.T) {
		p := mustGet(t, a, "prod_1", src.loader("prod_1"))
		if p.Version != 3 || src.reads.Load() != 1 {
			t.Fatalf("got %+v after %d reads; want version 3 after 1 read", p, src.reads.Load())
		}
		if got := remoteEntryOf(t, e, "prod_1"); got["v"] != "3" || got["d"] == "" {
			t.Fatalf("redis entry = %v; want version 3 with data", got)
		}
		if le, ok := localEntryOf(a, "prod_1"); !ok || !le.present || le.version != 3 {
			t.Fatalf("memory entry = %+v, %v; want version 3", le, ok)
		}
		if count(t, a.m.misses) != 1 || count(t, a.m.loads) != 1 {
			t.Fatalf("misses %d, loads %d; want 1, 1", count(t, a.m.misses), count(t, a.m.loads))
		}
	})
	t.Run("second read is a local hit", func(t *testing.T) {
		if p := mustGet(t, a, "prod_1", noLoad(t)); p.Version != 3 {
			t.Fatalf("got %+v", p)
		}
		if count(t, a.m.hitsLocal) != 1 {
			t.Fatalf("local hits = %d, want 1", count(t, a.m.hitsLocal))
		}
	})
	t.Run("another process is served by redis", func(t *testing.T) {
		p := mustGet(t, b, "prod_1", noLoad(t))
		if p.Version != 3 || p.Name != "product prod_1 v3" {
			t.Fatalf("got %+v", p)
		}
		if count(t, b.m.hitsRemote) != 1 {
			t.Fatalf("redis hits = %d, want 1", count(t, b.m.hitsRemote))
		}
		if le, ok := localEntryOf(b, "prod_1"); !ok || le.version != 3 {
			t.Fatalf("redis hit did not fill memory: %+v, %v", le, ok)
		}
		mustGet(t, b, "prod_1", noLoad(t))
		if count(t, b.m.hitsLocal) != 1 {
			t.Fatalf("local hits = %d, want 1", count(t, b.m.hitsLocal))
		}
	})
}

func TestLoadErrorsAreReturnedAndNotCached(t *testing.T) {
	e := newEnv(t)
	c := newCache(t, e, Options{})
	ctx := context.Background()
	tests := []struct {
		name  string
		load  func(context.Context) (product, int64, error)
		check func(error) bool
	}{
		{"error", func(context.Context) (product, int64, error) { return product{}, 0, errNotFound },
			func(err error) bool { return errors.Is(err, errNotFound) }},
		{"negative version", func(context.Context) (product, int64, error) { return product{}, -1, nil },
			func(err error) bool { return errors.Is(err, ErrNegativeVersion) }},
		{"panic", func(context.Context) (product, int64, error) { panic("boom") },
			func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "k_" + tt.name
			if _, err := c.Get(ctx, key, tt.load); !tt.check(err) {
				t.Fatalf("Get error = %v", err)
			}
			if _, ok := localEntryOf(c, key); ok {
				t.Fatal("failed load left an entry in memory")
			}
			if got := remoteEntryOf(t, e, key); len(got) != 0 {
				t.Fatalf("failed load left an entry in redis: %v", got)
			}
		})
	}
	if count(t, c.m.loadErrors) != len(tests) {
		t.Fatalf("load errors = %d, want %d", count(t, c.m.loadErrors), len(tests))
	}
}

func TestInvalidate(t *testing.T) {
	e := newEnv(t)
	src := newDatabase()
	a := newCache(t, e, Options{})
	b := newCache(t, e, Options{})
	ctx := context.Background()

	src.set("prod_1", 1)
	mustGet(t, a, "prod_1", src.loader("prod_1"))
	mustGet(t, b, "prod_1", noLoad(t))

	t.Run("removes the value from both tiers", func(t *testing.T) {
		src.set("prod_1", 2)
		if err := a.Invalidate(ctx, "prod_1", 2); err != nil {
			t.Fatal(err)
		}
		if got := remoteEntryOf(t, e, "prod_1"); got["v"] != "2" || got["d"] != "" {
			t.Fatalf("redis entry = %v; want a tombstone at version 2", got)
		}
		if le, ok := localEntryOf(a, "prod_1"); !ok || le.present || le.version != 2 {
			t.Fatalf("memory entry = %+v, %v; want a tombstone at version 2", le, ok)
		}
		if p := mustGet(t, a, "prod_1", src.loader("prod_1")); p.Version != 2 {
			t.Fatalf("after invalidation got %+v, want version 2", p)
		}
	})
	t.Run("another process misses redis after its broadcast", func(t *testing.T) {
		if err := a.Invalidate(ctx, "prod_1", 3); err != nil {
			t.Fatal(err)
		}
		src.set("prod_1", 3)
		b.InvalidateLocal("prod_1", 3)
		before := count(t, b.m.hitsRemote)
		if p := mustGet(t, b, "prod_1", src.loader("prod_1")); p.Version != 3 {
			t.Fatalf("got %+v, want version 3", p)
		}
		if count(t, b.m.hitsRemote) != before || count(t, b.m.loads) != 1 {
			t.Fatalf("b was served by redis instead of loading (redis hits %d→%d, loads %d)", before, count(t, b.m.hitsRemote), count(t, b.m.loads))
		}
	})
	t.Run("an older invalidation changes nothing", func(t *testing.T) {
		if err := a.Invalidate(ctx, "prod_1", 2); err != nil {
			t.Fatal(err)
		}
		if got := remoteEntryOf(t, e, "prod_1"); got["v"] != "3" || got["d"] == "" {
			t.Fatalf("redis entry = %v; want the version 3 value kept", got)
		}
		if p := mustGet(t, b, "prod_1", noLoad(t)); p.Version != 3 {
			t.Fatalf("got %+v", p)
		}
	})
	t.Run("InvalidateLocal only affects memory", func(t *testing.T) {
		b.InvalidateLocal("prod_1", 4)
		if le, ok := localEntryOf(b, "prod_1"); !ok || le.present {
			t.Fatalf("memory entry = %+v, %v; want a tombstone", le, ok)
		}
		if got := remoteEntryOf(t, e, "prod_1"); got["v"] != "3" || got["d"] == "" {
			t.Fatalf("redis entry = %v; InvalidateLocal must leave it", got)
		}
		before := count(t, a.m.hitsRemote)
		a.PurgeLocal()
		if p := mustGet(t, a, "prod_1", noLoad(t)); p.Version != 3 || count(t, a.m.hitsRemote) != before+1 {
			t.Fatalf("after PurgeLocal got %+v; want version 3 from redis", p)
		}
	})
	t.Run("memory that knows a newer version than redis asks the source", func(t *testing.T) {
		// As when the writer's Redis invalidation failed and is being
		// retried while the broadcast already arrived.
		src.set("prod_1", 4)
		b.InvalidateLocal("prod_1", 4)
		if got := remoteEntryOf(t, e, "prod_1"); got["v"] != "3" {
			t.Fatalf("redis entry = %v; want the version 3 value still there", got)
		}
		if p := mustGet(t, b, "prod_1", src.loader("prod_1")); p.Version != 4 {
			t.Fatalf("got %+v, want version 4", p)
		}
		if got := remoteEntryOf(t, e, "prod_1"); got["v"] != "4" {
			t.Fatalf("redis entry = %v; want version 4 filled", got)
		}
	})
	t.Run("a delete leaves nothing to serve", func(t *testing.T) {
		src.remove("prod_1")
		if err := a.Invalidate(ctx, "prod_1", 5); err != nil {
			t.Fatal(err)
		}
		b.InvalidateLocal("prod_1", 5)
		for _, c := range []*Cache[product]{a, b} {
			if _, err := c.Get(ctx, "prod_1", src.loader("prod_1")); !errors.Is(err, errNotFound) {
				t.Fatalf("Get after delete: %v, want not found", err)
			}
		}
	})
}

func TestConcurrentMissesLoadOnce(t *testing.T) {
	cfg := platformtest.Config(t)
	rdb := platformtest.Redis(t, cfg)
	hook := &commandCounter{count: map[string]int{}}
	rdb.AddHook(hook)
	e := env{rdb: rdb, keys: redisKeysFor(cfg.Namespace)}
	c := newCache(t, e, Options{})
	src := newDatabase()
	src.set("hot", 1)
	load := func(ctx context.Context) (product, int64, error) {
		time.Sleep(50 * time.Millisecond) // keep the load open while the others arrive
		return src.read("hot")
	}

	const n = 1000
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			<-start
			p, err := c.Get(context.Background(), "hot", load)
			if err == nil && p.Version != 1 {
				err = errors.New("wrong version " + strconv.FormatInt(p.Version, 10))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := src.reads.Load(); got != 1 {
		t.Fatalf("loader called %d times, want 1", got)
	}
	if got := hook.n("hmget"); got != 1 {
		t.Fatalf("redis read %d times, want 1", got)
	}
	if hits, misses := count(t, c.m.hitsLocal), count(t, c.m.misses); hits+misses != n {
		t.Fatalf("local hits %d + misses %d != %d reads", hits, misses, n)
	}
}

func TestRedisUnavailable(t *testing.T) {
	e := env{rdb: deadClient(t), keys: redisKeysFor(platformtest.Namespace(t))}
	c := newCache(t, e, Options{RedisTimeout: deadTimeout})
	src := newDatabase()
	src.set("prod_1", 1)
	ctx := context.Background()

	if p := mustGet(t, c, "prod_1", src.loader("prod_1")); p.Version != 1 {
		t.Fatalf("got %+v", p)
	}
	if count(t, c.m.redisGet) == 0 {
		t.Fatal("redis error not counted")
	}
	if p := mustGet(t, c, "prod_1", noLoad(t)); p.Version != 1 {
		t.Fatalf("memory did not serve the loaded value: %+v", p)
	}
	// Misses go on being served; after a few failures they skip Redis.
	for i := range 2 * breakerFailures {
		key := "other_" + strconv.Itoa(i)
		src.set(key, 1)
		mustGet(t, c, key, src.loader(key))
	}
	if count(t, c.m.redisRejected) == 0 || count(t, c.m.breakerState) != 2 {
		t.Fatalf("breaker did not open: %d reads rejected, state %d", count(t, c.m.redisRejected), count(t, c.m.breakerState))
	}
	src.set("prod_1", 2)
	if err := c.Invalidate(ctx, "prod_1", 2); err == nil {
		t.Fatal("Invalidate hid the redis failure")
	}
	if p := mustGet(t, c, "prod_1", src.loader("prod_1")); p.Version != 2 {
		t.Fatalf("memory kept serving the invalidated value: %+v", p)
	}
}

func TestLocalEntriesExpire(t *testing.T) {
	e := newEnv(t)
	c := newCache(t, e, Options{LocalTTL: 100 * time.Millisecond})
	src := newDatabase()
	src.set("prod_1", 1)
	mustGet(t, c, "prod_1", src.loader("prod_1"))
	platformtest.Eventually(t, "memory entry to expire and redis to answer", func() bool {
		mustGet(t, c, "prod_1", noLoad(t))
		return count(t, c.m.hitsRemote) > 0
	})
	if src.reads.Load() != 1 {
		t.Fatalf("loader called %d times, want 1", src.reads.Load())
	}
}

func TestTombstonesAreBounded(t *testing.T) {
	e := newEnv(t)
	const size = 100
	c := newCache(t, e, Options{LocalSize: size})
	for i := range 20 * size {
		c.InvalidateLocal("k"+strconv.Itoa(i), int64(i))
	}
	platformtest.Eventually(t, "memory to shrink to its bound", func() bool {
		c.local.CleanUp()
		return c.local.EstimatedSize() <= size
	})
}

func TestCallerGivingUpDoesNotFailTheFetch(t *testing.T) {
	e := newEnv(t)
	c := newCache(t, e, Options{})
	release := make(chan struct{})
	load := func(ctx context.Context) (product, int64, error) {
		<-release
		return product{ID: "prod_1", Version: 1}, 1, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "prod_1", load)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Get after cancel = %v, want context.Canceled", err)
	}
	close(release)
	platformtest.Eventually(t, "the abandoned fetch to fill memory", func() bool {
		le, ok := localEntryOf(c, "prod_1")
		return ok && le.present
	})
}
