package auth

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/mercato/mercato/platform/problem"
)

// realm names Mercato in WWW-Authenticate challenges.
const realm = `Bearer realm="mercato"`

// AuthenticateOption adjusts Authenticate.
type AuthenticateOption func(*authenticateOptions)

type authenticateOptions struct {
	otherSchemes bool
}

// LeaveOtherSchemes makes Authenticate treat an Authorization header with a
// scheme other than Bearer as no credential and pass it on untouched. The
// gateway uses it on operations whose OpenAPI security names a scheme it
// does not check itself — HTTP Basic client authentication at an OAuth
// token endpoint — which the owning service checks.
func LeaveOtherSchemes() AuthenticateOption {
	return func(o *authenticateOptions) { o.otherSchemes = true }
}

// Authenticate puts the request's verified caller in its context (see
// FromContext). A request without an Authorization header goes on as
// anonymous; one with a header must carry a valid bearer token, or it is
// refused: 401 problem+json with a WWW-Authenticate challenge for a missing,
// malformed or invalid token, 503 with Retry-After when the verifier cannot
// decide (identity's keys or revocations not loaded). Authenticate does not
// require a caller — Require does — and a request it already authenticated
// is not verified again.
func Authenticate(v *Verifier, opts ...AuthenticateOption) func(http.Handler) http.Handler {
	var o authenticateOptions
	for _, opt := range opts {
		opt(&o)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			if _, done := resultFrom(ctx); done {
				next.ServeHTTP(w, r)
				return
			}
			values := r.Header.Values("Authorization")
			if len(values) == 0 {
				// Anonymous: nothing to put in the context, so the most
				// common request costs no allocation here.
				next.ServeHTTP(w, r)
				return
			}
			if len(values) > 1 {
				unauthorized(w, "invalid_request", "send one Authorization header")
				return
			}
			scheme, token, _ := strings.Cut(values[0], " ")
			if !strings.EqualFold(scheme, "Bearer") {
				if o.otherSchemes {
					next.ServeHTTP(w, r)
					return
				}
				unauthorized(w, "invalid_request", "use Authorization: Bearer <access token>")
				return
			}
			token = strings.TrimSpace(token)
			if token == "" {
				unauthorized(w, "invalid_request", "the bearer token is empty")
				return
			}
			id, err := v.Verify(ctx, token)
			if err != nil {
				refuse(w, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(withResult(ctx, id)))
		})
	}
}

// Require lets a request through only when Authenticate found a caller
// whose token carries every one of scopes: 401 for an anonymous request (or
// one that was never authenticated), 403 when a scope is missing. With no
// scopes any verified caller passes.
func Require(scopes ...string) func(http.Handler) http.Handler {
	return RequireOneOf(scopes)
}

// RequireOneOf is Require with alternatives, as OpenAPI security lists
// them: the caller must hold every scope of at least one of alternatives.
// An empty alternative, or none at all, admits any verified caller.
func RequireOneOf(alternatives ...[]string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := FromContext(r.Context())
			if !ok {
				w.Header().Set("WWW-Authenticate", realm)
				problem.Write(w, problem.Unauthorized("this endpoint needs a bearer access token"))
				return
			}
			if len(alternatives) == 0 || satisfiesOne(id, alternatives) {
				next.ServeHTTP(w, r)
				return
			}
			need := strings.Join(alternatives[0], " ")
			w.Header().Set("WWW-Authenticate", realm+`, error="insufficient_scope", scope="`+need+`"`)
			problem.Write(w, problem.Forbidden("this endpoint needs the scope "+need))
		})
	}
}

func satisfiesOne(id *Identity, alternatives [][]string) bool {
	for _, scopes := range alternatives {
		ok := true
		for _, s := range scopes {
			if !id.HasScope(s) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// RequireAdmin authenticates the request with v and requires the admin
// scope: Authenticate(v) then Require(ScopeAdmin).
func RequireAdmin(v *Verifier) func(http.Handler) http.Handler {
	authenticate, require := Authenticate(v), Require(ScopeAdmin)
	return func(next http.Handler) http.Handler { return authenticate(require(next)) }
}

// refuse answers a failed verification: 503 when the verifier could not
// decide, 401 invalid_token otherwise.
func refuse(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrUnavailable):
		problem.Write(w, problem.Unavailable("access tokens cannot be verified right now; retry shortly", time.Second))
	case errors.Is(err, ErrExpired):
		unauthorized(w, "invalid_token", "the access token has expired")
	case errors.Is(err, ErrRevoked):
		unauthorized(w, "invalid_token", "the session of the access token has ended")
	default:
		unauthorized(w, "invalid_token", "the access token is not valid")
	}
}

// unauthorized writes a 401 problem with an RFC 6750 challenge.
func unauthorized(w http.ResponseWriter, code, detail string) {
	w.Header().Set("WWW-Authenticate", realm+`, error="`+code+`", error_description="`+detail+`"`)
	problem.Write(w, problem.Unauthorized(detail))
}
