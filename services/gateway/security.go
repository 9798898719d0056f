package gateway

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/openapi"
)

// bearerScheme is the security scheme of access tokens, which the gateway
// verifies itself (platform/openapi's common components declare it).
const bearerScheme = "bearer"

// adminPrefix is where admin operations live; they need the admin scope
// whatever their fragment says.
const adminPrefix = "/v1/admin/"

// policy is who may call one operation, as its OpenAPI security says.
type policy struct {
	// public operations take no credential at all: the gateway neither
	// verifies nor requires a token.
	public bool
	// anonymous admits callers without a token; a token, when sent, is still
	// verified.
	anonymous bool
	// scopes are the alternatives for callers with a token: a token must
	// carry every scope of one of them. An empty alternative admits any
	// valid token.
	scopes [][]string
	// otherSchemes is set when an alternative names a scheme other than
	// bearer (HTTP Basic client authentication at a token endpoint, say):
	// the gateway cannot check it, so it lets a non-Bearer Authorization
	// header through untouched and requires nothing (bearer tokens are
	// still verified); the owning service enforces the operation's
	// requirements.
	otherSchemes bool
	// forcedAdmin tells that the fragment did not require the admin scope
	// on an admin operation and the gateway added it.
	forcedAdmin bool
}

// policyFor reads op's security. known lists the declared security
// schemes; a requirement naming another is an error, so a typo cannot
// silently open an operation.
func policyFor(op openapi.Operation, known []string) (policy, error) {
	var p policy
	if op.Public() && !strings.HasPrefix(op.Path, adminPrefix) {
		return policy{public: true, anonymous: true}, nil
	}
	if len(op.Security) == 0 {
		p.anonymous = true
	}
	for _, req := range op.Security {
		if len(req) == 0 {
			p.anonymous = true
			continue
		}
		var scopes []string
		bearer := false
		for scheme, s := range req {
			if !slices.Contains(known, scheme) {
				return policy{}, fmt.Errorf("%s: security names the undeclared scheme %q (declared: %s)", op.Pattern(), scheme, strings.Join(known, ", "))
			}
			if scheme == bearerScheme {
				bearer, scopes = true, s
				continue
			}
			p.otherSchemes = true
		}
		if bearer && len(req) == 1 {
			p.scopes = append(p.scopes, slices.Clone(scopes))
		}
	}
	if op.Path == strings.TrimSuffix(adminPrefix, "/") || strings.HasPrefix(op.Path, adminPrefix) {
		p = requireAdmin(p)
	}
	return p, nil
}

// requireAdmin makes p need the admin scope: defence in depth for admin
// operations, so a fragment that forgot to say so does not open one.
func requireAdmin(p policy) policy {
	out := policy{forcedAdmin: p.anonymous || p.otherSchemes || len(p.scopes) == 0}
	for _, s := range p.scopes {
		if !slices.Contains(s, auth.ScopeAdmin) {
			out.forcedAdmin = true
			s = append(slices.Clone(s), auth.ScopeAdmin)
		}
		out.scopes = append(out.scopes, s)
	}
	if len(out.scopes) == 0 {
		out.scopes = [][]string{{auth.ScopeAdmin}}
	}
	return out
}

// wrap puts p's checks in front of h: every request with a bearer token is
// verified (401 if it fails, before anything is forwarded), then callers
// without the needed token or scope get 401 or 403.
func (p policy) wrap(v *auth.Verifier, h http.Handler) http.Handler {
	if p.public {
		return h
	}
	if !p.anonymous && !p.otherSchemes {
		h = auth.RequireOneOf(p.scopes...)(h)
	}
	var opts []auth.AuthenticateOption
	if p.otherSchemes {
		opts = append(opts, auth.LeaveOtherSchemes())
	}
	return auth.Authenticate(v, opts...)(h)
}

// identityHeaders are request headers that some proxy, framework or
// platform uses to carry a caller's identity. No Mercato service trusts
// them — services verify the forwarded Authorization header themselves —
// but the gateway drops them, and every X-Mercato-* header, so a client
// can never plant one that a future service might believe.
var identityHeaders = []string{
	"Remote-User",
	"X-Auth-Request-Email",
	"X-Auth-Request-User",
	"X-Authenticated-User",
	"X-Authenticated-Userid",
	"X-Consumer-Id",
	"X-Consumer-Username",
	"X-Forwarded-Email",
	"X-Forwarded-Preferred-Username",
	"X-Forwarded-User",
	"X-Jwt-Payload",
	"X-Remote-User",
	"X-User",
	"X-User-Id",
	"X-Userinfo",
}

// stripIdentityHeaders removes identity-like headers from a request on its
// way to a service.
func stripIdentityHeaders(h http.Header) {
	for name := range h {
		if identityLike(name) {
			delete(h, name)
		}
	}
}

// identityLike reports whether a header name is one of identityHeaders or
// X-Mercato-*, in any case and with _ for - (some servers and frameworks
// read X_User_Id as X-User-Id).
func identityLike(name string) bool {
	if strings.ContainsRune(name, '_') {
		name = strings.ReplaceAll(name, "_", "-")
	}
	const prefix = "X-Mercato-"
	if len(name) >= len(prefix) && strings.EqualFold(name[:len(prefix)], prefix) {
		return true
	}
	for _, h := range identityHeaders {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}
