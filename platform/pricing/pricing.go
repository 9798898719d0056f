// Package pricing computes what a cart costs — subtotal, discounts allocated
// to lines, shipping, tax and total — in one pure function shared by the cart
// and the order services, so that checkout charges what the cart showed.
//
// Price does no I/O and reads no clock: the caller passes the promotions,
// the shipping and tax table and the time. The order of application, the
// rounding and the tax arithmetic are explained in
// docs/adr/0014-pricing-and-rounding.md.
package pricing

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mercato/mercato/platform/money"
)

// MaxQuantity bounds a line's quantity; with money.MaxAmount it keeps every
// product of a price and a quantity within int64.
const MaxQuantity = 1_000_000

var (
	// ErrCurrencyMismatch means the cart is in another currency than the
	// Config, whose amounts would then be misread.
	ErrCurrencyMismatch = errors.New("the cart's currency is not the pricing config's")
	// ErrInvalidCart means a line or the cart itself is malformed.
	ErrInvalidCart = errors.New("invalid cart")
	// ErrInvalidConfig means a shipping rate or tax rule is out of range.
	ErrInvalidConfig = errors.New("invalid pricing config")
)

// Line is one variant in a cart at the unit price the cart holds for it.
type Line struct {
	ID          string
	VariantID   string
	ProductID   string
	CategoryIDs []string
	// UnitPrice is in minor units, gross or net as the country's TaxRule says.
	UnitPrice int64
	Quantity  int64
}

// Cart is what Price prices.
type Cart struct {
	// Currency is the ISO 4217 code of every amount in the cart.
	Currency string
	// Country is the destination (ISO 3166-1 alpha-2); "" until the customer
	// gives an address, which prices with the Config's defaults.
	Country string
	// CustomerID is "" for a guest.
	CustomerID string
	Lines      []Line
	// Codes are the coupon codes the customer applied, in the order applied.
	Codes []string
}

// Result is a priced cart. Lines[i] prices Cart.Lines[i], and the parts
// always add up exactly:
//
//	Totals.Total = Σ Lines[i].Total + Shipping.Total
//	Totals.Total = Subtotal − Discount + Shipping (+ Tax when prices exclude tax)
type Result struct {
	Currency string
	// PricesIncludeTax tells whether Tax is contained in the other amounts
	// (true) or added to them.
	PricesIncludeTax bool
	Totals           Totals
	Lines            []LineResult
	Shipping         ShippingResult
	// Applied lists the promotions that gave something, in the order they
	// were applied. Σ Amount = Totals.Discount + Shipping.Discount.
	Applied []AppliedPromotion
	// Rejected explains, in the cart's order of codes, each coupon code that
	// gives nothing. Automatic campaigns that do not apply are not listed.
	Rejected []RejectedCode
}

// Totals are the cart's totals, in minor units.
type Totals struct {
	// Subtotal is Σ unit price × quantity.
	Subtotal int64
	// Discount is what promotions took off the lines (a waived shipping
	// charge is in Shipping.Discount, not here).
	Discount int64
	// Shipping is the shipping charged, after thresholds and promotions.
	Shipping int64
	// Tax is the tax on the lines and on shipping: contained in the other
	// amounts when PricesIncludeTax, otherwise added by Total.
	Tax int64
	// Total is what the customer pays.
	Total int64
}

// LineResult is one line's share of the totals.
type LineResult struct {
	LineID   string
	Subtotal int64 // unit price × quantity
	Discount int64 // this line's share of every promotion applied
	Tax      int64
	Total    int64 // Subtotal − Discount, plus Tax when prices exclude tax
}

// ShippingResult is how the shipping charge came about.
type ShippingResult struct {
	// Rate is the table's charge for the cart's country (0 for an empty cart).
	Rate int64
	// FreeByThreshold is set when the merchandise reached the rate's FreeAbove.
	FreeByThreshold bool
	// Discount is what a free_shipping promotion waived.
	Discount int64
	// Amount is what is charged for shipping (Totals.Shipping).
	Amount int64
	// Tax is the tax on Amount, at the country's rate.
	Tax int64
	// Total is Amount, plus Tax when prices exclude tax.
	Total int64
}

