package inventory

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
)

// TestFlashSaleSellsExactlyTheStock races 2,000 buyers of one unit for 100
// units: exactly 100 get one, the others are told out of stock with how
// many are left, and afterwards the ledger and Redis agree.
func TestFlashSaleSellsExactlyTheStock(t *testing.T) {
	h := newHarness(t, nil)
	in := h.start()
	variant := newVariant()
	h.setStock(in, variant, 100)

	const buyers = 2000
	var held, out atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, buyers)
	start := make(chan struct{})
	for i := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := reserveRetrying(context.Background(), in, variant, 1, key("buyer", i), "")
			var oos inventoryv1.OutOfStock
			switch {
			case err == nil:
				held.Add(1)
			case outOfStock(err, &oos):
				if len(oos.Items) != 1 || oos.Items[0].GetVariantId() != variant || oos.Items[0].GetAvailable() != 0 {
					errs <- errors.New("out-of-stock detail does not name the variant with 0 left: " + oos.String())
				}
				out.Add(1)
			default:
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if held.Load() != 100 || out.Load() != buyers-100 {
		t.Fatalf("%d reservations held and %d out of stock; want 100 and %d", held.Load(), out.Load(), buyers-100)
	}
	if c := h.agree(variant); c.OnHand != 100 || c.Reserved != 100 || c.Committed != 0 {
		t.Fatalf("after the sale: %+v", c)
	}
}

// outOfStock reports whether err is an out-of-stock answer and reads its
// detail into detail.
func outOfStock(err error, detail *inventoryv1.OutOfStock) bool {
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeFailedPrecondition {
		return false
	}
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if o, ok := v.(*inventoryv1.OutOfStock); derr == nil && ok {
			detail.Items = o.Items
			return true
		}
	}
	return false
}

// reserveRetrying reserves as a well-behaved checkout does: an overloaded
// or not-ready answer is retried with the same idempotency key after a
// pause, so it neither duplicates a hold nor gives up.
func reserveRetrying(ctx context.Context, in *instance, variant string, quantity int64, key, customer string) (*inventoryv1.Reservation, error) {
	for attempt := 0; ; attempt++ {
		r, err := reserve(ctx, in, variant, quantity, key, customer)
		if connect.CodeOf(err) != connect.CodeUnavailable || attempt >= 200 {
			return r, err
		}
		time.Sleep(time.Duration(5+rand.IntN(20)) * time.Millisecond)
	}
}
