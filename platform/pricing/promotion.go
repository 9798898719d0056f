package pricing

import (
	"errors"
	"fmt"
	"time"

	"github.com/mercato/mercato/platform/money"
)

// Kind is what a promotion gives.
type Kind string

// The kinds of promotion.
const (
	// KindPercentage takes Value basis points off the targeted lines.
	KindPercentage Kind = "percentage"
	// KindFixedAmount takes Value minor units off the targeted lines.
	KindFixedAmount Kind = "fixed_amount"
	// KindFreeShipping waives the shipping charge.
	KindFreeShipping Kind = "free_shipping"
	// KindBuyXGetY makes GetY of every BuyX+GetY targeted units free, the
	// cheapest ones.
	KindBuyXGetY Kind = "buy_x_get_y"
	// KindSpendThreshold gives the best of its Tiers that the targeted lines
	// reach.
	KindSpendThreshold Kind = "spend_threshold"
)

// Promotion is an automatic campaign or a coupon as the promotion service
// hands it to pricing. Usage limits and budgets are not here: the promotion
// service enforces them atomically when a redemption is reserved; pricing
// only decides whether a promotion applies to a cart and how much it gives.
type Promotion struct {
	// ID identifies the promotion and breaks ties of Priority.
	ID string
	// Code is the coupon code a cart must carry (matched case-insensitively);
	// "" makes an automatic campaign that applies without one.
	Code string
	// Kind is what the promotion gives.
	Kind Kind
	// Value is basis points for KindPercentage (1500 = 15%) and minor units
	// for KindFixedAmount; other kinds ignore it.
	Value int64
	// Tiers are the thresholds of KindSpendThreshold, by ascending
	// MinSubtotal.
	Tiers []Tier
	// BuyX and GetY are the quantities of KindBuyXGetY: buy 2 get 1 is 2, 1.
	BuyX, GetY int64
	// Currency is the ISO 4217 code of Value, Tiers and MinSubtotal. It is
	// required when the promotion has an amount and may be "" otherwise; a
	// promotion in another currency than the cart's does not apply.
	Currency string
	// StartsAt and EndsAt bound the window [StartsAt, EndsAt); a zero time
	// leaves that side open.
	StartsAt, EndsAt time.Time
	// ProductIDs and CategoryIDs target lines: a line is targeted when its
	// product or one of its categories is listed. Both empty targets every
	// line.
	ProductIDs, CategoryIDs []string
	// CustomerIDs limits the promotion to these customers; empty is everyone,
	// guests included.
	CustomerIDs []string
	// MinSubtotal is the least the targeted lines must cost, before any
	// discount, for the promotion to apply.
	MinSubtotal int64
	// Exclusive promotions do not combine: the first exclusive one (by
	// Priority) that gives something is the only promotion applied.
	Exclusive bool
	// Priority orders application: higher first, then ID ascending.
	Priority int
	// Active is the kill switch: an inactive promotion never applies.
	Active bool
}

// Tier is one step of a spend threshold: from MinSubtotal on, Percent basis
// points or Amount minor units off (exactly one of them is set).
type Tier struct {
	MinSubtotal int64
	Percent     int64
	Amount      int64
}

// Reason says why a coupon code in a cart gives no discount.
type Reason string

// The reasons a coupon code is rejected.
const (
	ReasonUnknownCode    Reason = "unknown_code"     // no promotion has this code
	ReasonInactive       Reason = "inactive"         // switched off
	ReasonNotStarted     Reason = "not_started"      // now is before StartsAt
	ReasonExpired        Reason = "expired"          // now is at or after EndsAt
	ReasonWrongCurrency  Reason = "wrong_currency"   // the promotion is in another currency
	ReasonNotForCustomer Reason = "not_for_customer" // the cart's customer is not targeted
	ReasonNotApplicable  Reason = "not_applicable"   // no line of the cart is targeted
	ReasonBelowMinimum   Reason = "below_minimum"    // MinSubtotal, the first tier or BuyX+GetY units not reached
	ReasonNotCombinable  Reason = "not_combinable"   // an exclusive promotion applies instead
	ReasonNoBenefit      Reason = "no_benefit"       // applies, but nothing is left to discount
	ReasonInvalid        Reason = "invalid"          // the promotion is malformed (see Promotion.Validate)
)

