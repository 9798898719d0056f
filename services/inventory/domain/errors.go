package domain

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mercato/mercato/platform/problem"
)

// Errors the inventory answers with; the API maps each to one RPC code and
// one HTTP problem.
var (
	// ErrNotReady means the Redis state is missing, stale or being rebuilt
	// from the ledger: the inventory refuses rather than sell on numbers it
	// cannot trust. Retry shortly.
	ErrNotReady = errors.New("the stock counters are being rebuilt from the ledger")
	// ErrUnavailable means Redis or PostgreSQL could not be reached.
	ErrUnavailable = errors.New("a stock store is unreachable")
	// ErrOverloaded means the admission limits refused the request; retry
	// later rather than queue.
	ErrOverloaded = errors.New("too many reservations in flight")
	// ErrNotFound means the reservation expired long ago, was lost with a
	// Redis that failed before it reached the ledger, or never existed.
	ErrNotFound = errors.New("reservation expired or unknown")
	// ErrCommitInProgress means a commit of the reservation is under way;
	// its outcome decides what else may happen to it.
	ErrCommitInProgress = errors.New("a commit of this reservation is in progress")
	// ErrEpochChanged means the Redis state was rebuilt during the
	// operation, which must start again.
	ErrEpochChanged = errors.New("the stock counters were rebuilt during the operation")
	// ErrOversold means the ledger refused a sale beyond on_hand: Redis
	// disagreed with it and is rebuilt.
	ErrOversold = errors.New("the ledger refused a sale beyond the units on hand")
	// ErrKeyReused means an idempotency key was sent again with other items
	// or another customer.
	ErrKeyReused = errors.New("idempotency_key was used for another reservation")
)

// EndedError is an operation on a reservation that already ended in a way
// that rules it out, such as committing an expired one.
type EndedError struct{ Status Status }

func (e *EndedError) Error() string { return "reservation is " + string(e.Status) }

// Shortage is one item that could not be filled: how many units were asked
// for and how many one location could have given.
type Shortage struct {
	VariantID string
	Requested int64
	Available int64
}

// OutOfStockError is a reservation that could not be filled; nothing was
// held.
type OutOfStockError struct{ Shortages []Shortage }

func (e *OutOfStockError) Error() string {
	parts := make([]string, len(e.Shortages))
	for i, s := range e.Shortages {
		parts[i] = fmt.Sprintf("%s: %d requested, %d available", s.VariantID, s.Requested, s.Available)
	}
	return "out of stock: " + strings.Join(parts, "; ")
}

// PurchaseLimitError is a reservation that would take a customer over the
// per-variant purchase limit; nothing was held.
type PurchaseLimitError struct {
	VariantID   string
	Limit       int64
	AlreadyHeld int64
}

func (e *PurchaseLimitError) Error() string {
	return fmt.Sprintf("purchase limit of %d for %s reached (%d held or bought)", e.Limit, e.VariantID, e.AlreadyHeld)
}

// ValidationError lists every invalid field of an input.
type ValidationError struct{ Fields []problem.FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + " " + f.Message
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// HeldConflict is one adjustment that would set on_hand below the units
// reserved and committed at its location.
type HeldConflict struct {
	// Index is the adjustment's position in its request.
	Index     int
	Reserved  int64
	Committed int64
}

// StockConflictError refuses adjustments that would break the invariant;
// none of the request was applied.
type StockConflictError struct{ Conflicts []HeldConflict }

func (e *StockConflictError) Error() string {
	return fmt.Sprintf("%d adjustments would set on_hand below the units reserved and committed", len(e.Conflicts))
}
