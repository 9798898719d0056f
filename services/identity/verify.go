package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/problem"
)

// principal is the verified holder of an access token.
type principal struct {
	customerID string
	sessionID  string
	clientID   string
	scopes     []string
}

type principalKey struct{}

// principalFrom returns the caller that requireToken verified.
func principalFrom(ctx context.Context) *principal {
	p, _ := ctx.Value(principalKey{}).(*principal)
	return p
}

// verifier checks access tokens with the platform's one verifier
// (platform/auth: RS256 signature by a published key, issuer, audience,
// expiry, revocation as the other services learn it) and then asks the
// session store, which identity owns: here a session that has ended stops
// its tokens at once, not at the next revocation poll.
type verifier struct {
	tokens   *auth.Verifier
	sessions *sessionStore
}

// verify returns the holder of a valid access token; ErrUnauthenticated
// (wrapped with the reason, which is for logs only) otherwise.
func (v *verifier) verify(ctx context.Context, raw string) (*principal, error) {
	ident, err := v.tokens.Verify(ctx, raw)
	if errors.Is(err, auth.ErrUnavailable) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if !id.Valid("cust", ident.Subject) || !id.Valid("sess", ident.SessionID) {
		return nil, fmt.Errorf("%w: no customer or session", ErrUnauthenticated)
	}
	sess, err := v.sessions.get(ctx, ident.SessionID)
	if errors.Is(err, ErrNotFound) || (err == nil && sess.CustomerID != ident.Subject) {
		return nil, fmt.Errorf("%w: session revoked or ended", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	return &principal{customerID: ident.Subject, sessionID: ident.SessionID, clientID: ident.ClientID, scopes: ident.Scopes}, nil
}

// requireToken lets a request through only with a valid access token,
// answering 401 problem+json otherwise, and hands the verified caller to
// the handler (principalFrom).
func (v *verifier) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := auth.BearerToken(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mercato"`)
			problem.Write(w, problem.From(toProblem(ErrUnauthenticated)))
			return
		}
		p, err := v.verify(r.Context(), raw)
		if err != nil {
			if errors.Is(err, ErrUnauthenticated) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="mercato", error="invalid_token"`)
			}
			if pr := problem.From(toProblem(err)); pr != nil {
				problem.Write(w, pr)
				return
			}
			problem.Write(w, problem.Unavailable("sessions cannot be checked right now", time.Second))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}
