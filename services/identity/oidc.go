package identity

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	httphelper "github.com/zitadel/oidc/v3/pkg/http"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// supportedScopes are the scopes discovery lists.
func supportedScopes() []string {
	return []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopeOfflineAccess, scopeAdmin}
}

// newProvider builds zitadel's OpenID provider over storage. The provider
// serves authorize and its callback, introspection, revocation, end
// session and the JWKS; identity answers discovery, the token endpoint
// (so that every token is minted by tokens.mint) and userinfo (so that
// access tokens are checked by the one verifier, revocation included)
// itself.
func newProvider(s *storage, issuer string) (*op.Provider, error) {
	conf := &op.Config{
		DefaultLogoutRedirectURI: issuer + "/",
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		GrantTypeRefreshToken:    true,
		SupportedScopes:          supportedScopes(),
		SupportedClaims:          append(slices.Clone(op.DefaultSupportedClaims), "sid", "scope"),
	}
	// The key encrypts authorization codes (their content is an auth
	// request id, looked up by the code's hash); codes never cross a
	// restart, so a key per process is enough.
	if _, err := rand.Read(conf.CryptoKey[:]); err != nil {
		return nil, err
	}
	opts := []op.Option{
		// CORS is the gateway's: a second set of headers from here would
		// make browsers refuse the response.
		op.WithCORSOptions(nil),
	}
	if strings.HasPrefix(issuer, "http://") {
		// Only a development platform on plain HTTP gets here; the
		// library refuses http issuers otherwise.
		opts = append(opts, op.WithAllowInsecure())
	}
	return op.NewProvider(conf, s, op.StaticIssuer(issuer), opts...)
}

// openID holds the OpenID endpoints identity serves around the provider.
type openID struct {
	provider *op.Provider
	storage  *storage
	sessions *sessionStore
	tokens   *tokens
	verifier *verifier
	cookies  cookies
	issuer   string
	log      *slog.Logger
}

// routes registers the OpenID endpoints, each with the methods the
// standards give it. The token, revocation and introspection endpoints take
// POST only (RFC 6749 §3.2, RFC 7009, RFC 7662): a GET would put codes,
// tokens and secrets into URLs and access logs.
func (o *openID) routes(mux router) {
	mux.Handle("GET /.well-known/openid-configuration", http.HandlerFunc(o.discovery))
	mux.Handle("GET /keys", http.HandlerFunc(o.keys))
	mux.Handle("GET /authorize", o.provider)
	mux.Handle("POST /authorize", o.provider)
	mux.Handle("GET /authorize/callback", o.provider)
	mux.Handle("POST /oauth/token", http.HandlerFunc(o.token))
	mux.Handle("POST /oauth/introspect", o.provider)
	mux.Handle("GET /userinfo", http.HandlerFunc(o.userinfo))
	mux.Handle("POST /userinfo", http.HandlerFunc(o.userinfo))
	mux.Handle("POST /revoke", o.provider)
	mux.Handle("GET /end_session", http.HandlerFunc(o.endSession))
	mux.Handle("POST /end_session", http.HandlerFunc(o.endSession))
}

func (o *openID) withIssuer(r *http.Request) *http.Request {
	return r.WithContext(op.ContextWithIssuer(r.Context(), o.issuer))
}

// discovery is the library's document trimmed to what identity supports:
// the code flow with PKCE S256 and refresh tokens, and no device flow.
func (o *openID) discovery(w http.ResponseWriter, r *http.Request) {
	r = o.withIssuer(r)
	d := op.CreateDiscoveryConfig(r.Context(), o.provider, o.storage)
	d.DeviceAuthorizationEndpoint = ""
	d.CheckSessionIframe = ""
	d.ResponseTypesSupported = []string{string(oidc.ResponseTypeCode)}
	d.ResponseModesSupported = []string{string(oidc.ResponseModeQuery), string(oidc.ResponseModeFormPost)}
	d.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
	d.CodeChallengeMethodsSupported = []oidc.CodeChallengeMethod{oidc.CodeChallengeMethodS256}
	d.TokenEndpointAuthMethodsSupported = []oidc.AuthMethod{oidc.AuthMethodNone, oidc.AuthMethodBasic, oidc.AuthMethodPost}
	d.RequestParameterSupported = false
	d.RequestObjectSigningAlgValuesSupported = nil
	w.Header().Set("Cache-Control", "public, max-age=300")
	op.Discover(w, d)
}

// keys serves the JWKS. Caches may keep it a minute: a new key is
// published two reload periods before it signs.
func (o *openID) keys(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=60")
	op.Keys(w, o.withIssuer(r), o.storage)
}

// token is the token endpoint for the code and refresh token grants. It
// uses the library to parse and validate (client authentication, the code,
// PKCE, redirect_uri, scopes) and tokens.mint to sign.
func (o *openID) token(w http.ResponseWriter, r *http.Request) {
	r = o.withIssuer(r)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if err := r.ParseForm(); err != nil {
		op.RequestError(w, r, oidc.ErrInvalidRequest().WithDescription("the body is not a form"), nil)
		return
	}
	var (
		resp *oidc.AccessTokenResponse
		err  error
	)
	switch oidc.GrantType(r.Form.Get("grant_type")) {
	case oidc.GrantTypeCode:
		resp, err = o.exchangeCode(r)
	case oidc.GrantTypeRefreshToken:
		resp, err = o.exchangeRefresh(r)
	default:
		err = oidc.ErrUnsupportedGrantType().WithDescription("grant_type must be authorization_code or refresh_token")
	}
	if err != nil {
		if !isOIDCError(err) {
			o.log.ErrorContext(r.Context(), "token request failed", "err", err)
		}
		op.RequestError(w, r, err, nil)
		return
	}
	httphelper.MarshalJSON(w, resp)
}

