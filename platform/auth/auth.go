// Package auth decides who may call what. Until the identity service issues
// signed tokens, admin access is a placeholder: one bearer token from
// configuration (admin.token). Everything that needs admin rights goes through
// RequireAdmin, so replacing the placeholder with JWT verification changes
// this package only.
package auth

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/problem"
)

// BearerToken returns the token of an "Authorization: Bearer <token>" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// RequireAdmin lets a request through only when it carries an admin
// credential: 401 problem+json without one or with a wrong one.
func RequireAdmin(store *config.Store) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := BearerToken(r)
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="mercato"`)
				problem.Write(w, problem.Unauthorized("this endpoint needs an admin bearer token"))
				return
			}
			want := store.Get().Admin.Token
			if want == "" || subtle.ConstantTimeCompare([]byte(token), []byte(want)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="mercato", error="invalid_token"`)
				problem.Write(w, problem.Unauthorized("the bearer token is not valid"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// CallerScope names who is calling, for keeping per-caller state such as
// idempotency records apart: the bearer credential when there is one,
// otherwise the client's address as the gateway forwarded it. Callers must
// hash it before storing it.
func CallerScope(r *http.Request) string {
	if token, ok := BearerToken(r); ok {
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
