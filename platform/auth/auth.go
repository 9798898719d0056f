// Package auth decides who is calling and what they may do. Customers and
// admins carry access tokens that the identity service signs (RS256 JWTs);
// a Verifier checks them against identity's published keys (JWKS) and its
// list of revoked sessions, and the middleware here turns the result into an
// Identity in the request context (Authenticate) and into 401 or 403
// problems (Require). The gateway verifies every token at the edge and each
// service that needs a caller verifies it again with the same code, so a
// service never trusts anything a client could have written itself.
package auth

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mercato/mercato/platform/config"
)

// ScopeAdmin is the scope that admin endpoints require.
const ScopeAdmin = "admin"

// Identity is the verified caller of a request: what its access token says.
// Verifier shares one Identity between the requests of a token, so callers
// must not modify it.
type Identity struct {
	// Subject is the customer id (the token's sub).
	Subject string
	// SessionID is the identity session the token belongs to (sid); revoking
	// the session revokes the token.
	SessionID string
	// Scopes are the token's scopes; admin grants admin access.
	Scopes []string
	// ClientID is the OpenID client the token was issued to.
	ClientID string
	// ExpiresAt is when the token expires (exp).
	ExpiresAt time.Time
}

// HasScope reports whether the token carries scope.
func (id *Identity) HasScope(scope string) bool {
	return id != nil && slices.Contains(id.Scopes, scope)
}

// ctxKey keys the authentication result in a request context.
type ctxKey struct{}

// authResult is the caller Authenticate verified. Its presence also tells a
// second Authenticate that the request was already authenticated; an
// anonymous request carries none.
type authResult struct{ id *Identity }

func withResult(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, &authResult{id: id})
}

func resultFrom(ctx context.Context) (*authResult, bool) {
	r, ok := ctx.Value(ctxKey{}).(*authResult)
	return r, ok
}

// FromContext returns the verified caller that Authenticate put in ctx, or
// false for an anonymous request (or one that was not authenticated).
func FromContext(ctx context.Context) (*Identity, bool) {
	r, ok := resultFrom(ctx)
	if !ok || r.id == nil {
		return nil, false
	}
	return r.id, true
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// NewContext returns ctx carrying id as the verified caller, for a service
// that verifies tokens by other means than Authenticate (identity checks
// its own sessions directly) and wants Require, FromContext and CallerScope
// to work as elsewhere. Only code that has verified id may call it.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return withResult(ctx, id)
}

// CallerScope names who is calling, for keeping per-caller state such as
// idempotency records apart: the verified subject when there is one (so a
// customer's records survive a token refresh), else the bearer credential
// itself (a route that checks tokens its own way), otherwise the client's
// address as the gateway forwarded it. Callers must hash it before storing
// it.
func CallerScope(r *http.Request) string {
	if id, ok := FromContext(r.Context()); ok {
		return "subject:" + id.Subject
	}
	if token, ok := BearerToken(r); ok {
		// Only the holder of the credential can present it, so it keeps
		// callers apart even unverified.
		return "bearer:" + token
	}
	return "anonymous:" + ClientAddr(r)
}

// ClientAddr is the client's IP address: the last X-Forwarded-For hop (the
// gateway replaces whatever a client sent with the address it saw), else the
// connection's peer.
func ClientAddr(r *http.Request) string {
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(xff[len(xff)-1], ",")
		if last := strings.TrimSpace(hops[len(hops)-1]); last != "" {
			return last
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Issuer is the iss every access token must carry: the gateway's public URL
// without a trailing slash, or — when public_url is unset — http:// plus the
// gateway's listen address, as the gateway itself assumes.
func Issuer(cfg *config.Config) string {
	if cfg.PublicURL != "" {
		return strings.TrimSuffix(cfg.PublicURL, "/")
	}
	addr := cfg.Service("gateway").Listen
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	return "http://" + addr
}
