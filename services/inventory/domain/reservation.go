package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/problem"
)

// Limits of a reservation request.
const (
	// MaxItems bounds the items of one reservation.
	MaxItems = 100
	// MaxQuantity bounds one item's quantity.
	MaxQuantity = 1_000_000
	// MaxKeyLength bounds an idempotency key, in bytes.
	MaxKeyLength = 255
	// MaxCustomerIDLength bounds a customer id, in bytes.
	MaxCustomerIDLength = 128
)

// Status is where a reservation is in its life: held until it is committed,
// released or expired, each of which is final.
type Status string

// Reservation statuses.
const (
	StatusHeld      Status = "held"
	StatusCommitted Status = "committed"
	StatusReleased  Status = "released"
	StatusExpired   Status = "expired"
	// StatusCommitting marks, in Redis only, a reservation whose commit is
	// under way: nothing but the commit's outcome may end it. The ledger
	// never records it, and callers see it only as ErrCommitInProgress.
	StatusCommitting Status = "committing"
)

// Item is a quantity of one variant.
type Item struct {
	VariantID string
	Quantity  int64
}

// Placement is an item and the location its units were drawn from.
type Placement struct {
	VariantID string
	Location  string
	Quantity  int64
}

// Reservation is a hold on stock for one checkout.
type Reservation struct {
	ID             string
	CustomerID     string
	IdempotencyKey string
	Status         Status
	Items          []Placement
	CreatedAt      time.Time
	ExpiresAt      time.Time
	// EndedAt is when it was committed, released or expired.
	EndedAt time.Time
}

// NewReservationID returns a fresh reservation id.
func NewReservationID() string { return id.New("res") }

// ValidReservationID reports whether s can be a reservation id.
func ValidReservationID(s string) bool { return id.Valid("res", s) }

// ValidVariantID reports whether s is a variant id as the catalog makes
// them. Inventory does not own variants, so it checks only the form.
func ValidVariantID(s string) bool { return id.Valid("var", s) }

// ReserveRequest asks to hold items for a while.
type ReserveRequest struct {
	Items []Item
	// TTL is how long to hold them; zero means the configured default.
	TTL            time.Duration
	IdempotencyKey string
	// CustomerID, when set, counts the units against the customer's
	// purchase limit.
	CustomerID string
}

// Validate reports every invalid field of r, named as in the RPC contract.
func (r ReserveRequest) Validate() error {
	var errs fieldErrors
	switch {
	case len(r.Items) == 0:
		errs.add("items", "must hold at least one item")
	case len(r.Items) > MaxItems:
		errs.add("items", "must hold at most %d items", MaxItems)
	}
	seen := make(map[string]int, len(r.Items))
	for i, it := range r.Items {
		field := "items[" + strconv.Itoa(i) + "]"
		if !ValidVariantID(it.VariantID) {
			errs.add(field+".variant_id", "is not a variant id")
		} else if j, dup := seen[it.VariantID]; dup {
			errs.add(field+".variant_id", "repeats items[%d]; ask for the sum once", j)
		} else {
			seen[it.VariantID] = i
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			errs.add(field+".quantity", "must be between 1 and %d", MaxQuantity)
		}
	}
	if r.TTL < 0 {
		errs.add("ttl", "must not be negative")
	}
	if r.IdempotencyKey == "" || len(r.IdempotencyKey) > MaxKeyLength || !printable(r.IdempotencyKey) {
		errs.add("idempotency_key", "is required: printable text of at most %d bytes", MaxKeyLength)
	}
	if len(r.CustomerID) > MaxCustomerIDLength || !printable(r.CustomerID) {
		errs.add("customer_id", "must be printable text of at most %d bytes", MaxCustomerIDLength)
	}
	return errs.err()
}

// Fingerprint identifies what r asks for, so that a retry under the same
// idempotency key can be told from a different request reusing it.
func (r ReserveRequest) Fingerprint() string { return Fingerprint(r.CustomerID, r.Items) }

// Fingerprint identifies a reservation request by its customer and items,
// in any order: a rebuild recomputes it from the ledger, which keeps the
// items but not the order they were asked in.
func Fingerprint(customerID string, items []Item) string {
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b Item) int { return strings.Compare(a.VariantID, b.VariantID) })
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", customerID)
	for _, it := range sorted {
		fmt.Fprintf(h, "%s:%d\x00", it.VariantID, it.Quantity)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// Requested returns the items of r without their locations, as a
// fingerprint sees them.
func (r Reservation) Requested() []Item {
	out := make([]Item, len(r.Items))
	for i, p := range r.Items {
		out[i] = Item{VariantID: p.VariantID, Quantity: p.Quantity}
	}
	return out
}

// printable reports whether s holds no control characters.
func printable(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}

// AdjustmentInput is an admin's count as sent: Location may be left out when
// one location is configured.
type AdjustmentInput struct {
	VariantID string
	Location  *string
	OnHand    *int64
}

// NewAdjustments validates inputs against the configured locations and
// returns them as adjustments, or a ValidationError naming every bad field
// as prefix(i) + "." + field (prefix nil: the bare field names, for a single
// adjustment whose variant comes from the path). A variant and location
// given twice is refused, since the result would depend on order.
func NewAdjustments(inputs []AdjustmentInput, locations []string, prefix func(i int) string) ([]Adjustment, error) {
	var errs fieldErrors
	name := func(i int, field string) string {
		if prefix == nil {
			return field
		}
		return prefix(i) + "." + field
	}
	configured := make(map[string]bool, len(locations))
	for _, l := range locations {
		configured[l] = true
	}
	type row struct{ variant, location string }
	seen := make(map[row]int, len(inputs))
	out := make([]Adjustment, 0, len(inputs))
	for i, in := range inputs {
		a := Adjustment{VariantID: in.VariantID}
		if !ValidVariantID(in.VariantID) {
			errs.add(name(i, "variant_id"), "is not a variant id")
		}
		switch {
		case in.Location != nil && !configured[*in.Location]:
			errs.add(name(i, "location"), "is not a configured location")
		case in.Location != nil:
			a.Location = *in.Location
		case len(locations) > 1:
			errs.add(name(i, "location"), "is required when several locations are configured")
		default:
			a.Location = locations[0]
		}
		switch {
		case in.OnHand == nil:
			errs.add(name(i, "on_hand"), "is required")
		case *in.OnHand < 0 || *in.OnHand > MaxOnHand:
			errs.add(name(i, "on_hand"), "must be between 0 and %d", int64(MaxOnHand))
		default:
			a.OnHand = *in.OnHand
		}
		k := row{a.VariantID, a.Location}
		if j, dup := seen[k]; dup && a.Location != "" {
			errs.add(name(i, "variant_id"), "repeats row %d for the same location", j)
		}
		seen[k] = i
		out = append(out, a)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// fieldErrors collects validation failures.
type fieldErrors []problem.FieldError

func (f *fieldErrors) add(field, format string, args ...any) {
	*f = append(*f, problem.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return &ValidationError{Fields: f}
}
