package inventory

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"github.com/mercato/mercato/platform/config"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/proto/gen/mercato/inventory/v1/inventoryv1connect"
)

// BenchmarkReserveOneHotVariant measures reservations of one unit of one
// variant through the inventory RPC, end to end on this machine: Connect
// over HTTP/1.1 keep-alive connections, the handler, admission control,
// and one EVALSHA of reserve.lua, with the ledger writer recording the
// stream to PostgreSQL meanwhile. Every reservation must succeed (the
// stock is larger than b.N), and afterwards the units held must equal the
// reservations made: a mismatch fails the benchmark. Compare with
// scripts/bench-redis-lua.sh, which runs the same script with
// redis-benchmark (docs/benchmarks.md).
func BenchmarkReserveOneHotVariant(b *testing.B) {
	h := newHarness(b, func(c *config.Config) {
		c.Inventory.MaxInFlight, c.Inventory.MaxInFlightPerVariant = 0, 0
		c.Log.Level = "warn"
	})
	in := h.start()
	variant := newVariant()
	h.setStock(in, variant, 1_000_000_000)
	transport := &http.Transport{MaxIdleConnsPerHost: 256}
	defer transport.CloseIdleConnections()
	client := inventoryv1connect.NewInventoryServiceClient(&http.Client{Transport: transport}, in.url)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			_, err := client.Reserve(context.Background(), connect.NewRequest(&inventoryv1.ReserveRequest{
				Items:          []*inventoryv1.Item{{VariantId: variant, Quantity: 1}},
				IdempotencyKey: fmt.Sprintf("bench-%d", i),
			}))
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "reservations/s")
	if c := h.redisStock(variant); c.Reserved != n.Load() {
		b.Fatalf("%d reservations answered but %d units held", n.Load(), c.Reserved)
	}
}