// AppliedPromotion is a promotion that gave Amount off the cart.
type AppliedPromotion struct {
	ID     string
	Code   string
	Kind   Kind
	Amount int64
}

// RejectedCode is a coupon code of the cart that gives nothing, and why.
type RejectedCode struct {
	// Code is spelled as in the cart.
	Code string
	// PromotionID is "" for ReasonUnknownCode.
	PromotionID string
	Reason      Reason
}

// Price prices c with the promotions that are live or whose codes c carries,
// the shipping and tax table cfg (in c's currency), at time now.
//
// It fails only on a malformed cart or config or a currency mismatch; a
// promotion that does not apply is skipped, and explained in Rejected when
// the cart carries its code.
func Price(c Cart, promos []Promotion, cfg Config, now time.Time) (Result, error) {
	if c.Currency != cfg.Currency {
		return Result{}, fmt.Errorf("%w: cart in %q, config in %q", ErrCurrencyMismatch, c.Currency, cfg.Currency)
	}
	if !money.ValidCurrency(c.Currency) {
		return Result{}, fmt.Errorf("%w: currency %q is not an ISO 4217 code", ErrInvalidCart, c.Currency)
	}
	if c.Country != "" && !validCountry(c.Country) {
		return Result{}, fmt.Errorf("%w: country %q is not an ISO 3166-1 alpha-2 code", ErrInvalidCart, c.Country)
	}
	ship, tax, err := cfg.rules(c.Country)
	if err != nil {
		return Result{}, err
	}

	w := work{cart: c, ship: ship}
	w.lines = make([]LineResult, len(c.Lines))
	var subtotal int64
	for i := range c.Lines {
		l := &c.Lines[i]
		switch {
		case l.ID == "":
			return Result{}, fmt.Errorf("%w: line %d has no id", ErrInvalidCart, i)
		case l.Quantity < 1 || l.Quantity > MaxQuantity:
			return Result{}, fmt.Errorf("%w: line %s: quantity %d is outside 1..%d", ErrInvalidCart, l.ID, l.Quantity, MaxQuantity)
		case !inAmountRange(l.UnitPrice):
			return Result{}, fmt.Errorf("%w: line %s: unit price %d is outside 0..%d", ErrInvalidCart, l.ID, l.UnitPrice, int64(money.MaxAmount))
		}
		sub := l.UnitPrice * l.Quantity
		subtotal += sub
		if sub > money.MaxAmount || subtotal > money.MaxAmount {
			return Result{}, fmt.Errorf("%w: line %s: the cart's subtotal exceeds %d", ErrInvalidCart, l.ID, int64(money.MaxAmount))
		}
		w.lines[i] = LineResult{LineID: l.ID, Subtotal: sub}
	}
	if n := len(c.Lines); n > len(w.maskBuf) {
		w.bigMask, w.bigRems, w.bigIdx = make([]bool, n), make([]int64, n), make([]int, n)
	}
	var candBuf [8]candidate
	var codeBuf [8]bool
	var matched []bool
	if n := len(c.Codes); n > len(codeBuf) {
		matched = make([]bool, n)
	} else {
		matched = codeBuf[:n]
	}
	cands := w.candidates(promos, now, candBuf[:0], matched)
	w.choose(cands)

	res := Result{Currency: c.Currency, PricesIncludeTax: tax.PricesIncludeTax, Rejected: w.rejected}

	// Tax per line, so that each line is a complete, refundable amount and
	// the totals are plain sums.
	t := &res.Totals
	for i := range w.lines {
		l := &w.lines[i]
		net := l.Subtotal - l.Discount
		l.Tax, l.Total = taxOf(net, tax)
		t.Subtotal += l.Subtotal
		t.Discount += l.Discount
		t.Tax += l.Tax
		t.Total += l.Total
	}
	s := &res.Shipping
	s.Rate, s.FreeByThreshold, s.Discount, s.Amount = w.shipRate, w.freeByThreshold, w.shipDiscount, w.shipAmount
	s.Tax, s.Total = taxOf(s.Amount, tax)
	t.Shipping = s.Amount
	t.Tax += s.Tax
	t.Total += s.Total
	res.Lines = w.lines

	n := 0
	for i := range cands {
		if cands[i].amount > 0 {
			n++
		}
	}
	if n > 0 {
		res.Applied = make([]AppliedPromotion, 0, n)
		for i := range cands {
			if cd := &cands[i]; cd.amount > 0 {
				res.Applied = append(res.Applied, AppliedPromotion{ID: cd.p.ID, Code: cd.p.Code, Kind: cd.p.Kind, Amount: cd.amount})
			}
		}
	}
	if len(res.Rejected) > 1 {
		slices.SortStableFunc(res.Rejected, func(a, b RejectedCode) int {
			return cmp.Or(cmp.Compare(slices.Index(c.Codes, a.Code), slices.Index(c.Codes, b.Code)),
				strings.Compare(a.PromotionID, b.PromotionID))
		})
	}
	return res, nil
}

