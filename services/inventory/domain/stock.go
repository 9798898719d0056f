// Package domain is the inventory's model without I/O: stock counters and
// the invariant they keep, reservations and their life cycle, the changes
// the ledger records, the events it publishes, and the errors the service
// speaks in. The adapters (Redis, PostgreSQL) and the API translate to and
// from these types.
package domain

import (
	"fmt"
	"regexp"
	"time"
)

// MaxOnHand bounds the units one location may hold: the Redis scripts keep
// counters in Lua numbers, which print integers exactly only below 10^14
// even when summed over locations.
const MaxOnHand = 1_000_000_000_000

// Counters are the stock of a variant at one location, or summed over
// locations. OnHand units are physically held (set by admins); Reserved
// units are held by open reservations; Committed units are sold and not yet
// shipped, so still on hand.
type Counters struct {
	OnHand    int64 `json:"on_hand"`
	Reserved  int64 `json:"reserved"`
	Committed int64 `json:"committed"`
}

// Available is what can still be reserved: on_hand − reserved − committed.
func (c Counters) Available() int64 { return c.OnHand - c.Reserved - c.Committed }

// Add returns c moved by d.
func (c Counters) Add(d Counters) Counters {
	return Counters{OnHand: c.OnHand + d.OnHand, Reserved: c.Reserved + d.Reserved, Committed: c.Committed + d.Committed}
}

// Holds reports whether c keeps the inventory's invariant: no counter is
// negative and committed + reserved ≤ on_hand — never more units promised
// than there are.
func (c Counters) Holds() bool {
	return c.OnHand >= 0 && c.Reserved >= 0 && c.Committed >= 0 && c.Reserved+c.Committed <= c.OnHand
}

// LocationStock is a variant's stock at one location.
type LocationStock struct {
	Location string
	Counters
}

// VariantStock is a variant's stock at every configured location, in the
// configured order. A variant the inventory never heard of has zeros.
type VariantStock struct {
	VariantID string
	Locations []LocationStock
	// Version grows with every change of the variant.
	Version int64
}

// Total sums the variant's stock over its locations.
func (v VariantStock) Total() Counters {
	var t Counters
	for _, l := range v.Locations {
		t = t.Add(l.Counters)
	}
	return t
}

// locationPattern is what a stock location may be called: it travels in
// Redis keys and ledger entries, whose separators it must not contain.
var locationPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidLocation reports whether name can name a stock location.
func ValidLocation(name string) bool { return locationPattern.MatchString(name) }

// CheckLocations validates the configured locations (inventory.locations):
// at least one, each a valid name, none twice.
func CheckLocations(locations []string) error {
	if len(locations) == 0 {
		return fmt.Errorf("inventory.locations must name at least one location")
	}
	seen := map[string]bool{}
	for _, l := range locations {
		if !ValidLocation(l) {
			return fmt.Errorf("inventory.locations: %q is not a location name (lowercase letters, digits, _ and -, at most 63)", l)
		}
		if seen[l] {
			return fmt.Errorf("inventory.locations: %q is listed twice", l)
		}
		seen[l] = true
	}
	return nil
}

// Op is the kind of a ledger change.
type Op string

// The changes the ledger records.
const (
	// OpAdjustment is an admin setting on_hand.
	OpAdjustment Op = "adjustment"
	// OpReservation holds units for a checkout.
	OpReservation Op = "reservation"
	// OpCommit turns held units into a sale.
	OpCommit Op = "commit"
	// OpRelease gives held units back at the caller's request.
	OpRelease Op = "release"
	// OpExpiry gives held units back because the reservation expired.
	OpExpiry Op = "expiry"
)

// Delta is how a change of this kind by quantity units moves the counters
// (for an adjustment, quantity is the change of on_hand, possibly negative).
func (op Op) Delta(quantity int64) Counters {
	switch op {
	case OpAdjustment:
		return Counters{OnHand: quantity}
	case OpReservation:
		return Counters{Reserved: quantity}
	case OpCommit:
		return Counters{Reserved: -quantity, Committed: quantity}
	case OpRelease, OpExpiry:
		return Counters{Reserved: -quantity}
	}
	return Counters{}
}

// Ends reports whether the change ends a reservation, and in which status.
func (op Op) Ends() (Status, bool) {
	switch op {
	case OpCommit:
		return StatusCommitted, true
	case OpRelease:
		return StatusReleased, true
	case OpExpiry:
		return StatusExpired, true
	}
	return "", false
}

// Change is one entry of the ledger stream: what one atomic step in Redis
// did. Reservation steps carry the whole reservation, so that the ledger
// can record any of them even if an earlier one has not arrived yet.
type Change struct {
	// StreamID is the Redis stream entry id, unique within an epoch.
	StreamID string
	// Epoch is the generation of the Redis state the change was made in.
	Epoch int64
	Op    Op
	At    time.Time
	// Reservation is the reservation a reservation, commit, release or
	// expiry changed (its Items are where units were drawn from).
	Reservation Reservation
	// AdjustSeq numbers an adjustment of its variant and location.
	AdjustSeq int64
	Lines     []ChangeLine
}

// ChangeLine is the change of one variant at one location, with the
// variant's state right after it.
type ChangeLine struct {
	VariantID string
	Location  string
	Quantity  int64
	// Totals are the variant's counters summed over the configured
	// locations right after the change.
	Totals Counters
	// Version is the variant's version after the change.
	Version int64
}

// StockRow is one variant and location as the ledger knows it.
type StockRow struct {
	VariantID string
	Location  string
	Counters
	// AdjustSeq is the number of the last admin adjustment of the row.
	AdjustSeq int64
}

// Tally is how many units of a variant a customer holds or bought, which
// the purchase limit counts.
type Tally struct {
	CustomerID string
	VariantID  string
	Units      int64
}

// Snapshot is what a rebuild loads into an empty Redis: the stock counters,
// versions, open reservations (and recently ended ones, so retries get the
// same answers), and purchase tallies, as of one epoch.
type Snapshot struct {
	Epoch        int64
	Stock        []StockRow
	Versions     map[string]int64
	Reservations []Reservation
	Tallies      []Tally
}

// Adjustment is an admin's count of a variant at a location.
type Adjustment struct {
	VariantID string
	Location  string
	OnHand    int64
}

// AdjustRow is an adjustment with the sequence numbers that order it
// against others of its row: Seq is its own, PrevSeq and PrevOnHand what
// the ledger held before. Seq == PrevSeq means the count did not change.
type AdjustRow struct {
	Adjustment
	Seq        int64
	PrevSeq    int64
	PrevOnHand int64
}

// Changes reports whether the row changes on_hand.
func (r AdjustRow) Changes() bool { return r.Seq > r.PrevSeq }
