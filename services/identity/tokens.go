package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/mercato/mercato/platform/id"
)

// restScopes are the scopes of tokens from the REST login; admin is kept
// only for admins.
func restScopes() []string {
	return []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, scopeAdmin}
}

// tokenRequest is what a set of tokens is minted from, by the REST login and
// refresh and by the OpenID token endpoint alike: who, in which session, for
// which client and scopes. It implements op.AuthRequest (so that
// op.CreateIDToken echoes the nonce) and op.RefreshTokenRequest.
type tokenRequest struct {
	customer  *Customer
	sessionID string
	clientID  string
	scopes    []string
	audience  []string
	authTime  time.Time
	amr       []string
	nonce     string
}

// GetID is the session id.
func (t *tokenRequest) GetID() string { return t.sessionID }

// GetACR is empty: there is one level of authentication.
func (t *tokenRequest) GetACR() string { return "" }

// GetAMR says how the customer authenticated (pwd).
func (t *tokenRequest) GetAMR() []string { return t.amr }

// GetAudience is the aud of the token being minted.
func (t *tokenRequest) GetAudience() []string { return t.audience }

// GetAuthTime is when the customer typed the password.
func (t *tokenRequest) GetAuthTime() time.Time { return t.authTime }

// GetClientID is the client the tokens are for.
func (t *tokenRequest) GetClientID() string { return t.clientID }

// GetCodeChallenge is nil: the challenge was checked before minting.
func (t *tokenRequest) GetCodeChallenge() *oidc.CodeChallenge { return nil }

// GetNonce is the nonce of the authorization request, echoed into the ID
// token.
func (t *tokenRequest) GetNonce() string { return t.nonce }

// GetRedirectURI is empty: tokens are returned, not redirected.
func (t *tokenRequest) GetRedirectURI() string { return "" }

// GetResponseType is code.
func (t *tokenRequest) GetResponseType() oidc.ResponseType { return oidc.ResponseTypeCode }

// GetResponseMode is the default.
func (t *tokenRequest) GetResponseMode() oidc.ResponseMode { return "" }

// GetScopes are the scopes granted.
func (t *tokenRequest) GetScopes() []string { return t.scopes }

// GetState is empty: state belongs to the authorization response.
func (t *tokenRequest) GetState() string { return "" }

// GetSubject is the customer id.
func (t *tokenRequest) GetSubject() string { return t.customer.ID }

// Done is true: the customer has authenticated.
func (t *tokenRequest) Done() bool { return true }

// SetCurrentScopes narrows the scopes of a refresh, as a client may ask.
func (t *tokenRequest) SetCurrentScopes(scopes []string) { t.scopes = scopes }

// grantedScopes are the scopes a token gets: the requested ones, without
// admin unless the customer is an admin now (a revoked admin loses the
// scope at the next refresh).
func grantedScopes(requested []string, c *Customer) []string {
	out := make([]string, 0, len(requested))
	for _, s := range requested {
		if (s != scopeAdmin || c.IsAdmin) && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// accessTokenID is the jti of a new access token: its session id and 96
// random bits, so that the userinfo and revocation endpoints, which see
// only the jti, can find the session.
func accessTokenID(sessionID string) (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return sessionID + "." + base64.RawURLEncoding.EncodeToString(b), nil
}

// sessionOfToken returns the session of an access token id (or a bare
// session id).
func sessionOfToken(tokenID string) (string, bool) {
	sid, _, _ := strings.Cut(tokenID, ".")
	return sid, id.Valid("sess", sid)
}

// tokens is the one implementation of token minting: signed with the
// current key through zitadel's op.CreateJWT and op.CreateIDToken, so that
// REST and OpenID tokens are the same kind.
type tokens struct {
	issuer    string
	audience  string
	accessTTL time.Duration
	storage   op.Storage
}

// mint returns an access token and an ID token for req, with refresh as the
// refresh token (empty for none) and code the authorization code they were
// exchanged for (empty for none; it goes into c_hash).
//
// The access token's aud holds the platform audience and the client; the
// ID token's only the client, so that an ID token can never pass as an
// access token.
func (t *tokens) mint(ctx context.Context, req *tokenRequest, c op.Client, refresh, code string) (*oidc.AccessTokenResponse, error) {
	req.scopes = grantedScopes(req.scopes, req.customer)
	jti, err := accessTokenID(req.sessionID)
	if err != nil {
		return nil, err
	}
	exp := time.Now().Add(t.accessTTL)
	access := *req
	access.audience = []string{t.audience}
	if c.GetID() != t.audience {
		access.audience = append(access.audience, c.GetID())
	}
	at, err := op.CreateJWT(ctx, t.issuer, &access, exp, jti, c, t.storage)
	if err != nil {
		return nil, fmt.Errorf("sign access token: %w", err)
	}
	idReq := *req
	idReq.audience = []string{c.GetID()}
	idt, err := op.CreateIDToken(ctx, t.issuer, &idReq, c.IDTokenLifetime(), at, code, t.storage, c)
	if err != nil {
		return nil, fmt.Errorf("sign ID token: %w", err)
	}
	return &oidc.AccessTokenResponse{
		AccessToken: at, TokenType: oidc.BearerToken, RefreshToken: refresh,
		ExpiresIn: uint64(t.accessTTL / time.Second), IDToken: idt, Scope: req.scopes,
	}, nil
}