// taxOf returns the tax in amount and what the customer pays for it: for
// gross prices the tax contained, amount × r / (10000 + r), and amount
// itself; for net prices amount × r / 10000 and amount plus that tax. Both
// round half to even on the minor unit.
func taxOf(amount int64, r TaxRule) (tax, total int64) {
	if r.PricesIncludeTax {
		return mulDivRound(amount, r.RateBasisPoints, 10_000+r.RateBasisPoints), amount
	}
	tax = mulDivRound(amount, r.RateBasisPoints, 10_000)
	return tax, amount + tax
}

// candidate is a promotion that passed every check that does not depend on
// other promotions.
type candidate struct {
	p      *Promotion
	base   int64 // targeted lines' subtotal before any discount
	units  int64 // targeted units
	tier   Tier  // the tier reached, for KindSpendThreshold
	on     bool  // part of the current run
	amount int64 // what it gave in the last run
}

// work is the state of one Price call. It lives on the stack, and with it
// the buffers for carts of up to 32 lines, so that a typical cart allocates
// nothing beyond its Result. (It holds no pointer to itself or to another
// local: escape analysis would then move it to the heap.)
type work struct {
	cart     Cart
	ship     ShippingRate
	lines    []LineResult
	rejected []RejectedCode

	shipRate, shipDiscount, shipAmount int64
	freeByThreshold                    bool

	maskBuf [32]bool
	remBuf  [32]int64
	idxBuf  [32]int
	bigMask []bool // for carts of more lines
	bigRems []int64
	bigIdx  []int
}

// buffers returns, with one element per line: the lines targeted by the
// promotion being applied, the remainders of a pro-rata split, and room to
// order line indices.
func (w *work) buffers() (mask []bool, rems []int64, idx []int) {
	if w.bigMask != nil {
		return w.bigMask, w.bigRems, w.bigIdx
	}
	n := len(w.lines)
	return w.maskBuf[:n], w.remBuf[:n], w.idxBuf[:n]
}

// candidates appends to cands the promotions that could apply to the cart,
// in the order of application, and rejects the cart's codes that cannot.
// matched has one element per code of the cart, all false.
func (w *work) candidates(promos []Promotion, now time.Time, cands []candidate, matched []bool) []candidate {
	c := &w.cart
	for i := range promos {
		p := &promos[i]
		code := -1
		if p.Code != "" {
			for k, cc := range c.Codes {
				if strings.EqualFold(cc, p.Code) {
					code = k
					break
				}
			}
			if code < 0 {
				continue // a coupon the cart does not carry
			}
			matched[code] = true
		}
		cd := candidate{p: p}
		if reason := w.check(&cd, now); reason != "" {
			if code >= 0 {
				w.rejected = append(w.rejected, RejectedCode{Code: c.Codes[code], PromotionID: p.ID, Reason: reason})
			}
			continue
		}
		cands = append(cands, cd)
	}
	for k, cc := range c.Codes {
		if !matched[k] && !slices.ContainsFunc(c.Codes[:k], func(prev string) bool { return strings.EqualFold(prev, cc) }) {
			w.rejected = append(w.rejected, RejectedCode{Code: cc, Reason: ReasonUnknownCode})
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(b.p.Priority, a.p.Priority), strings.Compare(a.p.ID, b.p.ID))
	})
	return cands
}

