package domain

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCountersKeepTheInvariant(t *testing.T) {
	tests := []struct {
		c     Counters
		holds bool
	}{
		{Counters{OnHand: 10, Reserved: 4, Committed: 6}, true},
		{Counters{}, true},
		{Counters{OnHand: 10, Reserved: 5, Committed: 6}, false},
		{Counters{OnHand: 10, Reserved: -1}, false},
		{Counters{OnHand: -1}, false},
		{Counters{OnHand: 3, Committed: -1}, false},
	}
	for _, tt := range tests {
		if got := tt.c.Holds(); got != tt.holds {
			t.Errorf("%+v.Holds() = %v, want %v", tt.c, got, tt.holds)
		}
	}
	if a := (Counters{OnHand: 10, Reserved: 4, Committed: 5}).Available(); a != 1 {
		t.Errorf("available %d, want 1", a)
	}
}

// TestOpsMoveUnitsBetweenCounters checks that a reservation's life, in
// any of its endings, moves no unit in or out of on_hand.
func TestOpsMoveUnitsBetweenCounters(t *testing.T) {
	start := Counters{OnHand: 10}
	held := start.Add(OpReservation.Delta(3))
	for _, end := range []Op{OpCommit, OpRelease, OpExpiry} {
		after := held.Add(end.Delta(3))
		if after.OnHand != 10 || after.Reserved != 0 || !after.Holds() {
			t.Errorf("reserve then %s: %+v", end, after)
		}
		if st, ok := end.Ends(); !ok || st == StatusHeld {
			t.Errorf("%s does not end a reservation: %v %v", end, st, ok)
		}
	}
	if _, ok := OpReservation.Ends(); ok {
		t.Error("a reservation must not end itself")
	}
	if d := OpAdjustment.Delta(-4); d != (Counters{OnHand: -4}) {
		t.Errorf("adjustment delta %+v", d)
	}
}

func fields(err error) []string {
	var v *ValidationError
	if !errors.As(err, &v) {
		return nil
	}
	var out []string
	for _, f := range v.Fields {
		out = append(out, f.Field)
	}
	return out
}

func TestReserveRequestNamesEveryBadField(t *testing.T) {
	ok := ReserveRequest{Items: []Item{{VariantID: "var_01hzzzzzzzzzzzzzzzzzzzzzzz", Quantity: 1}}, IdempotencyKey: "k"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	bad := ReserveRequest{
		Items: []Item{
			{VariantID: "prod_01hzzzzzzzzzzzzzzzzzzzzzzz", Quantity: 1},
			{VariantID: "var_01hzzzzzzzzzzzzzzzzzzzzzzz", Quantity: 0},
			{VariantID: "var_01hzzzzzzzzzzzzzzzzzzzzzzz", Quantity: 2},
		},
		TTL:        -1,
		CustomerID: "a\x00b",
	}
	want := []string{"items[0].variant_id", "items[1].quantity", "items[2].variant_id", "ttl", "idempotency_key", "customer_id"}
	if got := fields(bad.Validate()); !slices.Equal(got, want) {
		t.Errorf("fields %v, want %v", got, want)
	}
	if got := fields((ReserveRequest{IdempotencyKey: "k"}).Validate()); !slices.Equal(got, []string{"items"}) {
		t.Errorf("no items: %v", got)
	}
	long := ReserveRequest{Items: ok.Items, IdempotencyKey: strings.Repeat("k", MaxKeyLength+1)}
	if got := fields(long.Validate()); !slices.Equal(got, []string{"idempotency_key"}) {
		t.Errorf("long key: %v", got)
	}
}

func TestFingerprintIgnoresItemOrderButNotContent(t *testing.T) {
	a := []Item{{VariantID: "var_a", Quantity: 1}, {VariantID: "var_b", Quantity: 2}}
	b := []Item{{VariantID: "var_b", Quantity: 2}, {VariantID: "var_a", Quantity: 1}}
	if Fingerprint("cus_1", a) != Fingerprint("cus_1", b) {
		t.Error("the same items in another order must fingerprint alike (a rebuild loses the order)")
	}
	if Fingerprint("cus_1", a) == Fingerprint("cus_2", a) {
		t.Error("another customer must fingerprint differently")
	}
	c := []Item{{VariantID: "var_a", Quantity: 2}, {VariantID: "var_b", Quantity: 2}}
	if Fingerprint("cus_1", a) == Fingerprint("cus_1", c) {
		t.Error("other quantities must fingerprint differently")
	}
}

func TestNewAdjustments(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	s := func(v string) *string { return &v }
	v := "var_01hzzzzzzzzzzzzzzzzzzzzzzz"
	one := []string{"default"}
	got, err := NewAdjustments([]AdjustmentInput{{VariantID: v, OnHand: n(5)}}, one, nil)
	if err != nil || len(got) != 1 || got[0].Location != "default" || got[0].OnHand != 5 {
		t.Fatalf("one location: %+v %v", got, err)
	}
	two := []string{"north", "south"}
	_, err = NewAdjustments([]AdjustmentInput{{VariantID: v, OnHand: n(5)}}, two, nil)
	if f := fields(err); !slices.Equal(f, []string{"location"}) {
		t.Errorf("several locations without one named: %v", f)
	}
	prefix := func(i int) string { return "items[" + string(rune('0'+i)) + "]" }
	_, err = NewAdjustments([]AdjustmentInput{
		{VariantID: v, Location: s("north"), OnHand: n(1)},
		{VariantID: "nope", Location: s("east"), OnHand: n(-1)},
		{VariantID: v, Location: s("north"), OnHand: nil},
	}, two, prefix)
	want := []string{"items[1].variant_id", "items[1].location", "items[1].on_hand", "items[2].on_hand", "items[2].variant_id"}
	if f := fields(err); !slices.Equal(f, want) {
		t.Errorf("fields %v, want %v", f, want)
	}
}

func TestCheckLocations(t *testing.T) {
	for _, bad := range [][]string{nil, {"North"}, {"a", "a"}, {"a,b"}, {"x:y"}} {
		if CheckLocations(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := CheckLocations([]string{"default", "eu-west_1"}); err != nil {
		t.Error(err)
	}
}
