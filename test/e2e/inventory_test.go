package e2e

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/mercato/mercato/platform/platformtest"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/proto/gen/mercato/inventory/v1/inventoryv1connect"
)

// stockLatency is how soon the catalog's read model must show a variant's
// in_stock after inventory's stock changed.
const stockLatency = time.Second

// inventoryChecks drives stock through the gateway and the inventory's RPC
// and checks that the catalog's public product view follows, across the
// real processes and broker.
func inventoryChecks(t *testing.T, p *platform) {
	admin := bearer(p.login(adminEmail, adminPassword).AccessToken)
	t.Run("the catalog shows each variant's in_stock within a second", func(t *testing.T) {
		// The variant starts out of stock, so setting stock flips it and the
		// first wait below measures a real change.
		body := map[string]any{"title": "Kite Line Spool", "variants": []map[string]any{{"sku": "E2E-SPOOL-" + randomHex(4), "title": "50 m",
			"price": map[string]any{"amount": 1200, "currency": "EUR"}, "in_stock": false}}}
		r := p.do("POST", "/v1/admin/products", body, admin...)
		if r.status != http.StatusCreated {
			t.Fatalf("create product: %d %s", r.status, r.body)
		}
		var prod struct {
			ID       string
			Variants []struct{ ID string }
		}
		r.decode(t, &prod)
		if len(prod.Variants) != 1 || prod.Variants[0].ID == "" {
			t.Fatalf("created product has no variant id: %s", r.body)
		}
		variant := prod.Variants[0].ID
		if inStock(t, p, prod.ID, variant) {
			t.Fatal("a variant created out of stock is shown in stock")
		}

		r = p.do("PUT", "/v1/admin/inventory/"+variant, map[string]any{"on_hand": 2}, admin...)
		answered := time.Now()
		if r.status != http.StatusOK {
			t.Fatalf("set stock: %d %s", r.status, r.body)
		}
		var level struct {
			OnHand    int64 `json:"on_hand"`
			Reserved  int64 `json:"reserved"`
			Available int64 `json:"available"`
		}
		r.decode(t, &level)
		if level.OnHand != 2 || level.Available != 2 {
			t.Fatalf("set stock answered %s", r.body)
		}
		awaitInStock(t, p, prod.ID, variant, true, answered, "after stock was set")

		inv := inventoryv1connect.NewInventoryServiceClient(http.DefaultClient, p.serviceURL(t, "inventory"))
		ctx := context.Background()
		var held []string
		for i := range 2 {
			res, err := inv.Reserve(ctx, connect.NewRequest(&inventoryv1.ReserveRequest{
				Items:          []*inventoryv1.Item{{VariantId: variant, Quantity: 1}},
				IdempotencyKey: "e2e-spool-" + randomHex(8),
			}))
			if err != nil {
				t.Fatalf("reserve unit %d: %v", i+1, err)
			}
			held = append(held, res.Msg.GetReservation().GetId())
		}
		awaitInStock(t, p, prod.ID, variant, false, time.Now(), "after the last unit was reserved")

		if _, err := inv.Release(ctx, connect.NewRequest(&inventoryv1.ReleaseRequest{ReservationId: held[0]})); err != nil {
			t.Fatalf("release: %v", err)
		}
		awaitInStock(t, p, prod.ID, variant, true, time.Now(), "after a reservation was released")

		r = p.do("GET", "/v1/admin/inventory/"+variant, nil, admin...)
		if r.status != http.StatusOK {
			t.Fatalf("read stock: %d %s", r.status, r.body)
		}
		r.decode(t, &level)
		if level.OnHand != 2 || level.Reserved != 1 || level.Available != 1 {
			t.Fatalf("stock after one release: %s", r.body)
		}
		p.do("GET", "/v1/admin/inventory/"+variant, nil).isProblem(t, http.StatusUnauthorized)
	})
}

// awaitInStock waits until the public product view shows the variant's
// in_stock as want and fails if that took longer than stockLatency from
// since, the moment the change was answered.
func awaitInStock(t *testing.T, p *platform, productID, variantID string, want bool, since time.Time, what string) {
	t.Helper()
	// A longer patience than the bound, so a slow update fails with the
	// time it took rather than only "not within".
	platformtest.EventuallyWithin(t, 5*time.Second, "in_stock "+what, func() bool {
		return inStock(t, p, productID, variantID) == want
	})
	took := time.Since(since)
	t.Logf("in_stock=%v %s: visible after %s", want, what, took.Round(time.Millisecond))
	if took > stockLatency {
		t.Errorf("in_stock=%v %s took %s, more than %s", want, what, took, stockLatency)
	}
}

// inStock reads the variant's in_stock from the public product view. The
// request carries no If-None-Match, so the answer is the current view.
func inStock(t *testing.T, p *platform, productID, variantID string) bool {
	t.Helper()
	r := p.do("GET", "/v1/products/"+productID, nil)
	if r.status != http.StatusOK {
		t.Fatalf("product %s: %d %s", productID, r.status, r.body)
	}
	var prod struct {
		Variants []struct {
			ID      string
			InStock bool `json:"in_stock"`
		}
	}
	r.decode(t, &prod)
	for _, v := range prod.Variants {
		if v.ID == variantID {
			return v.InStock
		}
	}
	t.Fatalf("product %s lacks variant %s: %s", productID, variantID, r.body)
	return false
}

// serviceURL reads a service's internal URL from the Services list that
// `mercato up` prints once it is ready.
func (p *platform) serviceURL(t *testing.T, name string) string {
	t.Helper()
	line := regexp.MustCompile(`(?m)^ +` + regexp.QuoteMeta(name) + ` +(http\S+)$`)
	var url string
	platformtest.EventuallyWithin(t, 10*time.Second, "the banner lists "+name, func() bool {
		if m := line.FindStringSubmatch(p.out.String()); m != nil {
			url = m[1]
		}
		return url != ""
	})
	return url
}