// check decides whether cd's promotion can apply to the cart at now, on its
// own, and fills in what it targets. It returns the reason when it cannot.
func (w *work) check(cd *candidate, now time.Time) Reason {
	p, c := cd.p, &w.cart
	switch {
	case p.Validate() != nil:
		return ReasonInvalid
	case !p.Active:
		return ReasonInactive
	case !p.StartsAt.IsZero() && now.Before(p.StartsAt):
		return ReasonNotStarted
	case !p.EndsAt.IsZero() && !now.Before(p.EndsAt):
		return ReasonExpired
	case p.Currency != "" && p.Currency != c.Currency:
		return ReasonWrongCurrency
	case len(p.CustomerIDs) > 0 && (c.CustomerID == "" || !contains(p.CustomerIDs, c.CustomerID)):
		return ReasonNotForCustomer
	}
	targeted := false
	for i := range c.Lines {
		if l := &c.Lines[i]; p.targets(l) {
			targeted = true
			cd.base += w.lines[i].Subtotal
			cd.units += l.Quantity
		}
	}
	if !targeted {
		return ReasonNotApplicable
	}
	if cd.base < p.MinSubtotal {
		return ReasonBelowMinimum
	}
	switch p.Kind {
	case KindSpendThreshold:
		reached := false
		for _, t := range p.Tiers {
			if cd.base >= t.MinSubtotal {
				cd.tier, reached = t, true
			}
		}
		if !reached {
			return ReasonBelowMinimum
		}
	case KindBuyXGetY:
		if cd.units < p.BuyX+p.GetY {
			return ReasonBelowMinimum
		}
	}
	return ""
}

// choose decides which candidates apply and leaves their effect in w. An
// exclusive candidate that gives something, tried in order, is the only one
// applied; without one, every combinable candidate is applied in order.
func (w *work) choose(cands []candidate) {
	winner := -1
	for i := range cands {
		if !cands[i].p.Exclusive {
			continue
		}
		cands[i].on = true
		w.run(cands)
		cands[i].on = false
		if cands[i].amount > 0 {
			winner = i
			break
		}
		w.reject(&cands[i], ReasonNoBenefit)
	}
	if winner >= 0 {
		for i := range cands {
			if i != winner && (i > winner || !cands[i].p.Exclusive) {
				w.reject(&cands[i], ReasonNotCombinable)
			}
		}
		return // the winner's trial run is the result
	}
	for i := range cands {
		cands[i].on = !cands[i].p.Exclusive
	}
	w.run(cands)
	for i := range cands {
		if cands[i].on && cands[i].amount == 0 {
			w.reject(&cands[i], ReasonNoBenefit)
		}
	}
}

// reject records reason for a coupon; automatic campaigns go unmentioned.
func (w *work) reject(cd *candidate, reason Reason) {
	cd.amount = 0
	if cd.p.Code == "" {
		return
	}
	for _, cc := range w.cart.Codes {
		if strings.EqualFold(cc, cd.p.Code) {
			w.rejected = append(w.rejected, RejectedCode{Code: cc, PromotionID: cd.p.ID, Reason: reason})
			return
		}
	}
}

// run applies the candidates that are on, in order, each to what earlier
// ones left, then works out shipping and applies free shipping.
func (w *work) run(cands []candidate) {
	for i := range w.lines {
		w.lines[i].Discount = 0
	}
	for i := range cands {
		cd := &cands[i]
		cd.amount = 0
		if !cd.on {
			continue
		}
		switch p := cd.p; p.Kind {
		case KindPercentage:
			cd.amount = w.percentOff(p, p.Value)
		case KindFixedAmount:
			cd.amount = w.amountOff(p, p.Value)
		case KindSpendThreshold:
			if cd.tier.Percent > 0 {
				cd.amount = w.percentOff(p, cd.tier.Percent)
			} else {
				cd.amount = w.amountOff(p, cd.tier.Amount)
			}
		case KindBuyXGetY:
			cd.amount = w.buyXGetY(cd)
		}
	}

	// Shipping depends on the merchandise after discounts, so it comes last.
	w.shipRate, w.shipDiscount, w.shipAmount, w.freeByThreshold = 0, 0, 0, false
	if len(w.lines) == 0 {
		return // nothing to ship
	}
	var merch int64
	for i := range w.lines {
		merch += w.lines[i].Subtotal - w.lines[i].Discount
	}
	w.shipRate, w.shipAmount = w.ship.Amount, w.ship.Amount
	if w.ship.FreeAbove > 0 && merch >= w.ship.FreeAbove {
		w.shipAmount, w.freeByThreshold = 0, true
	}
	for i := range cands {
		if cd := &cands[i]; cd.on && cd.p.Kind == KindFreeShipping && w.shipAmount > 0 {
			cd.amount, w.shipDiscount, w.shipAmount = w.shipAmount, w.shipAmount, 0
		}
	}
}

