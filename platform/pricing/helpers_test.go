package pricing

import (
	"fmt"
	"testing"
	"time"
)

// now is the injected clock of every test that does not care about time.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testConfig prices EUR carts: US ships for 5.00 with no tax (discount
// arithmetic stays visible), CA adds 13% and ships free from 100.00, DE
// includes 19% and ships free from 50.00, anywhere else ships for 15.00.
func testConfig() Config {
	return Config{
		Currency: "EUR",
		Shipping: map[string]ShippingRate{
			"US": {Amount: 500},
			"CA": {Amount: 1000, FreeAbove: 10_000},
			"DE": {Amount: 499, FreeAbove: 5000},
		},
		DefaultShipping: ShippingRate{Amount: 1500},
		Tax: map[string]TaxRule{
			"CA": {RateBasisPoints: 1300},
			"DE": {RateBasisPoints: 1900, PricesIncludeTax: true},
		},
	}
}

func line(id string, unitPrice, qty int64, product string, categories ...string) Line {
	return Line{ID: id, VariantID: "var_" + id, ProductID: product, CategoryIDs: categories, UnitPrice: unitPrice, Quantity: qty}
}

func cart(country string, lines ...Line) Cart {
	return Cart{Currency: "EUR", Country: country, CustomerID: "cus_1", Lines: lines}
}

func withCodes(c Cart, codes ...string) Cart {
	c.Codes = codes
	return c
}

func pct(id string, bp int64, opts ...func(*Promotion)) Promotion {
	return promo(Promotion{ID: id, Kind: KindPercentage, Value: bp, Active: true}, opts)
}

func fixed(id string, amount int64, opts ...func(*Promotion)) Promotion {
	return promo(Promotion{ID: id, Kind: KindFixedAmount, Value: amount, Currency: "EUR", Active: true}, opts)
}

func freeShipping(id string, opts ...func(*Promotion)) Promotion {
	return promo(Promotion{ID: id, Kind: KindFreeShipping, Active: true}, opts)
}

func buyGet(id string, x, y int64, opts ...func(*Promotion)) Promotion {
	return promo(Promotion{ID: id, Kind: KindBuyXGetY, BuyX: x, GetY: y, Active: true}, opts)
}

func spend(id string, tiers []Tier, opts ...func(*Promotion)) Promotion {
	return promo(Promotion{ID: id, Kind: KindSpendThreshold, Tiers: tiers, Currency: "EUR", Active: true}, opts)
}

func promo(p Promotion, opts []func(*Promotion)) Promotion {
	for _, o := range opts {
		o(&p)
	}
	return p
}

func code(c string) func(*Promotion) { return func(p *Promotion) { p.Code = c } }
func prio(n int) func(*Promotion)    { return func(p *Promotion) { p.Priority = n } }
func exclusive(p *Promotion)         { p.Exclusive = true }
func inactive(p *Promotion)          { p.Active = false }
func minSub(v int64) func(*Promotion) {
	return func(p *Promotion) { p.MinSubtotal = v; p.Currency = "EUR" }
}
func products(ids ...string) func(*Promotion) {
	return func(p *Promotion) { p.ProductIDs = ids }
}
func categories(ids ...string) func(*Promotion) {
	return func(p *Promotion) { p.CategoryIDs = ids }
}
func customers(ids ...string) func(*Promotion) {
	return func(p *Promotion) { p.CustomerIDs = ids }
}

// checkInvariants fails t unless res adds up exactly for c (see brokenInvariant).
func checkInvariants(t testing.TB, c Cart, res Result) {
	t.Helper()
	if err := brokenInvariant(c, res); err != nil {
		t.Fatal(err)
	}
}

// brokenInvariant says how res fails to add up for c, if it does: every
// amount must be non-negative, lines and shipping must sum to the total, the
// totals must agree with each other, and the applied promotions must account
// for every discount.
func brokenInvariant(c Cart, res Result) error {
	if len(res.Lines) != len(c.Lines) {
		return fmt.Errorf("%d line results for %d lines", len(res.Lines), len(c.Lines))
	}
	var sub, disc, tax, total int64
	for i, l := range res.Lines {
		in := c.Lines[i]
		if l.LineID != in.ID || l.Subtotal != in.UnitPrice*in.Quantity {
			return fmt.Errorf("line %d = %+v for %+v", i, l, in)
		}
		if l.Discount < 0 || l.Discount > l.Subtotal || l.Tax < 0 || l.Total < 0 {
			return fmt.Errorf("line %d has a negative or excessive amount: %+v", i, l)
		}
		want := l.Subtotal - l.Discount
		if !res.PricesIncludeTax {
			want += l.Tax
		}
		if l.Total != want {
			return fmt.Errorf("line %d: total %d, want %d (%+v)", i, l.Total, want, l)
		}
		sub, disc, tax, total = sub+l.Subtotal, disc+l.Discount, tax+l.Tax, total+l.Total
	}
	s, tt := res.Shipping, res.Totals
	if s.Rate < 0 || s.Discount < 0 || s.Amount < 0 || s.Tax < 0 || s.Amount+s.Discount > s.Rate ||
		(s.FreeByThreshold && s.Amount != 0) {
		return fmt.Errorf("shipping %+v is inconsistent", s)
	}
	wantShip := s.Amount
	if !res.PricesIncludeTax {
		wantShip += s.Tax
	}
	if s.Total != wantShip {
		return fmt.Errorf("shipping total %d, want %d", s.Total, wantShip)
	}
	if tt.Subtotal != sub || tt.Discount != disc || tt.Tax != tax+s.Tax || tt.Shipping != s.Amount {
		return fmt.Errorf("totals %+v do not sum the lines (subtotal %d discount %d tax %d) and shipping %+v", tt, sub, disc, tax, s)
	}
	if total+s.Total != tt.Total {
		return fmt.Errorf("Σ line totals %d + shipping %d = %d, total says %d", total, s.Total, total+s.Total, tt.Total)
	}
	want := tt.Subtotal - tt.Discount + tt.Shipping
	if !res.PricesIncludeTax {
		want += tt.Tax
	}
	if tt.Total != want || tt.Total < 0 {
		return fmt.Errorf("total %d, but subtotal − discount + shipping (+ tax) = %d", tt.Total, want)
	}
	var applied int64
	for _, a := range res.Applied {
		if a.Amount <= 0 {
			return fmt.Errorf("applied %+v gives nothing", a)
		}
		applied += a.Amount
	}
	if applied != tt.Discount+s.Discount {
		return fmt.Errorf("applied promotions give %d, discounts are %d + shipping %d", applied, tt.Discount, s.Discount)
	}
	return nil
}
