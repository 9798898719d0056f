package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/redis/go-redis/v9"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/mercato/mercato/platform/redisx"
)

// Lifetimes of the authorization code flow's state in Redis.
const (
	// authRequestTTL bounds the time from /authorize to a signed-in
	// customer.
	authRequestTTL = 15 * time.Minute
	// codeTTL bounds the time from the redirect with a code to its
	// exchange (RFC 6749 recommends at most ten minutes).
	codeTTL = 2 * time.Minute
)

// errAuthRequestNotFound is an auth request that expired or never existed.
var errAuthRequestNotFound = errors.New("auth request not found or expired")

// authRequest is an authorization request between /authorize and the code
// exchange (op.AuthRequest), kept in Redis as JSON. The login page marks it
// done with the customer, the session and when they authenticated.
type authRequest struct {
	ID                  string                   `json:"id"`
	ClientID            string                   `json:"client_id"`
	RedirectURI         string                   `json:"redirect_uri"`
	State               string                   `json:"state,omitempty"`
	Nonce               string                   `json:"nonce,omitempty"`
	Scopes              []string                 `json:"scopes"`
	ResponseType        oidc.ResponseType        `json:"response_type"`
	ResponseMode        oidc.ResponseMode        `json:"response_mode,omitempty"`
	CodeChallenge       string                   `json:"code_challenge,omitempty"`
	CodeChallengeMethod oidc.CodeChallengeMethod `json:"code_challenge_method,omitempty"`
	Prompt              []string                 `json:"prompt,omitempty"`
	// MaxAge is max_age in seconds; prompt=login makes it 0.
	MaxAge *uint `json:"max_age,omitempty"`
	// HintSubject is the subject of a valid id_token_hint: only that
	// customer's browser session may skip the login form.
	HintSubject string `json:"hint_subject,omitempty"`

	// Set by the login page.
	Subject   string    `json:"subject,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	AuthTime  time.Time `json:"auth_time,omitempty"`
	AMR       []string  `json:"amr,omitempty"`
	IsDone    bool      `json:"done,omitempty"`
	// BrowserHash and FormHash bind the login form to the browser that
	// loaded it (CSRF): the SHA-256 of its login cookie and of the form's
	// token.
	BrowserHash string `json:"browser_hash,omitempty"`
	FormHash    string `json:"form_hash,omitempty"`
}

// GetID is the auth request id.
func (a *authRequest) GetID() string { return a.ID }

// GetACR is empty: there is one level of authentication.
func (a *authRequest) GetACR() string { return "" }

// GetAMR says how the customer authenticated.
func (a *authRequest) GetAMR() []string { return a.AMR }

// GetAudience is the client.
func (a *authRequest) GetAudience() []string { return []string{a.ClientID} }

// GetAuthTime is when the customer authenticated.
func (a *authRequest) GetAuthTime() time.Time { return a.AuthTime }

// GetClientID is the client that asked.
func (a *authRequest) GetClientID() string { return a.ClientID }

// GetCodeChallenge is the PKCE challenge, if any.
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: a.CodeChallengeMethod}
}

// GetNonce is the client's nonce.
func (a *authRequest) GetNonce() string { return a.Nonce }

// GetRedirectURI is where the code goes.
func (a *authRequest) GetRedirectURI() string { return a.RedirectURI }

// GetResponseType is code.
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.ResponseType }

// GetResponseMode is the client's response_mode.
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.ResponseMode }

// GetScopes are the scopes asked for.
func (a *authRequest) GetScopes() []string { return a.Scopes }

// GetState is the client's state.
func (a *authRequest) GetState() string { return a.State }

// GetSubject is the customer, once signed in.
func (a *authRequest) GetSubject() string { return a.Subject }

// Done reports whether the customer has signed in.
func (a *authRequest) Done() bool { return a.IsDone }

// forcesLogin reports whether the request needs the password typed now,
// even with a live browser session: prompt=login or select_account, or an
// authentication older than max_age.
func (a *authRequest) forcesLogin(authTime, now time.Time) bool {
	if slices.Contains(a.Prompt, oidc.PromptLogin) || slices.Contains(a.Prompt, oidc.PromptSelectAccount) {
		return true
	}
	if a.MaxAge != nil && (*a.MaxAge == 0 || now.Sub(authTime) > time.Duration(*a.MaxAge)*time.Second) {
		return true
	}
	return false
}

// storage is the OpenID provider's storage (op.Storage) over the identity
// service's stores: auth requests and codes in Redis with short TTLs,
// tokens on the session machinery, keys from the key manager, accounts from
// PostgreSQL.
type storage struct {
	rdb      *redis.Client
	keys     redisx.Keys
	store    *Store
	sessions *sessionStore
	signing  *keyManager
	clients  clients
	// accessTTL is the life of access tokens.
	accessTTL time.Duration
}

func (s *storage) authRequestKey(id string) string { return s.keys.Key("authreq", id) }
func (s *storage) codeKey(code string) string      { return s.keys.Key("code", hashSecret(code)) }

// CreateAuthRequest stores a validated authorization request. It refuses
// what the library lets through: a public client without PKCE, and any
// code_challenge_method but S256.
func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	c := s.clients[req.ClientID]
	if c == nil {
		return nil, oidc.ErrInvalidClient()
	}
	switch {
	case req.CodeChallenge == "" && c.public():
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE is required: send code_challenge with code_challenge_method=S256")
	case req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256:
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	a := &authRequest{
		ID: "ar_" + base64.RawURLEncoding.EncodeToString(b), ClientID: req.ClientID, RedirectURI: req.RedirectURI,
		State: req.State, Nonce: req.Nonce, Scopes: req.Scopes, ResponseType: req.ResponseType, ResponseMode: req.ResponseMode,
		CodeChallenge: req.CodeChallenge, CodeChallengeMethod: req.CodeChallengeMethod, Prompt: req.Prompt,
		MaxAge: req.MaxAge, HintSubject: userID,
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	if err := s.rdb.Set(ctx, s.authRequestKey(a.ID), raw, authRequestTTL).Err(); err != nil {
		return nil, fmt.Errorf("store auth request: %w", err)
	}
	return a, nil
}

// authRequest reads an auth request; errAuthRequestNotFound when it
// expired.
func (s *storage) authRequest(ctx context.Context, id string) (*authRequest, error) {
	raw, err := s.rdb.Get(ctx, s.authRequestKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, errAuthRequestNotFound
	}
	if err != nil {
		return nil, err
	}
	var a authRequest
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// saveAuthRequest stores a changed auth request, keeping its expiry.
func (s *storage) saveAuthRequest(ctx context.Context, a *authRequest) error {
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	err = s.rdb.SetArgs(ctx, s.authRequestKey(a.ID), raw, redis.SetArgs{Mode: "XX", KeepTTL: true}).Err()
	if errors.Is(err, redis.Nil) {
		return errAuthRequestNotFound
	}
	return err
}

// AuthRequestByID reads an auth request.
func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	return s.authRequest(ctx, id)
}

// AuthRequestByCode reads the auth request a code was issued for. The code
// is deleted as it is read, so that it can be exchanged at most once, even
// by two concurrent requests.
func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	id, err := s.rdb.GetDel(ctx, s.codeKey(code)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, errors.New("unknown, used or expired code")
	}
	if err != nil {
		return nil, err
	}
	return s.authRequest(ctx, id)
}

// SaveAuthCode records a code for an auth request (by its hash) and lets
// the request live exactly as long as the code.
func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.codeKey(code), id, codeTTL)
		p.Expire(ctx, s.authRequestKey(id), codeTTL)
		return nil
	})
	return err
}

// DeleteAuthRequest forgets an auth request once its code is exchanged.
func (s *storage) DeleteAuthRequest(ctx context.Context, id string) error {
	return s.rdb.Del(ctx, s.authRequestKey(id)).Err()
}

// tokenRequestFor loads what tokens of a session for a client are minted
// from: the live session and its customer. ErrInvalidRefreshToken when the
// session has ended.
func (s *storage) tokenRequestFor(ctx context.Context, sessionID, clientID string, scopes []string) (*tokenRequest, error) {
	sess, err := s.sessions.get(ctx, sessionID)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrInvalidRefreshToken
	}
	if err != nil {
		return nil, err
	}
	c, err := s.store.Customer(ctx, sess.CustomerID)
	if err != nil {
		return nil, err
	}
	return &tokenRequest{
		customer: c, sessionID: sess.ID, clientID: clientID, scopes: scopes,
		authTime: sess.AuthTime, amr: []string{"pwd"},
	}, nil
}

// fromAuthRequest is what the tokens of a completed authorization request
// are minted from.
func (s *storage) fromAuthRequest(ctx context.Context, a *authRequest) (*tokenRequest, error) {
	if !a.IsDone {
		return nil, oidc.ErrInvalidGrant().WithDescription("the authorization request is not complete")
	}
	req, err := s.tokenRequestFor(ctx, a.SessionID, a.ClientID, a.Scopes)
	if errors.Is(err, ErrInvalidRefreshToken) {
		return nil, oidc.ErrInvalidGrant().WithDescription("the session has ended")
	}
	if err != nil {
		return nil, err
	}
	req.authTime, req.amr, req.nonce = a.AuthTime, a.AMR, a.Nonce
	return req, nil
}

// asTokenRequest turns what the library passes to the token creators into
// a tokenRequest.
func (s *storage) asTokenRequest(ctx context.Context, r op.TokenRequest) (*tokenRequest, error) {
	switch r := r.(type) {
	case *tokenRequest:
		return r, nil
	case *authRequest:
		return s.fromAuthRequest(ctx, r)
	default:
		return nil, oidc.ErrUnsupportedGrantType()
	}
}

// CreateAccessToken names a new access token of the request's session.
// Identity mints tokens itself (tokens.mint); this serves the library's
// own paths should it take one.
func (s *storage) CreateAccessToken(ctx context.Context, r op.TokenRequest) (string, time.Time, error) {
	req, err := s.asTokenRequest(ctx, r)
	if err != nil {
		return "", time.Time{}, err
	}
	jti, err := accessTokenID(req.sessionID)
	return jti, time.Now().Add(s.accessTTL), err
}

// CreateAccessAndRefreshTokens names a new access token and rotates the
// refresh token (or issues a first one).
func (s *storage) CreateAccessAndRefreshTokens(ctx context.Context, r op.TokenRequest, current string) (string, string, time.Time, error) {
	req, err := s.asTokenRequest(ctx, r)
	if err != nil {
		return "", "", time.Time{}, err
	}
	var refresh string
	if current != "" {
		_, refresh, err = s.sessions.rotateRefresh(ctx, current)
	} else {
		refresh, err = s.sessions.issueRefresh(ctx, refreshGrant{sessionID: req.sessionID, clientID: req.clientID, scopes: req.scopes})
	}
	if err != nil {
		return "", "", time.Time{}, oidc.ErrInvalidGrant().WithParent(err)
	}
	jti, err := accessTokenID(req.sessionID)
	return jti, refresh, time.Now().Add(s.accessTTL), err
}

// TokenRequestByRefreshToken reads what a refresh token allows, without
// using it. A used token revokes its session.
func (s *storage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	g, err := s.sessions.lookupRefresh(ctx, token)
	if err != nil {
		return nil, err
	}
	return s.tokenRequestFor(ctx, g.sessionID, g.clientID, g.scopes)
}

// TerminateSession ends the customer's sessions signed in through the
// client. End session requests use TerminateSessionFromRequest instead.
func (s *storage) TerminateSession(ctx context.Context, userID, clientID string) error {
	all, err := s.sessions.list(ctx, userID)
	if err != nil {
		return err
	}
	for _, sess := range all {
		if sess.ClientID == clientID {
			if _, err := s.sessions.end(ctx, sess.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// logoutKey carries the browser session of an end session request from
// its handler to TerminateSessionFromRequest.
type logoutKey struct{}

// browserLogout is the browser session an end session request came with,
// and whether it was ended.
type browserLogout struct {
	session *Session
	ended   bool
}

// TerminateSessionFromRequest ends the session named by the id_token_hint
// (its sid claim) and the browser's session, and returns where to send the
// browser.
func (s *storage) TerminateSessionFromRequest(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	if req.IDTokenHintClaims != nil {
		if sid, ok := req.IDTokenHintClaims.Claims["sid"].(string); ok {
			if sess, err := s.sessions.get(ctx, sid); err == nil && sess.CustomerID == req.UserID {
				if _, err := s.sessions.end(ctx, sid); err != nil {
					return "", err
				}
			}
		}
	}
	if b, ok := ctx.Value(logoutKey{}).(*browserLogout); ok && b.session != nil && (req.UserID == "" || req.UserID == b.session.CustomerID) {
		if _, err := s.sessions.end(ctx, b.session.ID); err != nil {
			return "", err
		}
		b.ended = true
	}
	return req.RedirectURI, nil
}

// RevokeToken ends the session of a revoked token (RFC 7009: revoking a
// token invalidates the grant it came from). Tokens that are not valid are
// ignored, as the RFC asks.
func (s *storage) RevokeToken(ctx context.Context, tokenOrID, userID, clientID string) *oidc.Error {
	if userID == "" {
		return nil // neither a valid refresh token nor a valid access token
	}
	sid, ok := sessionOfToken(tokenOrID)
	if !ok {
		return nil
	}
	sess, err := s.sessions.get(ctx, sid)
	if err != nil || sess.CustomerID != userID {
		return nil
	}
	if _, err := s.sessions.end(ctx, sid); err != nil {
		return oidc.ErrServerError().WithParent(err)
	}
	return nil
}

// GetRefreshTokenInfo names the customer and session of an active refresh
// token of the client.
func (s *storage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	g, err := s.sessions.lookupRefresh(ctx, token)
	if errors.Is(err, ErrInvalidRefreshToken) || (err == nil && g.clientID != clientID) {
		return "", "", op.ErrInvalidRefreshToken
	}
	if err != nil {
		return "", "", err
	}
	sess, err := s.sessions.get(ctx, g.sessionID)
	if err != nil {
		return "", "", op.ErrInvalidRefreshToken
	}
	return sess.CustomerID, sess.ID, nil
}

// SigningKey is the key that signs now.
func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return s.signing.keys().signer, nil
}

// SignatureAlgorithms is RS256 only.
func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{signingAlgorithm}, nil
}

// KeySet is every key that may still verify a live token: the JWKS.
func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	ks := s.signing.keys()
	out := make([]op.Key, len(ks.published))
	for i, k := range ks.published {
		out[i] = publicKey{k}
	}
	return out, nil
}

// GetClientByClientID returns a registered client.
func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	if c := s.clients[clientID]; c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no client %q", clientID)
}

// AuthorizeClientIDSecret checks a confidential client's secret.
func (s *storage) AuthorizeClientIDSecret(_ context.Context, clientID, secret string) error {
	if c := s.clients[clientID]; c != nil && c.checkSecret(secret) {
		return nil
	}
	return oidc.ErrInvalidClient().WithDescription("unknown client or wrong secret")
}

// SetUserinfoFromScopes does nothing; SetUserinfoFromRequest fills ID
// tokens, as the library's interface asks of new implementations.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest puts the customer's claims into an ID token, as
// the scopes allow, and the session id as sid (OpenID Connect Front-Channel
// Logout), so that end_session can end the session its id_token_hint names.
func (s *storage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, r op.IDTokenRequest, scopes []string) error {
	req, ok := r.(*tokenRequest)
	if !ok {
		return errors.New("ID tokens are minted from token requests only")
	}
	setUserinfo(info, req.customer, scopes)
	info.AppendClaims("sid", req.sessionID)
	return nil
}

func setUserinfo(info *oidc.UserInfo, c *Customer, scopes []string) {
	info.Subject = c.ID
	if slices.Contains(scopes, oidc.ScopeProfile) {
		info.Name = c.Name
	}
	if slices.Contains(scopes, oidc.ScopeEmail) {
		info.Email = c.Email
		info.EmailVerified = false
	}
}

// liveCustomer returns the customer of a verified access token, checking
// that its session has not been revoked.
func (s *storage) liveCustomer(ctx context.Context, tokenID, subject string) (*Customer, *Session, error) {
	sid, ok := sessionOfToken(tokenID)
	if !ok {
		return nil, nil, ErrUnauthenticated
	}
	sess, err := s.sessions.get(ctx, sid)
	if errors.Is(err, ErrNotFound) || (err == nil && sess.CustomerID != subject) {
		return nil, nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, nil, err
	}
	c, err := s.store.Customer(ctx, subject)
	if err != nil {
		return nil, nil, err
	}
	return c, sess, nil
}

// SetUserinfoFromToken answers /userinfo for a verified access token
// whose session is still live.
func (s *storage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	c, _, err := s.liveCustomer(ctx, tokenID, subject)
	if err != nil {
		return err
	}
	setUserinfo(info, c, []string{oidc.ScopeProfile, oidc.ScopeEmail})
	return nil
}

// SetIntrospectionFromToken answers /oauth/introspect for a verified access
// token whose session is still live; any error makes it inactive.
func (s *storage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, _ string) error {
	c, sess, err := s.liveCustomer(ctx, tokenID, subject)
	if err != nil {
		return err
	}
	resp.Subject, resp.Username, resp.JWTID, resp.TokenType = c.ID, c.Email, tokenID, oidc.BearerToken
	resp.AuthTime = oidc.FromTime(sess.AuthTime)
	return nil
}

// GetPrivateClaimsFromScopes adds nothing; GetPrivateClaimsFromRequest
// does.
func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// GetPrivateClaimsFromRequest adds sid and scope to access tokens (the
// library's access token claims carry neither).
func (s *storage) GetPrivateClaimsFromRequest(_ context.Context, r op.TokenRequest, _ []string) (map[string]any, error) {
	req, ok := r.(*tokenRequest)
	if !ok {
		return nil, errors.New("access tokens are minted from token requests only")
	}
	return map[string]any{"sid": req.sessionID, "scope": oidc.SpaceDelimitedArray(req.scopes).String()}, nil
}

// GetKeyByIDAndClientID refuses: no client authenticates with a key.
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("private_key_jwt client authentication is not supported")
}

// ValidateJWTProfileScopes refuses: the JWT profile grant is not
// supported.
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("the JWT profile grant is not supported")
}

// Health checks Redis, which every flow needs.
func (s *storage) Health(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }
