package pricing

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestPriceProperties prices thousands of random carts with random
// promotions and tables and checks, for each, that the result adds up
// exactly (checkInvariants), that it does not depend on the order the
// promotions are passed in, that pricing twice gives the same answer, and
// that an exclusive promotion is applied alone.
func TestPriceProperties(t *testing.T) {
	const carts = 5000
	r := rand.New(rand.NewPCG(20260301, 5))
	for n := range carts {
		c, promos, cfg := randomCase(r)
		res, err := Price(c, promos, cfg, now)
		if err != nil {
			t.Fatalf("case %d: %v\ncart %+v", n, err, c)
		}
		describe := func() string { return fmt.Sprintf("case %d\ncart %+v\npromos %+v\nresult %+v", n, c, promos, res) }
		if err := brokenInvariant(c, res); err != nil {
			t.Fatalf("%v\n%s", err, describe())
		}

		rule, ok := cfg.Tax[c.Country]
		if !ok {
			rule = cfg.DefaultTax
		}
		for i, l := range res.Lines {
			if want := taxRat(l.Subtotal-l.Discount, rule); l.Tax != want {
				t.Fatalf("line %d: tax %d, want %d\n%s", i, l.Tax, want, describe())
			}
		}
		if want := taxRat(res.Shipping.Amount, rule); res.Shipping.Tax != want {
			t.Fatalf("shipping tax %d, want %d\n%s", res.Shipping.Tax, want, describe())
		}

		again, _ := Price(c, promos, cfg, now)
		if !reflect.DeepEqual(res, again) {
			t.Fatalf("pricing twice differs: %+v\n%s", again, describe())
		}
		shuffled := append([]Promotion(nil), promos...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if other, _ := Price(c, shuffled, cfg, now); !reflect.DeepEqual(res, other) {
			t.Fatalf("the order of promotions changed the result: %+v\n%s", other, describe())
		}
		for _, a := range res.Applied {
			for _, p := range promos {
				if p.ID == a.ID && p.Exclusive && len(res.Applied) != 1 {
					t.Fatalf("exclusive %s applied with others\n%s", p.ID, describe())
				}
			}
		}
	}
}

// TestAllocationProperties checks the largest-remainder split against exact
// rational arithmetic: one fixed amount or percentage over random lines is
// taken in full (up to what the cart holds) and each line's share is its
// exact share rounded down or up.
func TestAllocationProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for n := range 5000 {
		c := cart("US")
		for i := range 1 + r.IntN(20) {
			c.Lines = append(c.Lines, line(fmt.Sprint(i), randomPrice(r), 1+r.Int64N(5), "p"))
		}
		var sub int64
		for _, l := range c.Lines {
			sub += l.UnitPrice * l.Quantity
		}
		var p Promotion
		var want int64
		if r.IntN(2) == 0 {
			amount := 1 + r.Int64N(2*sub+1)
			p, want = fixed("f", amount), min(amount, sub)
		} else {
			bp := 1 + r.Int64N(10_000)
			p = pct("p", bp)
			// Round half to even, computed independently with big.Rat.
			exact := new(big.Rat).SetFrac(big.NewInt(sub*bp), big.NewInt(10_000))
			want = roundRat(exact)
		}
		res, err := Price(c, []Promotion{p}, testConfig(), now)
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, c, res)
		if res.Totals.Discount != want {
			t.Fatalf("case %d: discount %d, want %d (%+v on %d)", n, res.Totals.Discount, want, p, sub)
		}
		if want == 0 {
			continue
		}
		// Largest remainder: every share is its exact share rounded down or
		// up, and no share rounded down has a larger remainder than one
		// rounded up.
		minUp, maxDown := int64(sub), int64(-1) // remainders are want×subtotal mod sub
		for i, l := range res.Lines {
			floor, rem := mulDiv(want, l.Subtotal, sub)
			switch l.Discount {
			case floor:
				maxDown = max(maxDown, rem)
			case floor + 1:
				if rem == 0 {
					t.Fatalf("case %d line %d: share %d rounded up an exact share", n, i, l.Discount)
				}
				minUp = min(minUp, rem)
			default:
				t.Fatalf("case %d line %d: share %d, exact share %d + %d/%d", n, i, l.Discount, floor, rem, sub)
			}
		}
		if maxDown > minUp {
			t.Fatalf("case %d: a remainder %d/%d was rounded down while %d/%d was rounded up", n, maxDown, sub, minUp, sub)
		}
	}
}

// taxRat is the tax in amount under rule, computed with big.Rat: contained
// in a gross amount, or added to a net one, rounded half to even.
func taxRat(amount int64, rule TaxRule) int64 {
	den := int64(10_000)
	if rule.PricesIncludeTax {
		den += rule.RateBasisPoints
	}
	return roundRat(new(big.Rat).SetFrac(big.NewInt(amount*rule.RateBasisPoints), big.NewInt(den)))
}

