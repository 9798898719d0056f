package pricing

import (
	"fmt"

	"github.com/mercato/mercato/platform/money"
)

// MaxTaxRate is the highest tax rate accepted, in basis points (100%).
const MaxTaxRate = 10_000

// Config is the shipping and tax table of one currency. Its amounts are in
// that currency's minor units, which is why a Config belongs to exactly one
// currency and Price refuses a cart in another (ErrCurrencyMismatch): a
// store selling in EUR and GBP keeps one Config per currency.
type Config struct {
	// Currency is the ISO 4217 code every amount of this Config is in.
	Currency string
	// Shipping is the rate by destination country (ISO 3166-1 alpha-2).
	Shipping map[string]ShippingRate
	// DefaultShipping applies to countries missing from Shipping and to
	// carts without a country yet.
	DefaultShipping ShippingRate
	// Tax is the VAT rule by destination country (ISO 3166-1 alpha-2).
	Tax map[string]TaxRule
	// DefaultTax applies to countries missing from Tax and to carts without
	// a country yet.
	DefaultTax TaxRule
}

// ShippingRate is what shipping one cart to a country costs.
type ShippingRate struct {
	// Amount is the flat charge in minor units. Where the country's prices
	// include tax, it includes tax too.
	Amount int64
	// FreeAbove waives Amount when the merchandise after discounts is at
	// least this much (a "free shipping from €50" rule); 0 never waives.
	FreeAbove int64
}

// TaxRule is a country's VAT.
type TaxRule struct {
	// RateBasisPoints is the rate in hundredths of a percent: 2000 is 20%.
	RateBasisPoints int64
	// PricesIncludeTax says unit prices and the shipping amount are gross
	// (tax contained, as shown to EU consumers) rather than net with tax
	// added on top (as in US sales tax).
	PricesIncludeTax bool
}

// Validate reports the first thing wrong with c. Call it once when the
// config is loaded; Price only checks the entries a cart uses.
func (c Config) Validate() error {
	if !money.ValidCurrency(c.Currency) {
		return fmt.Errorf("%w: currency %q is not an ISO 4217 code", ErrInvalidConfig, c.Currency)
	}
	if err := c.DefaultShipping.validate(); err != nil {
		return fmt.Errorf("%w: default shipping: %s", ErrInvalidConfig, err)
	}
	if err := c.DefaultTax.validate(); err != nil {
		return fmt.Errorf("%w: default tax: %s", ErrInvalidConfig, err)
	}
	for country, r := range c.Shipping {
		if !validCountry(country) {
			return fmt.Errorf("%w: shipping: %q is not an ISO 3166-1 alpha-2 code", ErrInvalidConfig, country)
		}
		if err := r.validate(); err != nil {
			return fmt.Errorf("%w: shipping %s: %s", ErrInvalidConfig, country, err)
		}
	}
	for country, r := range c.Tax {
		if !validCountry(country) {
			return fmt.Errorf("%w: tax: %q is not an ISO 3166-1 alpha-2 code", ErrInvalidConfig, country)
		}
		if err := r.validate(); err != nil {
			return fmt.Errorf("%w: tax %s: %s", ErrInvalidConfig, country, err)
		}
	}
	return nil
}

// rules returns the shipping rate and tax rule for a destination country.
func (c *Config) rules(country string) (ShippingRate, TaxRule, error) {
	ship, ok := c.Shipping[country]
	if !ok {
		ship = c.DefaultShipping
	}
	tax, ok := c.Tax[country]
	if !ok {
		tax = c.DefaultTax
	}
	if err := ship.validate(); err != nil {
		return ship, tax, fmt.Errorf("%w: shipping %q: %s", ErrInvalidConfig, country, err)
	}
	if err := tax.validate(); err != nil {
		return ship, tax, fmt.Errorf("%w: tax %q: %s", ErrInvalidConfig, country, err)
	}
	return ship, tax, nil
}

func (r ShippingRate) validate() error {
	if r.Amount < 0 || r.Amount > money.MaxAmount {
		return fmt.Errorf("amount %d is outside 0..%d", r.Amount, int64(money.MaxAmount))
	}
	if r.FreeAbove < 0 || r.FreeAbove > money.MaxAmount {
		return fmt.Errorf("free_above %d is outside 0..%d", r.FreeAbove, int64(money.MaxAmount))
	}
	return nil
}

func (r TaxRule) validate() error {
	if r.RateBasisPoints < 0 || r.RateBasisPoints > MaxTaxRate {
		return fmt.Errorf("rate %d basis points is outside 0..%d", r.RateBasisPoints, MaxTaxRate)
	}
	return nil
}

// validCountry reports whether s has the form of an ISO 3166-1 alpha-2 code.
func validCountry(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}