func isOIDCError(err error) bool {
	var e *oidc.Error
	return errors.As(err, &e)
}

// exchangeCode answers the authorization_code grant. The code was deleted
// as it was read, so it works once; the auth request goes with it.
func (o *openID) exchangeCode(r *http.Request) (*oidc.AccessTokenResponse, error) {
	ctx := r.Context()
	tr, err := op.ParseAccessTokenRequest(r, o.provider.Decoder())
	if err != nil {
		return nil, err
	}
	if tr.Code == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("code is missing")
	}
	ar, c, err := op.ValidateAccessTokenRequest(ctx, tr, o.provider)
	if err != nil {
		return nil, err
	}
	a, ok := ar.(*authRequest)
	if !ok {
		return nil, oidc.ErrInvalidGrant()
	}
	req, err := o.storage.fromAuthRequest(ctx, a)
	if err != nil {
		return nil, err
	}
	var refresh string
	if slices.Contains(a.Scopes, oidc.ScopeOfflineAccess) {
		refresh, err = o.sessions.issueRefresh(ctx, refreshGrant{sessionID: req.sessionID, clientID: c.GetID(), scopes: a.Scopes})
		if errors.Is(err, ErrInvalidRefreshToken) {
			return nil, oidc.ErrInvalidGrant().WithDescription("the session has ended")
		}
		if err != nil {
			return nil, err
		}
	}
	resp, err := o.tokens.mint(ctx, req, c, refresh, tr.Code)
	if err != nil {
		return nil, err
	}
	if err := o.storage.DeleteAuthRequest(ctx, a.ID); err != nil {
		o.log.WarnContext(ctx, "deleting a used auth request failed; it expires with its code", "err", err)
	}
	return resp, nil
}

// exchangeRefresh answers the refresh_token grant: the client is
// authenticated and the token looked up by the library (a used token
// revokes its session there), then the token is rotated atomically — of
// two concurrent refreshes with one token, one wins and the other is a
// replay.
func (o *openID) exchangeRefresh(r *http.Request) (*oidc.AccessTokenResponse, error) {
	ctx := r.Context()
	tr, err := op.ParseRefreshTokenRequest(r, o.provider.Decoder())
	if err != nil {
		return nil, err
	}
	rr, c, err := op.ValidateRefreshTokenRequest(ctx, tr, o.provider)
	if err != nil {
		return nil, err
	}
	req, ok := rr.(*tokenRequest)
	if !ok {
		return nil, oidc.ErrInvalidGrant()
	}
	_, next, err := o.sessions.rotateRefresh(ctx, tr.RefreshToken)
	if errors.Is(err, ErrInvalidRefreshToken) {
		return nil, oidc.ErrInvalidGrant().WithDescription("the refresh token is invalid, used or expired")
	}
	if err != nil {
		return nil, err
	}
	return o.tokens.mint(ctx, req, c, next, "")
}

// userinfo answers with the claims of a valid access token's customer, as
// its scopes allow; a missing, invalid or revoked token gets 401 with
// WWW-Authenticate (RFC 6750).
func (o *openID) userinfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	raw, err := op.ParseUserinfoRequest(r, o.provider.Decoder())
	if err != nil || raw == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mercato"`)
		http.Error(w, "an access token is required", http.StatusUnauthorized)
		return
	}
	p, err := o.verifier.verify(r.Context(), raw)
	if errors.Is(err, ErrUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mercato", error="invalid_token"`)
		http.Error(w, "the access token is invalid, expired or revoked", http.StatusUnauthorized)
		return
	}
	var c *Customer
	if err == nil {
		c, err = o.storage.store.Customer(r.Context(), p.customerID)
	}
	if err != nil {
		o.log.ErrorContext(r.Context(), "userinfo failed", "err", err)
		http.Error(w, "userinfo is unavailable", http.StatusServiceUnavailable)
		return
	}
	info := new(oidc.UserInfo)
	setUserinfo(info, c, p.scopes)
	httphelper.MarshalJSON(w, info)
}

// endSession ends the browser's session as well as the one an
// id_token_hint names, and clears the session cookie once it has.
func (o *openID) endSession(w http.ResponseWriter, r *http.Request) {
	b := &browserLogout{}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if sess, err := o.sessions.byCookie(r.Context(), c.Value); err == nil {
			b.session = sess
		}
	}
	ctx := context.WithValue(r.Context(), logoutKey{}, b)
	o.provider.ServeHTTP(&beforeHeader{ResponseWriter: w, fn: func(h http.Header) {
		if b.ended {
			h.Add("Set-Cookie", o.cookies.clearSession().String())
		}
	}}, r.WithContext(ctx))
}

// beforeHeader calls fn with the headers just before they are written.
type beforeHeader struct {
	http.ResponseWriter
	fn    func(http.Header)
	wrote bool
}

// WriteHeader calls fn once, then writes the status.
func (b *beforeHeader) WriteHeader(status int) {
	if !b.wrote {
		b.wrote = true
		b.fn(b.Header())
	}
	b.ResponseWriter.WriteHeader(status)
}

// Write writes the header first if nothing has yet.
func (b *beforeHeader) Write(p []byte) (int, error) {
	if !b.wrote {
		b.WriteHeader(http.StatusOK)
	}
	return b.ResponseWriter.Write(p)
}
