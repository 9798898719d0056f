// Package authtest stands in for the identity service in tests, the way
// httptest upstreams stand in for services in the gateway's tests: an
// Issuer holds RSA signing keys, mints access tokens as identity would,
// publishes its keys at /keys and its revoked sessions through the real
// SessionService Connect handler, on a loopback server that speaks HTTP/1.1
// and cleartext HTTP/2 like a Mercato service. Config points a
// configuration at it, so a service or gateway under test verifies tokens
// exactly as in production.
package authtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mercato/mercato/platform/config"
	identityv1 "github.com/mercato/mercato/proto/gen/mercato/identity/v1"
	"github.com/mercato/mercato/proto/gen/mercato/identity/v1/identityv1connect"
)

// TokenTTL is the lifetime of the tokens Claims describes, identity's
// default access-token lifetime.
const TokenTTL = 15 * time.Minute

// Key is an RSA signing key and its key id.
type Key struct {
	ID      string
	Private *rsa.PrivateKey
}

// Claims are the claims of an access token. Mint signs exactly these: an
// empty string or zero time leaves its claim out, which is how tests make
// tokens that lack one.
type Claims struct {
	Issuer    string
	Audience  []string
	Subject   string
	SessionID string
	Scopes    []string
	ClientID  string
	ID        string
	IssuedAt  time.Time
	NotBefore time.Time
	ExpiresAt time.Time
	// Extra claims are added as they are.
	Extra map[string]any
}

// revocation is one revoked session, in the order of revocation.
type revocation struct {
	sid       string
	revokedAt time.Time
	expiresAt time.Time
}

// Issuer is a stand-in identity service. Its methods are safe for
// concurrent use.
type Issuer struct {
	srv      *httptest.Server
	audience atomic.Value // string

	mu        sync.Mutex
	keyCount  int
	signing   *Key
	published []*Key
	revoked   []revocation
	// lastExp is the latest exp minted per session, which a revocation
	// reports as its expires_at, as identity does.
	lastExp map[string]time.Time
	down    bool
	// revocationsDown fails ListRevokedSessions alone.
	revocationsDown bool
	seq             atomic.Int64

	keyFetches atomic.Int64
	polls      atomic.Int64
}

// New starts an issuer with one published signing key; it stops when the
// test ends.
func New(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{lastExp: map[string]time.Time{}}
	i.audience.Store(config.Defaults().Auth.Audience)
	k := i.NewKey(t)
	i.signing, i.published = k, []*Key{k}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /keys", i.serveKeys)
	mux.Handle(identityv1connect.NewSessionServiceHandler(sessionService{i}))
	i.srv = httptest.NewUnstartedServer(mux)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	i.srv.Config.Protocols = protocols
	i.srv.Start()
	t.Cleanup(i.srv.Close)
	return i
}

// URL is where the issuer is reached; it is also the iss of its tokens.
func (i *Issuer) URL() string { return i.srv.URL }

// Config points cfg at the issuer: services.identity.url and public_url
// (the issuer identity would use) become its URL, and Claims uses cfg's
// audience from then on.
func (i *Issuer) Config(cfg *config.Config) {
	if cfg.Services == nil {
		cfg.Services = map[string]config.ServiceConfig{}
	}
	id := cfg.Services["identity"]
	id.URL = i.URL()
	cfg.Services["identity"] = id
	cfg.PublicURL = i.URL()
	i.audience.Store(cfg.Auth.Audience)
}

// Claims returns the claims of a valid access token for subject with
// scopes, in a new session, issued now and expiring after TokenTTL.
func (i *Issuer) Claims(subject string, scopes ...string) Claims {
	now := time.Now()
	n := i.seq.Add(1)
	return Claims{
		Issuer:    i.URL(),
		Audience:  []string{i.audience.Load().(string)},
		Subject:   subject,
		SessionID: fmt.Sprintf("ses_test%06d", n),
		Scopes:    scopes,
		ClientID:  "storefront",
		ID:        fmt.Sprintf("at_test%06d", n),
		IssuedAt:  now,
		ExpiresAt: now.Add(TokenTTL),
	}
}

// Token mints a valid access token for subject with scopes.
func (i *Issuer) Token(t testing.TB, subject string, scopes ...string) string {
	t.Helper()
	return i.Mint(t, i.Claims(subject, scopes...))
}

// AdminToken mints a valid access token with the admin scope.
func (i *Issuer) AdminToken(t testing.TB) string {
	t.Helper()
	return i.Token(t, "cus_admin", "openid", "admin")
}

// MintOption changes how Mint signs.
type MintOption func(*mintOptions)

type mintOptions struct {
	key *Key
	kid *string
}

// SignedBy signs with k, published or not, instead of the current key.
func SignedBy(k *Key) MintOption { return func(o *mintOptions) { o.key = k } }

// KeyID puts kid in the header whatever key signs; an empty kid leaves the
// header without one.
func KeyID(kid string) MintOption { return func(o *mintOptions) { o.kid = &kid } }

