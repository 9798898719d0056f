package auth

import "errors"

// Why a token was refused. Verify wraps one of these; the middleware turns
// ErrUnavailable into 503 and every other one into 401.
var (
	// ErrMalformed is a token that is not a compact JWS with the claims an
	// access token needs (exp, sub, sid), or that is too long.
	ErrMalformed = errors.New("malformed token")
	// ErrBadAlgorithm is a token signed with anything but RS256: alg none,
	// HMAC (the key-confusion attack), ECDSA and the rest are refused before
	// any key is looked at.
	ErrBadAlgorithm = errors.New("token algorithm not accepted")
	// ErrUnknownKey is a token whose kid names no key identity publishes.
	ErrUnknownKey = errors.New("token signed with an unknown key")
	// ErrBadSignature is a token whose signature does not match its content.
	ErrBadSignature = errors.New("token signature invalid")
	// ErrWrongIssuer is a token from another issuer.
	ErrWrongIssuer = errors.New("token issuer not accepted")
	// ErrWrongAudience is a token meant for another audience (an ID token,
	// say).
	ErrWrongAudience = errors.New("token audience not accepted")
	// ErrExpired is a token past its exp (beyond the leeway).
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid is a token whose nbf or iat lies in the future (beyond
	// the leeway).
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrRevoked is a token of a revoked session.
	ErrRevoked = errors.New("token session revoked")
	// ErrUnavailable means the verifier cannot decide: it has not yet loaded
	// identity's keys and revocations, or identity did not answer when an
	// unknown key had to be looked up. It is not the client's fault.
	ErrUnavailable = errors.New("token verification unavailable")
)

// results label the verification outcomes in metrics.
var results = []struct {
	err   error
	label string
}{
	{ErrMalformed, "malformed"},
	{ErrBadAlgorithm, "bad_algorithm"},
	{ErrUnknownKey, "unknown_key"},
	{ErrBadSignature, "bad_signature"},
	{ErrWrongIssuer, "wrong_issuer"},
	{ErrWrongAudience, "wrong_audience"},
	{ErrExpired, "expired"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrRevoked, "revoked"},
	{ErrUnavailable, "unavailable"},
}

// resultLabel is the metric label of a verification error.
func resultLabel(err error) string {
	if err == nil {
		return "ok"
	}
	for _, r := range results {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return "malformed"
}
