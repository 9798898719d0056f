package inventory

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
)

func commit(in *instance, id string) (*inventoryv1.Reservation, error) {
	resp, err := in.client.Commit(context.Background(), connect.NewRequest(&inventoryv1.CommitRequest{ReservationId: id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetReservation(), nil
}

func release(in *instance, id string) (*inventoryv1.Reservation, error) {
	resp, err := in.client.Release(context.Background(), connect.NewRequest(&inventoryv1.ReleaseRequest{ReservationId: id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetReservation(), nil
}

func reserveFor(in *instance, variant string, quantity int64, ttl time.Duration, key string) (*inventoryv1.Reservation, error) {
	resp, err := in.client.Reserve(context.Background(), connect.NewRequest(&inventoryv1.ReserveRequest{
		Items: []*inventoryv1.Item{{VariantId: variant, Quantity: quantity}}, IdempotencyKey: key, Ttl: durationpb.New(ttl),
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetReservation(), nil
}

func wantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

// TestReservationLifecycle covers what a checkout relies on: expiry gives
// units back and rules out a later commit; commits and releases are
// idempotent; each rules out the other; and the ledger answers for
// reservations Redis no longer keeps.
func TestReservationLifecycle(t *testing.T) {
	h := newHarness(t, nil)
	in := h.start()
	variant := newVariant()
	h.setStock(in, variant, 10)

	t.Run("expiry returns the units and rules out a commit", func(t *testing.T) {
		r, err := reserveFor(in, variant, 4, time.Second, "expiring")
		if err != nil {
			t.Fatal(err)
		}
		if c := h.redisStock(variant); c.Reserved != 4 {
			t.Fatalf("after reserving 4: %+v", c)
		}
		platformtest.EventuallyWithin(t, 5*time.Second, "the reservation expired", func() bool {
			return h.redisStock(variant).Reserved == 0
		})
		_, err = commit(in, r.GetId())
		wantCode(t, "commit after expiry", err, connect.CodeFailedPrecondition)
		again, err := release(in, r.GetId())
		if err != nil || again.GetStatus() != "expired" {
			t.Fatalf("release after expiry: %v %v, want a no-op answering expired", again, err)
		}
		if c := h.agree(variant); c.Available() != 10 {
			t.Fatalf("after expiry: %+v", c)
		}
	})

	t.Run("double commit is a no-op and rules out release", func(t *testing.T) {
		r, err := reserveFor(in, variant, 3, time.Minute, "bought")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			got, err := commit(in, r.GetId())
			if err != nil || got.GetStatus() != "committed" {
				t.Fatalf("commit %d: %v %v", i+1, got, err)
			}
		}
		_, err = release(in, r.GetId())
		wantCode(t, "release after commit", err, connect.CodeFailedPrecondition)
		if c := h.agree(variant); c.Committed != 3 || c.Reserved != 0 || c.OnHand != 10 {
			t.Fatalf("after one commit of 3: %+v", c)
		}
		var commits int
		if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM ledger WHERE op = 'commit' AND reservation_id = $1`, r.GetId()).Scan(&commits); err != nil || commits != 1 {
			t.Fatalf("ledger has %d commit rows (%v), want 1", commits, err)
		}
	})

	t.Run("double release is a no-op and rules out commit", func(t *testing.T) {
		r, err := reserveFor(in, variant, 2, time.Minute, "abandoned")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			got, err := release(in, r.GetId())
			if err != nil || got.GetStatus() != "released" {
				t.Fatalf("release %d: %v %v", i+1, got, err)
			}
		}
		_, err = commit(in, r.GetId())
		wantCode(t, "commit after release", err, connect.CodeFailedPrecondition)
		if c := h.agree(variant); c.Committed != 3 || c.Reserved != 0 {
			t.Fatalf("after a release: %+v", c)
		}
	})

	t.Run("unknown reservations", func(t *testing.T) {
		_, err := commit(in, "res_01hzzzzzzzzzzzzzzzzzzzzzzz")
		wantCode(t, "commit of an unknown reservation", err, connect.CodeNotFound)
		_, err = release(in, "not-an-id")
		wantCode(t, "release of a malformed id", err, connect.CodeNotFound)
	})

	t.Run("the ledger answers once redis forgot", func(t *testing.T) {
		r, err := reserveFor(in, variant, 1, time.Minute, "remembered")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := commit(in, r.GetId()); err != nil {
			t.Fatal(err)
		}
		h.caughtUp()
		// What retention does after an hour.
		if err := h.rdb.Del(context.Background(), h.hot.Prefix()+"r:"+r.GetId()).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := commit(in, r.GetId())
		if err != nil || got.GetStatus() != "committed" {
			t.Fatalf("commit retried after redis forgot: %v %v", got, err)
		}
		_, err = release(in, r.GetId())
		wantCode(t, "release after redis forgot a commit", err, connect.CodeFailedPrecondition)
	})
}

// TestRandomisedInvariant lets many clients reserve, commit, release and
// abandon reservations on a few variants at random, checks after every
// step that no variant promises more than it has, and at the end that the
// units sold are exactly the commits that succeeded, in Redis and in the
// ledger.
func TestRandomisedInvariant(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Inventory.MaxInFlightPerVariant = 0 })
	in := h.start()
	variants := []string{newVariant(), newVariant(), newVariant()}
	stock := map[string]int64{}
	for i, v := range variants {
		stock[v] = int64(5 + 5*i)
		h.setStock(in, v, stock[v])
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)

	var sold [3]atomic.Int64
	var steps atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	deadline := time.Now().Add(4 * time.Second)
	for c := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(c)))
			for n := 0; time.Now().Before(deadline); n++ {
				vi := rng.IntN(len(variants))
				q := int64(1 + rng.IntN(3))
				r, err := reserveFor(in, variants[vi], q, time.Duration(1+rng.IntN(2))*time.Second, fmt.Sprintf("c%d-%d", c, n))
				var oos inventoryv1.OutOfStock
				switch {
				case outOfStock(err, &oos):
					continue
				case err != nil:
					errs <- err
					return
				}
				switch rng.IntN(3) {
				case 0:
					if _, err := commit(in, r.GetId()); err == nil {
						sold[vi].Add(q)
					} else if connect.CodeOf(err) != connect.CodeFailedPrecondition {
						errs <- err
						return
					}
				case 1:
					if _, err := release(in, r.GetId()); err != nil {
						errs <- err
						return
					}
				default:
					// abandoned: expiry gives the units back
				}
				steps.Add(1)
				resp, err := in.client.GetStock(context.Background(), connect.NewRequest(&inventoryv1.GetStockRequest{VariantIds: variants}))
				if err != nil {
					errs <- err
					return
				}
				for _, s := range resp.Msg.GetStock() {
					if s.GetReserved() < 0 || s.GetCommitted() < 0 || s.GetReserved()+s.GetCommitted() > s.GetOnHand() || s.GetAvailable() < 0 {
						errs <- fmt.Errorf("invariant broken: %v", s)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d steps", steps.Load())
	for i, v := range variants {
		platformtest.EventuallyWithin(t, 10*time.Second, "every abandoned reservation expired", func() bool {
			return h.redisStock(v).Reserved == 0
		})
		c := h.agree(v)
		if c.Committed != sold[i].Load() || c.OnHand != stock[v] {
			t.Errorf("%s: %+v, but clients bought %d of %d", v, c, sold[i].Load(), stock[v])
		}
	}
}
