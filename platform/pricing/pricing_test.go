package pricing

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestPrice(t *testing.T) {
	three3333 := cart("US", line("a", 3333, 1, "p1"), line("b", 3333, 1, "p2"), line("c", 3333, 1, "p3"))
	ten := []Line{line("a", 10_000, 1, "p1")}
	socks := func(lines ...Line) Cart { return cart("US", lines...) }
	tiers := []Tier{{MinSubtotal: 5000, Amount: 500}, {MinSubtotal: 10_000, Percent: 1000}, {MinSubtotal: 20_000, Amount: 3000}}

	tests := []struct {
		name          string
		cart          Cart
		promos        []Promotion
		want          Totals
		lineDiscounts []int64 // nil: not checked
		applied       []AppliedPromotion
		rejected      []RejectedCode
	}{
		{
			name: "no promotion, tax added per line and on shipping",
			// 3998 × 13% = 519.74 → 520; 2500 × 13% = 325; shipping 1000 × 13% = 130.
			cart: cart("CA", line("a", 1999, 2, "p1"), line("b", 2500, 1, "p2")),
			want: Totals{Subtotal: 6498, Shipping: 1000, Tax: 975, Total: 8473},
		},
		{
			name: "tax rounds half to even per line",
			// 50 × 13% = 6.5 → 6; 150 × 13% = 19.5 → 20.
			cart: cart("CA", line("a", 50, 1, "p1"), line("b", 150, 1, "p2")),
			want: Totals{Subtotal: 200, Shipping: 1000, Tax: 6 + 20 + 130, Total: 1356},
		},
		{
			name:          "100% discount leaves shipping and its tax",
			cart:          cart("CA", line("a", 1999, 2, "p1"), line("b", 2500, 1, "p2")),
			promos:        []Promotion{pct("all", 10_000)},
			want:          Totals{Subtotal: 6498, Discount: 6498, Shipping: 1000, Tax: 130, Total: 1130},
			lineDiscounts: []int64{3998, 2500},
			applied:       []AppliedPromotion{{ID: "all", Kind: KindPercentage, Amount: 6498}},
		},
		{
			name: "100% discount where prices include tax",
			// Shipping 499 contains 499 × 19/119 = 79.67 → 80.
			cart:          cart("DE", line("a", 1999, 2, "p1"), line("b", 2500, 1, "p2")),
			promos:        []Promotion{pct("all", 10_000)},
			want:          Totals{Subtotal: 6498, Discount: 6498, Shipping: 499, Tax: 80, Total: 499},
			lineDiscounts: []int64{3998, 2500},
			applied:       []AppliedPromotion{{ID: "all", Kind: KindPercentage, Amount: 6498}},
		},
		{
			name: "three lines of 33.33 and 10% off: 10% of 99.99 is 10.00, not 3 × 3.33",
			// 999.9 → 1000; shares 333.33 each; the missing unit goes to the first line.
			cart:          three3333,
			promos:        []Promotion{pct("ten", 1000)},
			want:          Totals{Subtotal: 9999, Discount: 1000, Shipping: 500, Total: 9499},
			lineDiscounts: []int64{334, 333, 333},
			applied:       []AppliedPromotion{{ID: "ten", Kind: KindPercentage, Amount: 1000}},
		},
		{
			name:          "three lines of 33.33 and 10.00 off",
			cart:          withCodes(three3333, "TEN"),
			promos:        []Promotion{fixed("ten", 1000, code("TEN"))},
			want:          Totals{Subtotal: 9999, Discount: 1000, Shipping: 500, Total: 9499},
			lineDiscounts: []int64{334, 333, 333},
			applied:       []AppliedPromotion{{ID: "ten", Code: "TEN", Kind: KindFixedAmount, Amount: 1000}},
		},
		{
			name: "33.33% off three lines of 10.00",
			// 3000 × 33.33% = 999.9 → 1000 = 334 + 333 + 333.
			cart:          cart("US", line("a", 1000, 1, "p1"), line("b", 1000, 1, "p2"), line("c", 1000, 1, "p3")),
			promos:        []Promotion{pct("third", 3333)},
			want:          Totals{Subtotal: 3000, Discount: 1000, Shipping: 500, Total: 2500},
			lineDiscounts: []int64{334, 333, 333},
			applied:       []AppliedPromotion{{ID: "third", Kind: KindPercentage, Amount: 1000}},
		},
		{
			name: "largest remainder, not the first line, gets the missing unit",
			// 3.33 over 1.00/2.00/7.00: exact 33.3, 66.6, 233.1 → 33, 67, 233.
			cart:          cart("US", line("a", 100, 1, "p1"), line("b", 200, 1, "p2"), line("c", 700, 1, "p3")),
			promos:        []Promotion{fixed("f", 333)},
			want:          Totals{Subtotal: 1000, Discount: 333, Shipping: 500, Total: 1167},
			lineDiscounts: []int64{33, 67, 233},
			applied:       []AppliedPromotion{{ID: "f", Kind: KindFixedAmount, Amount: 333}},
		},
		{
			name:          "a fixed amount larger than the cart stops at zero",
			cart:          cart("US", line("a", 1000, 1, "p1"), line("b", 2000, 1, "p2")),
			promos:        []Promotion{fixed("big", 5000)},
			want:          Totals{Subtotal: 3000, Discount: 3000, Shipping: 500, Total: 500},
			lineDiscounts: []int64{1000, 2000},
			applied:       []AppliedPromotion{{ID: "big", Kind: KindFixedAmount, Amount: 3000}},
		},
		{
			name: "stacking: higher priority first, the next on what is left",
			// 10% of 100.00 = 10.00, then 10.00 off.
			cart:    cart("US", ten...),
			promos:  []Promotion{fixed("fix", 1000, prio(5)), pct("pct", 1000, prio(10))},
			want:    Totals{Subtotal: 10_000, Discount: 2000, Shipping: 500, Total: 8500},
			applied: []AppliedPromotion{{ID: "pct", Kind: KindPercentage, Amount: 1000}, {ID: "fix", Kind: KindFixedAmount, Amount: 1000}},
		},
		{
			name: "stacking: the other priority order gives another amount",
			// 10.00 off, then 10% of 90.00 = 9.00.
			cart:    cart("US", ten...),
			promos:  []Promotion{fixed("fix", 1000, prio(10)), pct("pct", 1000, prio(5))},
			want:    Totals{Subtotal: 10_000, Discount: 1900, Shipping: 500, Total: 8600},
			applied: []AppliedPromotion{{ID: "fix", Kind: KindFixedAmount, Amount: 1000}, {ID: "pct", Kind: KindPercentage, Amount: 900}},
		},
		{
			name:    "stacking: equal priorities go by id",
			cart:    cart("US", ten...),
			promos:  []Promotion{pct("b-pct", 1000), fixed("a-fix", 1000)},
			want:    Totals{Subtotal: 10_000, Discount: 1900, Shipping: 500, Total: 8600},
			applied: []AppliedPromotion{{ID: "a-fix", Kind: KindFixedAmount, Amount: 1000}, {ID: "b-pct", Kind: KindPercentage, Amount: 900}},
		},
		{
			name:    "stacking: two percentages compound",
			cart:    cart("US", ten...),
			promos:  []Promotion{pct("a", 1000), pct("b", 1000)},
			want:    Totals{Subtotal: 10_000, Discount: 1900, Shipping: 500, Total: 8600},
			applied: []AppliedPromotion{{ID: "a", Kind: KindPercentage, Amount: 1000}, {ID: "b", Kind: KindPercentage, Amount: 900}},
		},
		{
			name: "shipping is free at the threshold",
			// 5000 contains 5000 × 19/119 = 798.32 → 798.
			cart: cart("DE", line("a", 2500, 2, "p1")),
			want: Totals{Subtotal: 5000, Shipping: 0, Tax: 798, Total: 5000},
		},
		{
			name: "shipping is charged one cent below the threshold",
			// 4999 × 19/119 = 798.15 → 798, plus 80 in the shipping.
			cart: cart("DE", line("a", 4999, 1, "p1")),
			want: Totals{Subtotal: 4999, Shipping: 499, Tax: 878, Total: 5498},
		},
		{
			name: "the threshold counts merchandise after discounts",
			// 4900 × 19/119 = 782.35 → 782, plus 80.
			cart:    withCodes(cart("DE", line("a", 5000, 1, "p1")), "ONE"),
			promos:  []Promotion{fixed("one", 100, code("ONE"))},
			want:    Totals{Subtotal: 5000, Discount: 100, Shipping: 499, Tax: 862, Total: 5399},
			applied: []AppliedPromotion{{ID: "one", Code: "ONE", Kind: KindFixedAmount, Amount: 100}},
		},
		{
			name:    "a free shipping promotion waives the charge",
			cart:    cart("US", line("a", 2000, 1, "p1")),
			promos:  []Promotion{freeShipping("ship")},
			want:    Totals{Subtotal: 2000, Shipping: 0, Total: 2000},
			applied: []AppliedPromotion{{ID: "ship", Kind: KindFreeShipping, Amount: 500}},
		},
		{
			name:     "a free shipping coupon gives nothing above the threshold",
			cart:     withCodes(cart("DE", line("a", 6000, 1, "p1")), "SHIP"),
			promos:   []Promotion{freeShipping("ship", code("SHIP"))},
			want:     Totals{Subtotal: 6000, Tax: 958, Total: 6000},
			rejected: []RejectedCode{{Code: "SHIP", PromotionID: "ship", Reason: ReasonNoBenefit}},
		},
		{
			name: "prices include tax: tax is contained per line",
			// 2380 × 19/119 = 380; 999 × 19/119 = 159.50 → 160; shipping 80.
			cart: cart("DE", line("a", 1190, 2, "p1"), line("b", 999, 1, "p2")),
			want: Totals{Subtotal: 3379, Shipping: 499, Tax: 620, Total: 3878},
		},
		{
			name: "prices include tax: tax on the discounted gross",
			// 10% of 119.00 = 11.90; 107.10 contains 17.10.
			cart:    cart("DE", line("a", 11_900, 1, "p1")),
			promos:  []Promotion{pct("ten", 1000)},
			want:    Totals{Subtotal: 11_900, Discount: 1190, Tax: 1710, Total: 10_710},
			applied: []AppliedPromotion{{ID: "ten", Kind: KindPercentage, Amount: 1190}},
		},
		{
			name:          "targeting by product",
			cart:          cart("US", line("a", 1000, 1, "p1"), line("b", 2000, 1, "p2")),
			promos:        []Promotion{pct("half", 5000, products("p2"))},
			want:          Totals{Subtotal: 3000, Discount: 1000, Shipping: 500, Total: 2500},
			lineDiscounts: []int64{0, 1000},
			applied:       []AppliedPromotion{{ID: "half", Kind: KindPercentage, Amount: 1000}},
		},
		{
			name:          "targeting by category, fixed amount spread over the targeted lines only",
			cart:          cart("US", line("a", 1000, 1, "p1", "shoes", "sale"), line("b", 2000, 1, "p2", "shoes"), line("c", 3000, 1, "p3", "sale")),
			promos:        []Promotion{fixed("sale", 1000, categories("sale"))},
			want:          Totals{Subtotal: 6000, Discount: 1000, Shipping: 500, Total: 5500},
			lineDiscounts: []int64{250, 0, 750},
			applied:       []AppliedPromotion{{ID: "sale", Kind: KindFixedAmount, Amount: 1000}},
		},
		{
			name:     "a coupon for items the cart does not hold",
			cart:     withCodes(cart("US", line("a", 1000, 1, "p1", "shoes")), "BOOKS"),
			promos:   []Promotion{pct("books", 1000, code("BOOKS"), categories("books"))},
			want:     Totals{Subtotal: 1000, Shipping: 500, Total: 1500},
			rejected: []RejectedCode{{Code: "BOOKS", PromotionID: "books", Reason: ReasonNotApplicable}},
		},
		{
			name:    "targeting by customer: the customer's coupon",
			cart:    withCodes(cart("US", line("a", 1000, 1, "p1")), "VIP"),
			promos:  []Promotion{pct("vip", 1000, code("VIP"), customers("cus_1"))},
			want:    Totals{Subtotal: 1000, Discount: 100, Shipping: 500, Total: 1400},
			applied: []AppliedPromotion{{ID: "vip", Code: "VIP", Kind: KindPercentage, Amount: 100}},
		},
		{
			name:     "targeting by customer: someone else's coupon",
			cart:     withCodes(cart("US", line("a", 1000, 1, "p1")), "VIP"),
			promos:   []Promotion{pct("vip", 1000, code("VIP"), customers("cus_2"))},
			want:     Totals{Subtotal: 1000, Shipping: 500, Total: 1500},
			rejected: []RejectedCode{{Code: "VIP", PromotionID: "vip", Reason: ReasonNotForCustomer}},
		},
		{
			name:     "targeting by customer: a guest",
			cart:     Cart{Currency: "EUR", Country: "US", Lines: []Line{line("a", 1000, 1, "p1")}, Codes: []string{"VIP"}},
			promos:   []Promotion{pct("vip", 1000, code("VIP"), customers("cus_1"))},
			want:     Totals{Subtotal: 1000, Shipping: 500, Total: 1500},
			rejected: []RejectedCode{{Code: "VIP", PromotionID: "vip", Reason: ReasonNotForCustomer}},
		},
		{
			name:     "minimum subtotal not reached",
			cart:     withCodes(cart("US", line("a", 4999, 1, "p1")), "MIN50"),
			promos:   []Promotion{fixed("min50", 500, code("MIN50"), minSub(5000))},
			want:     Totals{Subtotal: 4999, Shipping: 500, Total: 5499},
			rejected: []RejectedCode{{Code: "MIN50", PromotionID: "min50", Reason: ReasonBelowMinimum}},
		},
		{
			name:    "minimum subtotal reached exactly",
			cart:    withCodes(cart("US", line("a", 5000, 1, "p1")), "MIN50"),
			promos:  []Promotion{fixed("min50", 500, code("MIN50"), minSub(5000))},
			want:    Totals{Subtotal: 5000, Discount: 500, Shipping: 500, Total: 5000},
			applied: []AppliedPromotion{{ID: "min50", Code: "MIN50", Kind: KindFixedAmount, Amount: 500}},
		},
		{
			name:          "buy 2 get 1: the cheapest unit is free",
			cart:          socks(line("a", 1000, 2, "p1", "socks"), line("b", 500, 1, "p2", "socks"), line("c", 800, 1, "p3", "socks")),
			promos:        []Promotion{buyGet("b2g1", 2, 1, categories("socks"))},
			want:          Totals{Subtotal: 3300, Discount: 500, Shipping: 500, Total: 3300},
			lineDiscounts: []int64{0, 500, 0},
			applied:       []AppliedPromotion{{ID: "b2g1", Kind: KindBuyXGetY, Amount: 500}},
		},
		{
			name: "buy 2 get 1: six units, the two cheapest free",
			cart: socks(line("a", 1000, 3, "p1", "socks"), line("b", 500, 1, "p2", "socks"),
				line("c", 800, 2, "p3", "socks"), line("d", 100, 1, "p4", "hats")),
			promos:        []Promotion{buyGet("b2g1", 2, 1, categories("socks"))},
			want:          Totals{Subtotal: 5200, Discount: 1300, Shipping: 500, Total: 4400},
			lineDiscounts: []int64{0, 500, 800, 0},
			applied:       []AppliedPromotion{{ID: "b2g1", Kind: KindBuyXGetY, Amount: 1300}},
		},
		{
			name:     "buy 2 get 1 with two units",
			cart:     withCodes(socks(line("a", 1000, 2, "p1", "socks")), "B2G1"),
			promos:   []Promotion{buyGet("b2g1", 2, 1, code("B2G1"), categories("socks"))},
			want:     Totals{Subtotal: 2000, Shipping: 500, Total: 2500},
			rejected: []RejectedCode{{Code: "B2G1", PromotionID: "b2g1", Reason: ReasonBelowMinimum}},
		},
		{
			name:     "spend tiers: below the first",
			cart:     withCodes(cart("US", line("a", 4999, 1, "p1")), "SPEND"),
			promos:   []Promotion{spend("spend", tiers, code("SPEND"))},
			want:     Totals{Subtotal: 4999, Shipping: 500, Total: 5499},
			rejected: []RejectedCode{{Code: "SPEND", PromotionID: "spend", Reason: ReasonBelowMinimum}},
		},
		{
			name:    "spend tiers: the first",
			cart:    cart("US", line("a", 7500, 1, "p1")),
			promos:  []Promotion{spend("spend", tiers)},
			want:    Totals{Subtotal: 7500, Discount: 500, Shipping: 500, Total: 7500},
			applied: []AppliedPromotion{{ID: "spend", Kind: KindSpendThreshold, Amount: 500}},
		},
		{
			name:    "spend tiers: a percentage tier",
			cart:    cart("US", line("a", 6000, 2, "p1")),
			promos:  []Promotion{spend("spend", tiers)},
			want:    Totals{Subtotal: 12_000, Discount: 1200, Shipping: 500, Total: 11_300},
			applied: []AppliedPromotion{{ID: "spend", Kind: KindSpendThreshold, Amount: 1200}},
		},
		{
			name:    "spend tiers: the top",
			cart:    cart("US", line("a", 25_000, 1, "p1")),
			promos:  []Promotion{spend("spend", tiers)},
			want:    Totals{Subtotal: 25_000, Discount: 3000, Shipping: 500, Total: 22_500},
			applied: []AppliedPromotion{{ID: "spend", Kind: KindSpendThreshold, Amount: 3000}},
		},
		{
			name:     "kill switch: an inactive coupon and an inactive campaign",
			cart:     withCodes(cart("US", line("a", 1000, 1, "p1")), "OFF"),
			promos:   []Promotion{pct("off", 1000, code("OFF"), inactive), pct("auto", 1000, inactive)},
			want:     Totals{Subtotal: 1000, Shipping: 500, Total: 1500},
			rejected: []RejectedCode{{Code: "OFF", PromotionID: "off", Reason: ReasonInactive}},
		},
		{
			name: "an exclusive coupon excludes a campaign of higher priority and another coupon",
			cart: withCodes(cart("US", ten...), "SOLO", "TEN"),
			promos: []Promotion{pct("auto", 1000, prio(9)), fixed("solo", 2000, code("SOLO"), exclusive),
				fixed("ten", 1000, code("TEN"))},
			want:     Totals{Subtotal: 10_000, Discount: 2000, Shipping: 500, Total: 8500},
			applied:  []AppliedPromotion{{ID: "solo", Code: "SOLO", Kind: KindFixedAmount, Amount: 2000}},
			rejected: []RejectedCode{{Code: "TEN", PromotionID: "ten", Reason: ReasonNotCombinable}},
		},
		{
			name:     "the exclusive of highest priority wins, even when it gives less",
			cart:     withCodes(cart("US", ten...), "BIG", "SMALL"),
			promos:   []Promotion{pct("big", 5000, code("BIG"), exclusive, prio(1)), fixed("small", 100, code("SMALL"), exclusive, prio(2))},
			want:     Totals{Subtotal: 10_000, Discount: 100, Shipping: 500, Total: 10_400},
			applied:  []AppliedPromotion{{ID: "small", Code: "SMALL", Kind: KindFixedAmount, Amount: 100}},
			rejected: []RejectedCode{{Code: "BIG", PromotionID: "big", Reason: ReasonNotCombinable}},
		},
		{
			name:     "an exclusive promotion that gives nothing excludes nothing",
			cart:     withCodes(cart("DE", line("a", 6000, 1, "p1")), "SHIP"),
			promos:   []Promotion{freeShipping("ship", code("SHIP"), exclusive, prio(5)), pct("ten", 1000)},
			want:     Totals{Subtotal: 6000, Discount: 600, Tax: 862, Total: 5400},
			applied:  []AppliedPromotion{{ID: "ten", Kind: KindPercentage, Amount: 600}},
			rejected: []RejectedCode{{Code: "SHIP", PromotionID: "ship", Reason: ReasonNoBenefit}},
		},
		{
			name:     "a combinable coupon after a 100% discount gives nothing",
			cart:     withCodes(cart("US", line("a", 1000, 1, "p1")), "TEN"),
			promos:   []Promotion{pct("all", 10_000, prio(1)), fixed("ten", 1000, code("TEN"))},
			want:     Totals{Subtotal: 1000, Discount: 1000, Shipping: 500, Total: 500},
			applied:  []AppliedPromotion{{ID: "all", Kind: KindPercentage, Amount: 1000}},
			rejected: []RejectedCode{{Code: "TEN", PromotionID: "ten", Reason: ReasonNoBenefit}},
		},
		{
			name:   "codes are matched ignoring case, and a code given twice counts once",
			cart:   withCodes(cart("US", line("a", 1000, 1, "p1")), "nope", "ten", "TEN"),
			promos: []Promotion{fixed("ten", 100, code("TEN"))},
			want:   Totals{Subtotal: 1000, Discount: 100, Shipping: 500, Total: 1400},
			applied: []AppliedPromotion{
				{ID: "ten", Code: "TEN", Kind: KindFixedAmount, Amount: 100},
			},
			rejected: []RejectedCode{{Code: "nope", Reason: ReasonUnknownCode}},
		},
		{
			name: "rejections follow the cart's order of codes",
			cart: withCodes(cart("US", line("a", 1000, 1, "p1")), "ZZZ", "OFF", "USD"),
			promos: []Promotion{
				pct("off", 1000, code("OFF"), inactive),
				fixed("usd", 100, code("USD"), func(p *Promotion) { p.Currency = "USD" }),
			},
			want: Totals{Subtotal: 1000, Shipping: 500, Total: 1500},
			rejected: []RejectedCode{
				{Code: "ZZZ", Reason: ReasonUnknownCode},
				{Code: "OFF", PromotionID: "off", Reason: ReasonInactive},
				{Code: "USD", PromotionID: "usd", Reason: ReasonWrongCurrency},
			},
		},
		{
			name:     "a malformed promotion is skipped, not fatal",
			cart:     withCodes(cart("US", line("a", 1000, 1, "p1")), "HUGE"),
			promos:   []Promotion{pct("huge", 20_000, code("HUGE")), pct("auto", 0)},
			want:     Totals{Subtotal: 1000, Shipping: 500, Total: 1500},
			rejected: []RejectedCode{{Code: "HUGE", PromotionID: "huge", Reason: ReasonInvalid}},
		},
		{
			name:     "an empty cart costs nothing, not even shipping",
			cart:     withCodes(cart("US"), "TEN"),
			promos:   []Promotion{fixed("ten", 1000, code("TEN")), freeShipping("ship")},
			want:     Totals{},
			rejected: []RejectedCode{{Code: "TEN", PromotionID: "ten", Reason: ReasonNotApplicable}},
		},
		{
			name: "a cart without a country uses the defaults",
			cart: cart("", line("a", 1000, 1, "p1")),
			want: Totals{Subtotal: 1000, Shipping: 1500, Total: 2500},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Price(tt.cart, tt.promos, testConfig(), now)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, tt.cart, res)
			if res.Totals != tt.want {
				t.Errorf("totals = %+v, want %+v", res.Totals, tt.want)
			}
			if tt.lineDiscounts != nil {
				got := make([]int64, len(res.Lines))
				for i, l := range res.Lines {
					got[i] = l.Discount
				}
				if !slices.Equal(got, tt.lineDiscounts) {
					t.Errorf("line discounts = %v, want %v", got, tt.lineDiscounts)
				}
			}
			if !slices.Equal(res.Applied, tt.applied) {
				t.Errorf("applied = %+v, want %+v", res.Applied, tt.applied)
			}
			if !slices.Equal(res.Rejected, tt.rejected) {
				t.Errorf("rejected = %+v, want %+v", res.Rejected, tt.rejected)
			}
		})
	}
}

