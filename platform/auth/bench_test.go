package auth

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

// BenchmarkVerify measures token verification as the gateway and services
// do it, on identity-shaped RS256 tokens (2048-bit key):
//
//   - cached: steady state, a few thousand customers' tokens seen before —
//     a SHA-256 of the token, a cache lookup, the revocation and key checks;
//   - cold: every token new — parsing, the RSA signature, the claims and
//     the cache insert. Each operation also drops the token from the cache
//     again (about 0.1 µs) so that the next round is cold too.
//
// Run with -cpu 1 for the per-core rate: the tokens/s metric.
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b, nil)
	const customers = 2000
	tokens := make([]string, customers)
	sums := make([][sha256.Size]byte, customers)
	for i := range tokens {
		tokens[i] = f.issuer.Token(b, fmt.Sprintf("cus_%05d", i), "openid")
		sums[i] = sha256.Sum256([]byte(tokens[i]))
	}
	ctx := b.Context()

	b.Run("cached", func(b *testing.B) {
		for _, tok := range tokens {
			if _, err := f.v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
		i := 0
		for b.Loop() {
			if _, err := f.v.Verify(ctx, tokens[i]); err != nil {
				b.Fatal(err)
			}
			if i++; i == customers {
				i = 0
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
	b.Run("cold", func(b *testing.B) {
		i := 0
		for b.Loop() {
			f.v.cache.Invalidate(sums[i])
			if _, err := f.v.Verify(ctx, tokens[i]); err != nil {
				b.Fatal(err)
			}
			if i++; i == customers {
				i = 0
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
}
