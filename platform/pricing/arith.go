package pricing

import "math/bits"

// mulDiv returns the quotient and remainder of a×b / c for non-negative
// operands, with a 128-bit intermediate product: a discount of up to
// money.MaxAmount times a line of up to money.MaxAmount overflows int64.
// The quotient must fit in 64 bits, which holds whenever a ≤ c or b ≤ c.
func mulDiv(a, b, c int64) (q, r int64) {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	uq, ur := bits.Div64(hi, lo, uint64(c))
	return int64(uq), int64(ur)
}

// roundHalfEven rounds q + r/c (0 ≤ r < c) to an integer, ties to even
// (banker's rounding), so that ties do not all lean the same way.
func roundHalfEven(q, r, c int64) int64 {
	if half := c - r; r > half || (r == half && q&1 == 1) {
		return q + 1
	}
	return q
}

// mulDivRound returns a×b / c rounded half to even.
func mulDivRound(a, b, c int64) int64 {
	q, r := mulDiv(a, b, c)
	return roundHalfEven(q, r, c)
}