// roundRat rounds a non-negative rational half to even.
func roundRat(x *big.Rat) int64 {
	q, m := new(big.Int).QuoRem(x.Num(), x.Denom(), new(big.Int))
	twice := new(big.Int).Mul(m, big.NewInt(2))
	switch twice.Cmp(x.Denom()) {
	case 1:
		q.Add(q, big.NewInt(1))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(1))
		}
	}
	return q.Int64()
}

func randomPrice(r *rand.Rand) int64 {
	switch r.IntN(10) {
	case 0:
		return r.Int64N(3) // free and near-free items
	case 1:
		return r.Int64N(100_000_000)
	default:
		return 1 + r.Int64N(20_000)
	}
}

func randomCase(r *rand.Rand) (Cart, []Promotion, Config) {
	pick := func(list ...string) string { return list[r.IntN(len(list))] }
	some := func(list ...string) []string {
		var out []string
		for _, s := range list {
			if r.IntN(3) == 0 {
				out = append(out, s)
			}
		}
		return out
	}
	c := Cart{Currency: "EUR", Country: pick("US", "CA", "DE", "FR", ""), CustomerID: pick("", "cus_1", "cus_2")}
	for i := range r.IntN(13) {
		qty := 1 + r.Int64N(4)
		if r.IntN(10) == 0 {
			qty = 1 + r.Int64N(999)
		}
		c.Lines = append(c.Lines, Line{
			ID: fmt.Sprint("l", i), ProductID: pick("p0", "p1", "p2", "p3"),
			CategoryIDs: some("c0", "c1", "c2"), UnitPrice: randomPrice(r), Quantity: qty,
		})
	}
	for _, code := range some("C0", "C1", "C2", "C3", "NOPE") {
		if r.IntN(4) == 0 {
			code = strings.ToLower(code)
		}
		c.Codes = append(c.Codes, code)
	}

	kinds := []Kind{KindPercentage, KindFixedAmount, KindFreeShipping, KindBuyXGetY, KindSpendThreshold}
	var promos []Promotion
	for i := range r.IntN(7) {
		p := Promotion{
			ID: fmt.Sprint("promo", i), Kind: kinds[r.IntN(len(kinds))], Currency: "EUR",
			Priority: r.IntN(3), Exclusive: r.IntN(5) == 0, Active: r.IntN(10) != 0,
		}
		if r.IntN(2) == 0 {
			p.Code = pick("C0", "C1", "C2", "C3")
		}
		switch p.Kind {
		case KindPercentage:
			p.Value = 1 + r.Int64N(10_000)
			if r.IntN(4) == 0 {
				p.Value = 10_000
			}
		case KindFixedAmount:
			p.Value = 1 + r.Int64N(50_000)
		case KindBuyXGetY:
			p.BuyX, p.GetY = 1+r.Int64N(3), 1+r.Int64N(2)
		case KindSpendThreshold:
			floor := int64(0)
			for range 1 + r.IntN(3) {
				floor += r.Int64N(20_000)
				t := Tier{MinSubtotal: floor}
				if r.IntN(2) == 0 {
					t.Percent = 1 + r.Int64N(5000)
				} else {
					t.Amount = 1 + r.Int64N(10_000)
				}
				p.Tiers = append(p.Tiers, t)
				floor++
			}
		}
		if r.IntN(4) == 0 {
			p.ProductIDs = some("p0", "p1", "p2", "p3")
		}
		if r.IntN(4) == 0 {
			p.CategoryIDs = some("c0", "c1", "c2")
		}
		if r.IntN(8) == 0 {
			p.CustomerIDs = some("cus_1", "cus_2")
		}
		if r.IntN(4) == 0 {
			p.MinSubtotal = r.Int64N(30_000)
		}
		if r.IntN(6) == 0 {
			p.StartsAt = now.Add(time.Duration(r.IntN(5)-2) * time.Hour)
		}
		if r.IntN(6) == 0 {
			p.EndsAt = now.Add(time.Duration(r.IntN(5)-1) * time.Hour)
		}
		if r.IntN(30) == 0 {
			p.Currency = "USD"
		}
		promos = append(promos, p)
	}

	cfg := testConfig()
	if c.Country != "" {
		cfg.Shipping[c.Country] = ShippingRate{Amount: r.Int64N(2000), FreeAbove: r.Int64N(3) * r.Int64N(20_000)}
		cfg.Tax[c.Country] = TaxRule{RateBasisPoints: r.Int64N(3000), PricesIncludeTax: r.IntN(2) == 0}
	}
	return c, promos, cfg
}