// ErrInvalidPromotion is wrapped by Promotion.Validate.
var ErrInvalidPromotion = errors.New("invalid promotion")

// Validate reports the first thing wrong with p. The promotion service
// calls it before storing a promotion; Price skips a promotion that fails it
// (ReasonInvalid) instead of failing every cart.
func (p *Promotion) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidPromotion, p.ID, fmt.Sprintf(format, args...))
	}
	if p.ID == "" {
		return fmt.Errorf("%w: id is required", ErrInvalidPromotion)
	}
	if p.Currency != "" && !money.ValidCurrency(p.Currency) {
		return bad("currency %q is not an ISO 4217 code", p.Currency)
	}
	if !inAmountRange(p.MinSubtotal) {
		return bad("min_subtotal %d is outside 0..%d", p.MinSubtotal, int64(money.MaxAmount))
	}
	needsCurrency := p.MinSubtotal > 0
	switch p.Kind {
	case KindPercentage:
		if p.Value < 1 || p.Value > 10_000 {
			return bad("percentage %d basis points is outside 1..10000", p.Value)
		}
	case KindFixedAmount:
		if p.Value < 1 || p.Value > money.MaxAmount {
			return bad("amount %d is outside 1..%d", p.Value, int64(money.MaxAmount))
		}
		needsCurrency = true
	case KindFreeShipping:
	case KindBuyXGetY:
		if p.BuyX < 1 || p.GetY < 1 || p.BuyX > MaxQuantity || p.GetY > MaxQuantity {
			return bad("buy %d get %d: both must be in 1..%d", p.BuyX, p.GetY, MaxQuantity)
		}
	case KindSpendThreshold:
		if len(p.Tiers) == 0 {
			return bad("a spend threshold needs tiers")
		}
		for i, t := range p.Tiers {
			if !inAmountRange(t.MinSubtotal) || (i > 0 && t.MinSubtotal <= p.Tiers[i-1].MinSubtotal) {
				return bad("tier %d: min_subtotal %d must ascend within 0..%d", i, t.MinSubtotal, int64(money.MaxAmount))
			}
			percent := t.Percent >= 1 && t.Percent <= 10_000 && t.Amount == 0
			amount := t.Amount >= 1 && t.Amount <= money.MaxAmount && t.Percent == 0
			if !percent && !amount {
				return bad("tier %d: exactly one of percent (1..10000) and amount (1..%d) is required", i, int64(money.MaxAmount))
			}
		}
		needsCurrency = true
	default:
		return bad("unknown kind %q", p.Kind)
	}
	if needsCurrency && p.Currency == "" {
		return bad("a promotion with an amount needs a currency")
	}
	if !p.StartsAt.IsZero() && !p.EndsAt.IsZero() && !p.EndsAt.After(p.StartsAt) {
		return bad("ends_at must be after starts_at")
	}
	return nil
}

func inAmountRange(v int64) bool { return v >= 0 && v <= money.MaxAmount }

// targets reports whether p's product and category targeting covers l.
func (p *Promotion) targets(l *Line) bool {
	if len(p.ProductIDs) == 0 && len(p.CategoryIDs) == 0 {
		return true
	}
	if contains(p.ProductIDs, l.ProductID) {
		return true
	}
	for _, c := range l.CategoryIDs {
		if contains(p.CategoryIDs, c) {
			return true
		}
	}
	return false
}

// contains is a linear scan: targeting lists are short, and a map per
// promotion would cost more to build than it saves.
func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