// Mint signs c as an RS256 JWT with the current signing key.
func (i *Issuer) Mint(t testing.TB, c Claims, opts ...MintOption) string {
	t.Helper()
	var o mintOptions
	for _, opt := range opts {
		opt(&o)
	}
	i.mu.Lock()
	key := i.signing
	if c.SessionID != "" && c.ExpiresAt.After(i.lastExp[c.SessionID]) {
		i.lastExp[c.SessionID] = c.ExpiresAt
	}
	i.mu.Unlock()
	if o.key != nil {
		key = o.key
	}
	kid := key.ID
	if o.kid != nil {
		kid = *o.kid
	}
	jwk := jose.JSONWebKey{Key: key.Private, KeyID: kid}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk}, (&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatalf("authtest: signer: %v", err)
	}
	token, err := jwt.Signed(signer).Claims(c.Map()).Serialize()
	if err != nil {
		t.Fatalf("authtest: sign: %v", err)
	}
	return token
}

// Map is the JSON claims object of c.
func (c Claims) Map() map[string]any {
	m := map[string]any{}
	set := func(name, v string) {
		if v != "" {
			m[name] = v
		}
	}
	setTime := func(name string, v time.Time) {
		if !v.IsZero() {
			m[name] = v.Unix()
		}
	}
	set("iss", c.Issuer)
	set("sub", c.Subject)
	set("sid", c.SessionID)
	set("scope", strings.Join(c.Scopes, " "))
	set("client_id", c.ClientID)
	set("jti", c.ID)
	switch len(c.Audience) {
	case 0:
	case 1:
		m["aud"] = c.Audience[0]
	default:
		m["aud"] = c.Audience
	}
	setTime("iat", c.IssuedAt)
	setTime("nbf", c.NotBefore)
	setTime("exp", c.ExpiresAt)
	for k, v := range c.Extra {
		m[k] = v
	}
	return m
}

// NewKey makes a 2048-bit RSA key with a fresh key id without publishing
// it; Rotate and SignedBy use such keys.
func (i *Issuer) NewKey(t testing.TB) *Key {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("authtest: generate key: %v", err)
	}
	i.mu.Lock()
	i.keyCount++
	n := i.keyCount
	i.mu.Unlock()
	return &Key{ID: fmt.Sprintf("test-key-%d", n), Private: priv}
}

// SigningKey is the key Mint signs with.
func (i *Issuer) SigningKey() *Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.signing
}

// Rotate publishes a new key beside the old ones and signs with it from now
// on, as identity's rotation does; it returns the new key.
func (i *Issuer) Rotate(t testing.TB) *Key {
	t.Helper()
	k := i.NewKey(t)
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = append(i.published, k)
	i.signing = k
	return k
}

// Withdraw stops publishing the key kid, as identity does once every token
// it signed has expired.
func (i *Issuer) Withdraw(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	kept := i.published[:0]
	for _, k := range i.published {
		if k.ID != kid {
			kept = append(kept, k)
		}
	}
	i.published = kept
}

// Revoke revokes the session sid. Its expires_at is the latest exp minted
// for it, or an hour from now for a session it never minted.
func (i *Issuer) Revoke(sid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	exp, ok := i.lastExp[sid]
	if !ok {
		exp = time.Now().Add(time.Hour)
	}
	i.revoked = append(i.revoked, revocation{sid: sid, revokedAt: time.Now(), expiresAt: exp})
}

// SetDown makes the issuer fail like an unreachable identity: /keys answers
// 503 and ListRevokedSessions Unavailable, until SetDown(false).
func (i *Issuer) SetDown(down bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.down = down
}

// SetRevocationsDown makes ListRevokedSessions alone fail with Unavailable
// while /keys keeps answering, until SetRevocationsDown(false).
func (i *Issuer) SetRevocationsDown(down bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.revocationsDown = down
}

// KeyFetches counts the requests for /keys so far.
func (i *Issuer) KeyFetches() int64 { return i.keyFetches.Load() }

// Polls counts the ListRevokedSessions calls so far.
func (i *Issuer) Polls() int64 { return i.polls.Load() }

func (i *Issuer) serveKeys(w http.ResponseWriter, _ *http.Request) {
	i.keyFetches.Add(1)
	i.mu.Lock()
	down := i.down
	set := jose.JSONWebKeySet{}
	for _, k := range i.published {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.Private.PublicKey, KeyID: k.ID, Algorithm: string(jose.RS256), Use: "sig"})
	}
	i.mu.Unlock()
	if down {
		http.Error(w, "identity is down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_ = json.NewEncoder(w).Encode(set)
}

// sessionService is the SessionService of the issuer. Its cursor is the
// number of revocations already reported.
type sessionService struct{ i *Issuer }

func (s sessionService) ListRevokedSessions(_ context.Context, req *connect.Request[identityv1.ListRevokedSessionsRequest]) (*connect.Response[identityv1.ListRevokedSessionsResponse], error) {
	i := s.i
	i.polls.Add(1)
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.down || i.revocationsDown {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("identity is down"))
	}
	from := 0
	if c := req.Msg.GetCursor(); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 || n > len(i.revoked) {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unknown cursor %q", c))
		}
		from = n
	}
	now := time.Now()
	resp := &identityv1.ListRevokedSessionsResponse{Cursor: strconv.Itoa(len(i.revoked))}
	for _, r := range i.revoked[from:] {
		if from == 0 && r.expiresAt.Before(now) {
			continue // no longer matters
		}
		resp.Sessions = append(resp.Sessions, &identityv1.RevokedSession{
			SessionId: r.sid,
			RevokedAt: timestamppb.New(r.revokedAt),
			ExpiresAt: timestamppb.New(r.expiresAt),
		})
	}
	return connect.NewResponse(resp), nil
}
