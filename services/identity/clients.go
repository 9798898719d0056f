package identity

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/mercato/mercato/platform/config"
)

// StorefrontClient is the built-in public OpenID client of the storefront;
// REST logins mint their tokens for it too.
const StorefrontClient = "storefront"

// scopeAdmin is the scope that admin endpoints require; a token carries it
// only when its customer is an admin.
const scopeAdmin = "admin"

// client is an OpenID client (op.Client). A client with a secret is
// confidential (a server-side web application); one without is public and
// must use PKCE with S256.
type client struct {
	id             string
	secretHash     []byte
	redirectURIs   []string
	postLogoutURIs []string
	loginURL       string
	idTokenTTL     time.Duration
	devMode        bool
}

// GetID is the client_id.
func (c *client) GetID() string { return c.id }

// RedirectURIs are the exact redirect_uri values the client may use.
func (c *client) RedirectURIs() []string { return c.redirectURIs }

// PostLogoutRedirectURIs are where end_session may send the browser.
func (c *client) PostLogoutRedirectURIs() []string { return c.postLogoutURIs }

// ApplicationType is web for confidential clients, user agent (a single
// page application) for public ones.
func (c *client) ApplicationType() op.ApplicationType {
	if c.public() {
		return op.ApplicationTypeUserAgent
	}
	return op.ApplicationTypeWeb
}

// AuthMethod is none for public clients; confidential ones authenticate
// with their secret, in the Authorization header or the form.
func (c *client) AuthMethod() oidc.AuthMethod {
	if c.public() {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

// ResponseTypes allows the authorization code flow only: no implicit flow,
// which would put tokens in URLs.
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

// GrantTypes are the code and refresh token grants.
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}

// LoginURL is the login page for an auth request.
func (c *client) LoginURL(authRequestID string) string {
	return c.loginURL + "?authRequestID=" + url.QueryEscape(authRequestID)
}

// AccessTokenType is JWT: verifiers check tokens without calling identity.
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

// IDTokenLifetime is identity.id_token_ttl.
func (c *client) IDTokenLifetime() time.Duration { return c.idTokenTTL }

// DevMode allows http redirect URIs, for platforms served over plain HTTP
// on a developer's machine; it is on only when the issuer itself is http.
func (c *client) DevMode() bool { return c.devMode }

// RestrictAdditionalIdTokenScopes keeps every scope.
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// RestrictAdditionalAccessTokenScopes keeps every scope.
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// IsScopeAllowed lets clients ask for admin besides the standard scopes;
// whether the token gets it depends on the customer.
func (c *client) IsScopeAllowed(scope string) bool { return scope == scopeAdmin }

// IDTokenUserinfoClaimsAssertion puts name and email into ID tokens even
// when an access token is issued, so a storefront can greet the customer
// without a userinfo call.
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }

// ClockSkew is zero: tokens are minted and verified on synchronised clocks
// and verifiers have their own leeway.
func (c *client) ClockSkew() time.Duration { return 0 }

func (c *client) public() bool { return c.secretHash == nil }

// checkSecret compares a presented secret with the client's in constant
// time.
func (c *client) checkSecret(secret string) bool {
	if c.public() {
		return false
	}
	sum := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(sum[:], c.secretHash) == 1
}

// clients are the registered OpenID clients.
type clients map[string]*client

// newClients registers the built-in storefront client (redirect URI
// <issuer>/callback, post-logout <issuer>/) and the configured ones.
func newClients(cfg *config.Config, issuer string) (clients, error) {
	base := client{
		loginURL:   issuer + "/login",
		idTokenTTL: cfg.Identity.IDTokenTTL,
		devMode:    strings.HasPrefix(issuer, "http://"),
	}
	storefront := base
	storefront.id = StorefrontClient
	storefront.redirectURIs = []string{issuer + "/callback"}
	storefront.postLogoutURIs = []string{issuer + "/"}
	out := clients{StorefrontClient: &storefront}
	for i, cc := range cfg.Identity.Clients {
		key := fmt.Sprintf("identity.clients[%d]", i)
		switch {
		case cc.ID == "":
			return nil, fmt.Errorf("%s.id is required", key)
		case out[cc.ID] != nil:
			return nil, fmt.Errorf("%s.id %q is registered twice", key, cc.ID)
		case len(cc.RedirectURIs) == 0:
			return nil, fmt.Errorf("%s.redirect_uris needs at least one URI", key)
		}
		for _, u := range append(append([]string{}, cc.RedirectURIs...), cc.PostLogoutRedirectURIs...) {
			if p, err := url.Parse(u); err != nil || p.Scheme == "" || p.Host == "" || p.Fragment != "" {
				return nil, fmt.Errorf("%s: %q is not an absolute URI without a fragment", key, u)
			}
		}
		c := base
		c.id = cc.ID
		c.redirectURIs = cc.RedirectURIs
		c.postLogoutURIs = cc.PostLogoutRedirectURIs
		if cc.Secret != "" {
			sum := sha256.Sum256([]byte(cc.Secret))
			c.secretHash = sum[:]
		}
		out[cc.ID] = &c
	}
	return out, nil
}
