package cache

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/platformtest"
)

// BenchmarkGetLocalHit measures the hot path: a read served from memory.
func BenchmarkGetLocalHit(b *testing.B) {
	cfg := platformtest.Config(b)
	rdb := platformtest.Redis(b, cfg)
	c, err := New[product]("bench", Options{LocalSize: 100_000}, rdb, redisKeysFor(cfg.Namespace), JSON[product]{}, prometheus.NewRegistry(), platformtest.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1024)
	ctx := context.Background()
	for i := range keys {
		keys[i] = "prod_" + strconv.Itoa(i)
		v := int64(i + 1)
		if _, err := c.Get(ctx, keys[i], func(context.Context) (product, int64, error) {
			return product{ID: "prod", Name: "Mug", Version: v}, v, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	load := func(context.Context) (product, int64, error) {
		b.Error("loader called on the hit path")
		return product{}, 0, nil
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(keys))
		for pb.Next() {
			if _, err := c.Get(ctx, keys[i%len(keys)], load); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
