package id_test

import (
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/mercato/mercato/platform/id"
)

// crockford is the lowercase Crockford base32 ULID New writes after the
// prefix; a ULID's first character is at most 7 (48-bit timestamp).
var crockford = regexp.MustCompile(`^[0-7][0-9a-hjkmnp-tv-z]{25}$`)

func TestNew(t *testing.T) {
	for _, prefix := range []string{"prod", "var", "cat", "ord"} {
		t.Run(prefix, func(t *testing.T) {
			before := time.Now().Truncate(time.Millisecond)
			got := id.New(prefix)
			after := time.Now()

			rest, ok := strings.CutPrefix(got, prefix+"_")
			if !ok {
				t.Fatalf("New(%q) = %q lacks the prefix %s_", prefix, got, prefix)
			}
			if len(rest) != 26 || !crockford.MatchString(rest) {
				t.Fatalf("New(%q) = %q: want 26 lowercase Crockford base32 characters after the prefix", prefix, got)
			}
			u, err := ulid.ParseStrict(rest)
			if err != nil {
				t.Fatalf("New(%q) = %q is not a ULID: %v", prefix, got, err)
			}
			if ts := ulid.Time(u.Time()); ts.Before(before) || ts.After(after) {
				t.Errorf("New(%q) carries time %v, want between %v and %v", prefix, ts, before, after)
			}
			if !id.Valid(prefix, got) {
				t.Errorf("Valid(%q, %q) = false for an id New made", prefix, got)
			}
		})
	}
}

// TestNewIsUniqueAndOrdered makes 100,000 ids from several goroutines: none
// repeats, and each goroutine's ids increase, as time and the monotonic
// counter within a millisecond require.
func TestNewIsUniqueAndOrdered(t *testing.T) {
	const goroutines, perGoroutine = 8, 12_500
	made := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ids := make([]string, perGoroutine)
			for i := range ids {
				ids[i] = id.New("ord")
			}
			made[g] = ids
		})
	}
	wg.Wait()

	seen := make(map[string]bool, goroutines*perGoroutine)
	for g, ids := range made {
		for i, s := range ids {
			if seen[s] {
				t.Fatalf("id %s made twice", s)
			}
			seen[s] = true
			if i > 0 && s <= ids[i-1] {
				t.Fatalf("goroutine %d: id %s after %s does not sort after it", g, s, ids[i-1])
			}
		}
	}
	if len(seen) != goroutines*perGoroutine {
		t.Errorf("%d distinct ids, want %d", len(seen), goroutines*perGoroutine)
	}
}

// TestNewIsMonotonicWithinAMillisecond checks ordering where the timestamp
// cannot help: ids made in the same millisecond.
func TestNewIsMonotonicWithinAMillisecond(t *testing.T) {
	ids := make([]string, 5000)
	for i := range ids {
		ids[i] = id.New("prod")
	}
	sameMillisecond := 0
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("id %s after %s does not sort after it", ids[i], ids[i-1])
		}
		if ids[i][:len("prod_")+10] == ids[i-1][:len("prod_")+10] { // same 48-bit timestamp
			sameMillisecond++
		}
	}
	if sameMillisecond == 0 {
		t.Fatal("no two ids shared a millisecond; the test did not exercise the monotonic counter")
	}
	if !slices.IsSorted(ids) {
		t.Error("ids are not sorted in creation order")
	}
}

func TestValid(t *testing.T) {
	good := id.New("prod")
	rest := strings.TrimPrefix(good, "prod_")
	tests := []struct {
		name   string
		prefix string
		s      string
		want   bool
	}{
		{"an id New made", "prod", good, true},
		{"a fixed lowercase id", "prod", "prod_01arz3ndektsv4rrffq69g5fav", true},
		{"the largest ULID", "prod", "prod_7zzzzzzzzzzzzzzzzzzzzzzzzz", true},
		{"another type's id", "var", good, false},
		{"an id of a type whose name starts the same", "pro", good, false},
		{"no prefix", "prod", rest, false},
		{"empty prefix part", "prod", "_" + rest, false},
		{"wrong separator", "prod", "prod-" + rest, false},
		{"one character short", "prod", good[:len(good)-1], false},
		{"one character long", "prod", good + "0", false},
		{"uppercase", "prod", "prod_" + strings.ToUpper(rest), false},
		{"one uppercase character", "prod", "prod_01Arz3ndektsv4rrffq69g5fav", false},
		{"uppercase prefix", "prod", "PROD_" + rest, false},
		{"excluded letter i", "prod", "prod_01arz3ndektsv4rrffq69g5fai", false},
		{"excluded letter u", "prod", "prod_01arz3ndektsv4rrffq69g5fau", false},
		{"punctuation", "prod", "prod_01arz3ndektsv4rrffq69g5f-v", false},
		{"timestamp overflow", "prod", "prod_8zzzzzzzzzzzzzzzzzzzzzzzzz", false},
		{"empty", "prod", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := id.Valid(tt.prefix, tt.s); got != tt.want {
				t.Errorf("Valid(%q, %q) = %v, want %v", tt.prefix, tt.s, got, tt.want)
			}
		})
	}
}
