package pricing

import (
	"fmt"
	"testing"
)

// BenchmarkPrice10Lines prices a cart of 10 lines in a tax-exclusive
// country with three promotions live: 15% off a category (automatic), a
// 5.00 coupon, and free shipping from 50.00. Issue 5's target is 50,000
// carts a second on one core (go test -bench Price10Lines -cpu 1); the
// carts/s metric reports it directly.
func BenchmarkPrice10Lines(b *testing.B) {
	c := Cart{Currency: "EUR", Country: "CA", CustomerID: "cus_1", Codes: []string{"FIVE"}}
	for i := range 10 {
		cats := []string{"cat_home"}
		if i%3 == 0 {
			cats = append(cats, "cat_sale")
		}
		c.Lines = append(c.Lines, Line{
			ID: fmt.Sprint("item_", i), VariantID: fmt.Sprint("var_", i), ProductID: fmt.Sprint("prod_", i),
			CategoryIDs: cats, UnitPrice: int64(999 + 1234*i), Quantity: int64(1 + i%3),
		})
	}
	promos := []Promotion{
		pct("promo_sale", 1500, categories("cat_sale"), prio(10)),
		fixed("promo_five", 500, code("FIVE")),
		freeShipping("promo_ship", minSub(5000)),
	}
	cfg := testConfig()
	cfg.Shipping["CA"] = ShippingRate{Amount: 1000} // the promotion, not the table, makes shipping free
	res, err := Price(c, promos, cfg, now)
	if err != nil {
		b.Fatal(err)
	}
	if len(res.Applied) != 3 {
		b.Fatalf("applied %+v, want all three promotions", res.Applied)
	}
	checkInvariants(b, c, res)

	b.ReportAllocs()
	for b.Loop() {
		if _, err := Price(c, promos, cfg, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "carts/s")
}
