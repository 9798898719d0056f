// Package id makes Mercato's identifiers: a type prefix and a ULID, so ids are
// opaque, self-describing (prod_…, var_…) and sort by creation time.
package id

import (
	"crypto/rand"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

var (
	mu      sync.Mutex
	entropy = ulid.Monotonic(rand.Reader, 0)
)

// New returns a fresh id with the given prefix, such as New("prod").
func New(prefix string) string {
	mu.Lock()
	defer mu.Unlock()
	u, err := ulid.New(ulid.Timestamp(time.Now()), entropy)
	if err != nil {
		// The monotonic counter overflowed within one millisecond (2^80 ids);
		// start a new random sequence.
		entropy = ulid.Monotonic(rand.Reader, 0)
		u, _ = ulid.New(ulid.Timestamp(time.Now()), entropy)
	}
	return prefix + "_" + strings.ToLower(u.String())
}

// Valid reports whether s is an id with the given prefix. Only the lowercase
// form New makes is valid, so one id has exactly one spelling.
func Valid(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix+"_")
	if !ok || len(rest) != ulid.EncodedSize || rest != strings.ToLower(rest) {
		return false
	}
	_, err := ulid.ParseStrict(rest)
	return err == nil
}