func TestPriceTimeWindow(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	end := start.Add(72 * time.Hour)
	window := func(p *Promotion) { p.StartsAt, p.EndsAt = start, end }
	c := withCodes(cart("US", line("a", 1000, 1, "p1")), "BLACKFRIDAY")
	promos := []Promotion{pct("bf", 2000, code("BLACKFRIDAY"), window)}

	tests := []struct {
		name   string
		now    time.Time
		reason Reason // "": applies
	}{
		{"a second before the start", start.Add(-time.Second), ReasonNotStarted},
		{"at the start", start, ""},
		{"in the window, in another zone", start.Add(time.Hour).In(time.FixedZone("UTC-5", -5*3600)), ""},
		{"a nanosecond before the end", end.Add(-1), ""},
		{"at the end", end, ReasonExpired},
		{"long after", end.AddDate(1, 0, 0), ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Price(c, promos, testConfig(), tt.now)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, c, res)
			if tt.reason == "" {
				if res.Totals.Discount != 200 || len(res.Rejected) != 0 {
					t.Fatalf("discount %d, rejected %+v; want 200 and none", res.Totals.Discount, res.Rejected)
				}
				return
			}
			want := []RejectedCode{{Code: "BLACKFRIDAY", PromotionID: "bf", Reason: tt.reason}}
			if res.Totals.Discount != 0 || !slices.Equal(res.Rejected, want) {
				t.Fatalf("discount %d, rejected %+v; want 0 and %+v", res.Totals.Discount, res.Rejected, want)
			}
		})
	}
}

