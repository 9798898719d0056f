package cache

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/redisx"
)

// product is the value the tests cache; Version echoes the version it was
// loaded at, so a test can tell which version it was served.
type product struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version int64  `json:"version"`
}

// errNotFound is the source's answer for a deleted record.
var errNotFound = errors.New("not found")

// database stands in for the database the cache fronts: a version per key,
// bumped on every change, and a count of reads.
type database struct {
	mu    sync.Mutex
	rows  map[string]int64 // key -> current version; absent means deleted
	reads atomic.Int64
}

func newDatabase() *database { return &database{rows: map[string]int64{}} }

// set stores key at version, as a committed change would.
func (s *database) set(key string, version int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows[key] = version
}

// bump changes key and returns its new version.
func (s *database) bump(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows[key]++
	return s.rows[key]
}

// remove deletes key.
func (s *database) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rows, key)
}

func (s *database) read(key string) (product, int64, error) {
	s.reads.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.rows[key]
	if !ok {
		return product{}, 0, errNotFound
	}
	return product{ID: key, Name: "product " + key + " v" + strconv.FormatInt(v, 10), Version: v}, v, nil
}

// loader returns a load function reading key from the source.
func (s *database) loader(key string) func(context.Context) (product, int64, error) {
	return func(context.Context) (product, int64, error) { return s.read(key) }
}

// env is one test's Redis namespace.
type env struct {
	rdb  *redis.Client
	keys redisx.Keys
}

func newEnv(t *testing.T) env {
	t.Helper()
	cfg := platformtest.Config(t)
	return env{rdb: platformtest.Redis(t, cfg), keys: redisKeysFor(cfg.Namespace)}
}

// redisKeysFor names the test service's keys in namespace.
func redisKeysFor(namespace string) redisx.Keys { return redisx.NewKeys(namespace, "test") }

// newCache returns a cache of products named "product" in e's namespace, on
// its own registry, as a separate process would have it.
func newCache(t *testing.T, e env, opts Options) *Cache[product] {
	t.Helper()
	return newCacheOn(t, e.rdb, e.keys, opts)
}

func newCacheOn(t *testing.T, rdb *redis.Client, keys redisx.Keys, opts Options) *Cache[product] {
	t.Helper()
	if opts.RedisTimeout == 0 {
		// A loaded test machine must not turn a slow Redis reply into a
		// failed assertion; tests of an unreachable Redis set their own.
		opts.RedisTimeout = 5 * time.Second
	}
	c, err := New[product]("product", opts, rdb, keys, JSON[product]{}, prometheus.NewRegistry(), platformtest.Logger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// deadTimeout bounds Redis calls of caches that use a deadClient.
const deadTimeout = 100 * time.Millisecond

// deadClient returns a Redis client pointed at a port nobody listens on.
func deadClient(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: platformtest.ClosedAddr(t), DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// mustGet reads key through c and fails the test on error.
func mustGet(t *testing.T, c *Cache[product], key string, load func(context.Context) (product, int64, error)) product {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.Get(ctx, key, load)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return p
}

// noLoad is a loader for reads that must be answered by a cache tier.
func noLoad(t *testing.T) func(context.Context) (product, int64, error) {
	t.Helper()
	return func(context.Context) (product, int64, error) {
		t.Errorf("loader called; a cache tier should have answered")
		return product{}, 0, errors.New("unexpected load")
	}
}

// count reads the value of a counter or gauge.
func count(t *testing.T, c prometheus.Metric) int {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatalf("read metric: %v", err)
	}
	if m.Gauge != nil {
		return int(m.GetGauge().GetValue())
	}
	return int(m.GetCounter().GetValue())
}

// remoteEntryOf reads the Redis hash behind key of the product cache.
func remoteEntryOf(t *testing.T, e env, key string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := e.rdb.HGetAll(ctx, e.keys.Key("cache", "product", key)).Result()
	if err != nil {
		t.Fatalf("HGETALL: %v", err)
	}
	return m
}

// localEntryOf reads what process memory holds for key, without touching the
// eviction policy.
func localEntryOf(c *Cache[product], key string) (entry[product], bool) {
	e, ok := c.local.GetEntryQuietly(key)
	return e.Value, ok
}

// commandCounter is a go-redis hook counting the commands a client sends.
type commandCounter struct {
	mu    sync.Mutex
	count map[string]int
}

func (h *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.count[cmd.Name()]++
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *commandCounter) n(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[name]
}