// target marks the lines p targets that have something left to discount
// and returns what is left on them.
func (w *work) target(p *Promotion) (left int64) {
	mask, _, _ := w.buffers()
	for i := range w.lines {
		rest := w.lines[i].Subtotal - w.lines[i].Discount
		mask[i] = rest > 0 && p.targets(&w.cart.Lines[i])
		if mask[i] {
			left += rest
		}
	}
	return left
}

// percentOff takes bp basis points of what is left on p's lines, rounded
// half to even on the cart-level amount, and allocates it to the lines.
func (w *work) percentOff(p *Promotion, bp int64) int64 {
	left := w.target(p)
	return w.allocate(mulDivRound(left, bp, 10_000), left)
}

// amountOff takes amount, at most what is left on p's lines, and allocates
// it to the lines.
func (w *work) amountOff(p *Promotion, amount int64) int64 {
	left := w.target(p)
	return w.allocate(min(amount, left), left)
}

// allocate splits d over the masked lines pro rata to what is left on each
// (which sums to left) by the largest-remainder method: each line gets the
// floor of its exact share, and the units still missing go one each to the
// lines with the largest remainders, earlier lines first on ties. The shares
// sum to d exactly, and no line gets more than is left on it.
func (w *work) allocate(d, left int64) int64 {
	if d <= 0 {
		return 0
	}
	mask, rems, idx := w.buffers()
	if d == left {
		for i := range w.lines {
			if mask[i] {
				w.lines[i].Discount = w.lines[i].Subtotal
			}
		}
		return d
	}
	given := int64(0)
	idx = idx[:0]
	for i := range w.lines {
		if !mask[i] {
			continue
		}
		l := &w.lines[i]
		q, r := mulDiv(d, l.Subtotal-l.Discount, left)
		l.Discount += q
		given += q
		rems[i] = r
		idx = append(idx, i)
	}
	// Σ remainders = left × (d − given) and each remainder is below left,
	// so more than d − given lines have a remainder and each can take one
	// more unit without passing its exact share rounded up.
	if missing := int(d - given); missing > 0 {
		slices.SortFunc(idx, func(a, b int) int {
			return cmp.Or(cmp.Compare(rems[b], rems[a]), cmp.Compare(a, b))
		})
		for _, i := range idx[:missing] {
			w.lines[i].Discount++
		}
	}
	return d
}

// buyXGetY makes the cheapest GetY of every BuyX+GetY targeted units free,
// counting and choosing units by unit price whatever earlier promotions
// took. A free unit is worth its share of what is left on its line, so a
// line an earlier promotion already discounted gives correspondingly less.
func (w *work) buyXGetY(cd *candidate) int64 {
	p, lines := cd.p, w.cart.Lines
	_, _, idx := w.buffers()
	idx = idx[:0]
	for i := range lines {
		if p.targets(&lines[i]) {
			idx = append(idx, i)
		}
	}
	free := cd.units / (p.BuyX + p.GetY) * p.GetY
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(cmp.Compare(lines[a].UnitPrice, lines[b].UnitPrice), cmp.Compare(a, b))
	})
	total := int64(0)
	for _, i := range idx {
		if free == 0 {
			break
		}
		l := &w.lines[i]
		k := min(free, lines[i].Quantity)
		d := mulDivRound(l.Subtotal-l.Discount, k, lines[i].Quantity)
		l.Discount += d
		total += d
		free -= k
	}
	return total
}