func TestPriceErrors(t *testing.T) {
	ok := cart("US", line("a", 1000, 1, "p1"))
	tests := []struct {
		name string
		cart Cart
		cfg  func(*Config)
		want error
	}{
		{"cart in another currency", Cart{Currency: "USD", Country: "US", Lines: ok.Lines}, nil, ErrCurrencyMismatch},
		{"config in another currency", ok, func(c *Config) { c.Currency = "GBP" }, ErrCurrencyMismatch},
		{"not a currency", Cart{Currency: "EURO", Lines: ok.Lines}, func(c *Config) { c.Currency = "EURO" }, ErrInvalidCart},
		{"lower-case country", cart("us", ok.Lines...), nil, ErrInvalidCart},
		{"line without id", cart("US", line("", 1000, 1, "p1")), nil, ErrInvalidCart},
		{"zero quantity", cart("US", line("a", 1000, 0, "p1")), nil, ErrInvalidCart},
		{"quantity too large", cart("US", line("a", 1, MaxQuantity+1, "p1")), nil, ErrInvalidCart},
		{"negative price", cart("US", line("a", -1, 1, "p1")), nil, ErrInvalidCart},
		{"subtotal too large", cart("US", line("a", 1_000_000_000_000, 1, "p1"), line("b", 1, 1, "p2")), nil, ErrInvalidCart},
		{"tax rate out of range", ok, func(c *Config) { c.Tax["US"] = TaxRule{RateBasisPoints: 10_001} }, ErrInvalidConfig},
		{"negative shipping", ok, func(c *Config) { c.Shipping["US"] = ShippingRate{Amount: -1} }, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			_, err := Price(tt.cart, nil, cfg, now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"the test config", func(*Config) {}, true},
		{"no currency", func(c *Config) { c.Currency = "" }, false},
		{"country not alpha-2", func(c *Config) { c.Shipping["DEU"] = ShippingRate{} }, false},
		{"negative free-above", func(c *Config) { c.DefaultShipping.FreeAbove = -1 }, false},
		{"negative tax", func(c *Config) { c.Tax["FR"] = TaxRule{RateBasisPoints: -1} }, false},
		{"tax above 100%", func(c *Config) { c.DefaultTax.RateBasisPoints = MaxTaxRate + 1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.edit(&cfg)
			if err := cfg.Validate(); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestPromotionValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Promotion
		ok   bool
	}{
		{"percentage", pct("p", 1500), true},
		{"percentage of nothing", pct("p", 0), false},
		{"more than 100%", pct("p", 10_001), false},
		{"no id", pct("", 1500), false},
		{"fixed without currency", fixed("f", 100, func(p *Promotion) { p.Currency = "" }), false},
		{"minimum without currency", pct("p", 100, func(p *Promotion) { p.MinSubtotal = 100 }), false},
		{"buy 0 get 1", buyGet("b", 0, 1), false},
		{"tiers not ascending", spend("s", []Tier{{MinSubtotal: 200, Amount: 1}, {MinSubtotal: 100, Amount: 2}}), false},
		{"tier with percent and amount", spend("s", []Tier{{MinSubtotal: 100, Percent: 1, Amount: 1}}), false},
		{"no tiers", spend("s", nil), false},
		{"unknown kind", Promotion{ID: "x", Kind: "bogus"}, false},
		{"window ends before it starts", pct("p", 1, func(p *Promotion) { p.StartsAt, p.EndsAt = now, now }), false},
		{"free shipping", freeShipping("s"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.p.Validate(); (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidPromotion)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestRoundHalfEven(t *testing.T) {
	tests := []struct{ a, b, c, want int64 }{
		{5, 1, 2, 2},   // 2.5 → 2
		{15, 1, 10, 2}, // 1.5 → 2
		{25, 1, 10, 2}, // 2.5 → 2
		{35, 1, 10, 4}, // 3.5 → 4
		{26, 1, 10, 3}, // 2.6 → 3
		{24, 1, 10, 2}, // 2.4 → 2
		{0, 7, 3, 0},
		{1_000_000_000_000, 1_000_000_000_000, 1_000_000_000_000, 1_000_000_000_000}, // needs 128 bits
	}
	for _, tt := range tests {
		if got := mulDivRound(tt.a, tt.b, tt.c); got != tt.want {
			t.Errorf("mulDivRound(%d, %d, %d) = %d, want %d", tt.a, tt.b, tt.c, got, tt.want)
		}
	}
}
