package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mercato/mercato/platform/auth/authtest"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
)

// TestVerifyRefusesForgedAndInvalidTokens is the table of attacks and
// mistakes a verifier must refuse. Each case is a token that would be
// accepted if the check it names were missing: all of them are otherwise
// valid, signed tokens of the issuer, or forgeries of one.
func TestVerifyRefusesForgedAndInvalidTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	iss := f.issuer
	leeway := config.Defaults().Auth.Leeway
	kid := iss.SigningKey().ID
	valid := func() authtest.Claims { return iss.Claims("cus_1", "openid") }
	with := func(change func(*authtest.Claims)) string {
		c := valid()
		change(&c)
		return iss.Mint(t, c)
	}
	foreignRSA := iss.NewKey(t)
	revokedClaims := valid()
	revokedToken := iss.Mint(t, revokedClaims)
	iss.Revoke(revokedClaims.SessionID)
	platformtest.Eventually(t, "the revocation is polled", func() bool { return f.v.revoked.revoked(revokedClaims.SessionID) })

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"alg none", unsigned(t, map[string]any{"alg": "none", "typ": "JWT", "kid": kid}, valid().Map()), ErrBadAlgorithm},
		{"alg None spelled otherwise", unsigned(t, map[string]any{"alg": "None", "kid": kid}, valid().Map()), ErrBadAlgorithm},
		{"HS256 with the public key as the HMAC secret", hmacSigned(t, kid, publicKeyPEM(t, &iss.SigningKey().Private.PublicKey), valid().Map()), ErrBadAlgorithm},
		{"HS256 with the public key's modulus as the secret", hmacSigned(t, kid, iss.SigningKey().Private.PublicKey.N.Bytes(), valid().Map()), ErrBadAlgorithm},
		{"ES256 with a foreign key", es256Signed(t, kid, valid().Map()), ErrBadAlgorithm},
		{"RS256 by a foreign key claiming the issuer's kid", iss.Mint(t, valid(), authtest.SignedBy(foreignRSA), authtest.KeyID(kid)), ErrBadSignature},
		{"unknown kid", iss.Mint(t, valid(), authtest.SignedBy(foreignRSA)), ErrUnknownKey},
		{"no kid", iss.Mint(t, valid(), authtest.KeyID("")), ErrUnknownKey},
		{"wrong issuer", with(func(c *authtest.Claims) { c.Issuer = "https://evil.example" }), ErrWrongIssuer},
		{"issuer with a trailing slash", with(func(c *authtest.Claims) { c.Issuer += "/" }), ErrWrongIssuer},
		{"no issuer", with(func(c *authtest.Claims) { c.Issuer = "" }), ErrWrongIssuer},
		{"wrong audience (an ID token)", with(func(c *authtest.Claims) { c.Audience = []string{"storefront"} }), ErrWrongAudience},
		{"no audience", with(func(c *authtest.Claims) { c.Audience = nil }), ErrWrongAudience},
		{"expired beyond the leeway", with(func(c *authtest.Claims) {
			c.IssuedAt, c.ExpiresAt = time.Now().Add(-time.Hour), time.Now().Add(-leeway-5*time.Second)
		}), ErrExpired},
		{"not valid before a time beyond the leeway", with(func(c *authtest.Claims) { c.NotBefore = time.Now().Add(leeway + time.Minute) }), ErrNotYetValid},
		{"issued in the future", with(func(c *authtest.Claims) { c.IssuedAt = time.Now().Add(leeway + time.Minute) }), ErrNotYetValid},
		{"no exp", with(func(c *authtest.Claims) { c.ExpiresAt = time.Time{} }), ErrMalformed},
		{"no sub", with(func(c *authtest.Claims) { c.Subject = "" }), ErrMalformed},
		{"no sid", with(func(c *authtest.Claims) { c.SessionID = "" }), ErrMalformed},
		{"payload tampered: scope raised to admin", tamper(t, iss.Mint(t, valid()), func(m map[string]any) { m["scope"] = "openid admin" }), ErrBadSignature},
		{"payload tampered: exp extended", tamper(t, with(func(c *authtest.Claims) {
			c.IssuedAt, c.ExpiresAt = time.Now().Add(-time.Hour), time.Now().Add(-leeway-5*time.Second)
		}), func(m map[string]any) { m["exp"] = time.Now().Add(time.Hour).Unix() }), ErrBadSignature},
		{"signature truncated", truncated(iss.Mint(t, valid()), 8), ErrBadSignature},
		{"signature removed", strings.TrimRightFunc(iss.Mint(t, valid()), func(r rune) bool { return r != '.' }), ErrBadSignature},
		{"two parts only", strings.Join(strings.Split(iss.Mint(t, valid()), ".")[:2], "."), ErrMalformed},
		{"five parts (JWE)", "a.b.c.d.e", ErrMalformed},
		{"not base64", "!!!.@@@.###", ErrMalformed},
		{"empty", "", ErrMalformed},
		{"too long", iss.Mint(t, func() authtest.Claims {
			c := valid()
			c.Extra = map[string]any{"pad": strings.Repeat("x", maxTokenBytes)}
			return c
		}()), ErrMalformed},
		{"claims not JSON", signedRaw(t, iss.SigningKey(), []byte("not json")), ErrMalformed},
		{"revoked session", revokedToken, ErrRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.verify(t, tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %+v, %v; want %v", id, err, tt.want)
			}
			if id != nil {
				t.Fatalf("Verify returned an identity %+v with its error", id)
			}
			// Refused twice: a refusal is never cached as an acceptance.
			if _, err := f.verify(t, tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("second Verify = %v; want %v", err, tt.want)
			}
		})
	}

	t.Run("the control: a valid token", func(t *testing.T) {
		c := valid()
		c.Scopes = []string{"openid", "admin"}
		id := f.mustVerify(t, iss.Mint(t, c))
		want := Identity{Subject: "cus_1", SessionID: c.SessionID, Scopes: []string{"openid", "admin"}, ClientID: "storefront", ExpiresAt: c.ExpiresAt.Truncate(time.Second)}
		if id.Subject != want.Subject || id.SessionID != want.SessionID || !slices.Equal(id.Scopes, want.Scopes) ||
			id.ClientID != want.ClientID || !id.ExpiresAt.Equal(want.ExpiresAt) {
			t.Fatalf("identity %+v, want %+v", id, want)
		}
		if !id.HasScope("admin") || id.HasScope("adm") {
			t.Fatalf("HasScope is wrong for %v", id.Scopes)
		}
	})
	t.Run("the leeway tolerates a little skew", func(t *testing.T) {
		f.mustVerify(t, with(func(c *authtest.Claims) {
			c.IssuedAt, c.ExpiresAt = time.Now().Add(-time.Hour), time.Now().Add(-leeway/2)
		}))
		f.mustVerify(t, with(func(c *authtest.Claims) { c.NotBefore = time.Now().Add(leeway / 2) }))
	})
	t.Run("several audiences, one of them ours", func(t *testing.T) {
		f.mustVerify(t, with(func(c *authtest.Claims) { c.Audience = []string{"storefront", "mercato"} }))
	})
	t.Run("refusals are counted by result", func(t *testing.T) {
		for _, label := range []string{"bad_algorithm", "bad_signature", "unknown_key", "wrong_issuer", "wrong_audience", "expired", "not_yet_valid", "malformed", "revoked", "ok"} {
			if f.count(label) == 0 {
				t.Errorf("no verification counted as %s", label)
			}
		}
	})
}

// TestUnknownKidRefetchesOnce checks that a token naming an unknown key
// makes the verifier fetch the JWKS again at once — once, however many such
// tokens arrive together or soon after.
func TestUnknownKidRefetchesOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	foreign := f.issuer.NewKey(t)
	before := f.issuer.KeyFetches()
	if _, err := f.verify(t, f.issuer.Mint(t, f.issuer.Claims("cus_1"), authtest.SignedBy(foreign))); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify = %v, want ErrUnknownKey", err)
	}
	if got := f.issuer.KeyFetches() - before; got != 1 {
		t.Fatalf("an unknown kid caused %d JWKS fetches, want 1", got)
	}
	// A flood of made-up kids right after costs identity nothing more.
	var wg sync.WaitGroup
	for i := range 50 {
		token := f.issuer.Mint(t, f.issuer.Claims("cus_1"), authtest.SignedBy(foreign), authtest.KeyID(fmt.Sprintf("made-up-%d", i)))
		wg.Go(func() {
			if _, err := f.v.Verify(t.Context(), token); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("Verify = %v, want ErrUnknownKey", err)
			}
		})
	}
	wg.Wait()
	if got := f.issuer.KeyFetches() - before; got != 1 {
		t.Fatalf("a flood of unknown kids caused %d JWKS fetches, want 1 in all", got)
	}
}

// TestKeyRotation checks that keys follow identity's rotation without a
// restart: a new key is accepted on its first token, and a withdrawn key's
// tokens — even those verified and cached before — are refused once the
// verifier refreshes its keys.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	t.Run("a new key is accepted at once", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil) // refresh every hour: only the unknown kid can fetch
		old := f.issuer.Mint(t, f.issuer.Claims("cus_1"))
		f.mustVerify(t, old)
		fresh := f.issuer.Rotate(t)
		token := f.issuer.Mint(t, f.issuer.Claims("cus_2"))
		f.mustVerify(t, token)
		f.mustVerify(t, old) // both keys are published during the rotation
		if !f.v.keys.has(fresh.ID) {
			t.Fatalf("key %s not among the verifier's keys", fresh.ID)
		}
	})
	t.Run("a withdrawn key is refused after the refresh", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(cfg *config.Config) { cfg.Auth.JWKSRefresh = 100 * time.Millisecond })
		oldKey := f.issuer.SigningKey()
		old := f.issuer.Mint(t, f.issuer.Claims("cus_1"))
		f.mustVerify(t, old)
		f.mustVerify(t, old) // now from the cache
		f.issuer.Rotate(t)
		token := f.issuer.Mint(t, f.issuer.Claims("cus_2"))
		f.mustVerify(t, token)
		f.issuer.Withdraw(oldKey.ID)
		platformtest.Eventually(t, "the withdrawn key's token is refused", func() bool {
			_, err := f.verify(t, old)
			return errors.Is(err, ErrUnknownKey)
		})
		f.mustVerify(t, token)
	})
	t.Run("a key withdrawn before start is unknown", func(t *testing.T) {
		t.Parallel()
		iss := authtest.New(t)
		rotatedOut := iss.SigningKey()
		iss.Rotate(t)
		iss.Withdraw(rotatedOut.ID)
		v, _, _ := startVerifier(t, testConfig(iss))
		waitLoaded(t, v)
		if _, err := v.Verify(t.Context(), iss.Mint(t, iss.Claims("cus_1"), authtest.SignedBy(rotatedOut))); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("token of a rotated-out key: %v, want ErrUnknownKey", err)
		}
		if _, err := v.Verify(t.Context(), iss.Mint(t, iss.Claims("cus_1"))); err != nil {
			t.Fatalf("token of the current key: %v", err)
		}
	})
}

// TestRevocationIsEnforcedWithinAPollInterval measures the time from
// revoking a session at identity to its (cached) token being refused.
func TestRevocationIsEnforcedWithinAPollInterval(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil) // the default poll: 500 ms
	c := f.issuer.Claims("cus_1")
	token := f.issuer.Mint(t, c)
	other := f.issuer.Token(t, "cus_2")
	f.mustVerify(t, token)
	f.mustVerify(t, token)
	if hits := testutil.ToFloat64(f.v.m.cacheHits); hits < 1 {
		t.Fatalf("cache hits %v: the token was not served from the cache, so this test would not cover it", hits)
	}

	f.issuer.Revoke(c.SessionID)
	took := platformtest.EventuallyWithin(t, 5*time.Second, "the revoked session's token is refused", func() bool {
		_, err := f.verify(t, token)
		return errors.Is(err, ErrRevoked)
	})
	if took >= time.Second {
		t.Errorf("revocation took %v to reach the verifier, want under 1s", took)
	}
	t.Logf("revocation → refusal: %v", took)
	f.mustVerify(t, other)
	platformtest.Eventually(t, "auth_revoked_sessions counts the revocation", func() bool {
		return testutil.ToFloat64(f.v.m.revokedSessions) == 1
	})
}

// TestCacheDoesNotOutliveExpiry moves the verifier's clock past a cached
// token's expiry.
func TestCacheDoesNotOutliveExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	c := f.issuer.Claims("cus_1")
	c.ExpiresAt = time.Now().Add(time.Minute)
	token := f.issuer.Mint(t, c)
	f.mustVerify(t, token)
	f.mustVerify(t, token)
	hits := testutil.ToFloat64(f.v.m.cacheHits)
	if hits < 1 {
		t.Fatal("the token was not served from the cache")
	}
	f.skew.Store(int64(time.Minute + config.Defaults().Auth.Leeway + time.Second))
	if _, err := f.verify(t, token); !errors.Is(err, ErrExpired) {
		t.Fatalf("Verify after expiry = %v, want ErrExpired", err)
	}
}

// TestFailsClosedUntilLoaded checks the start: with identity unreachable
// every token is refused as unavailable (503 at the edge), readiness waits,
// and everything works as soon as identity answers.
func TestFailsClosedUntilLoaded(t *testing.T) {
	t.Parallel()
	iss := authtest.New(t)
	iss.SetDown(true)
	v, _, _ := startVerifier(t, testConfig(iss))
	token := iss.Token(t, "cus_1")
	platformtest.Eventually(t, "the verifier tried identity", func() bool { return iss.KeyFetches() > 0 && iss.Polls() > 0 })
	if _, err := v.Verify(t.Context(), token); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Verify before loading = %v, want ErrUnavailable", err)
	}
	if err := v.Check(t.Context()); err == nil {
		t.Fatal("Check passed before the verifier could verify anything")
	}
	w := serve(Authenticate(v)(okHandler(t)), bearer(token))
	if w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("middleware answered %d (Retry-After %q), want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	// Anonymous requests do not depend on identity.
	if w := serve(Authenticate(v)(okHandler(t)), httptest.NewRequest(http.MethodGet, "/v1/products", nil)); w.Code != http.StatusOK {
		t.Fatalf("anonymous request while identity is down: %d, want 200", w.Code)
	}

	iss.SetDown(false)
	waitLoaded(t, v)
	if _, err := v.Verify(t.Context(), token); err != nil {
		t.Fatalf("Verify after loading: %v", err)
	}
	if err := v.Check(t.Context()); err != nil {
		t.Fatalf("Check after loading: %v", err)
	}
}

// TestFailsClosedUntilRevocationsLoad checks that keys alone are not
// enough: a verifier that cannot know which sessions were revoked accepts
// no token.
func TestFailsClosedUntilRevocationsLoad(t *testing.T) {
	t.Parallel()
	iss := authtest.New(t)
	iss.SetRevocationsDown(true)
	v, _, _ := startVerifier(t, testConfig(iss))
	platformtest.Eventually(t, "the keys load", func() bool { return v.keys.current() != nil && iss.Polls() > 0 })
	if _, err := v.Verify(t.Context(), iss.Token(t, "cus_1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Verify without revocations = %v, want ErrUnavailable", err)
	}
	iss.SetRevocationsDown(false)
	waitLoaded(t, v)
	if _, err := v.Verify(t.Context(), iss.Token(t, "cus_1")); err != nil {
		t.Fatalf("Verify once loaded: %v", err)
	}
}

// TestIdentityOutageKeepsTheLastState checks the decision of ADR 0012: once
// loaded, an identity outage keeps the revocations and keys known before
// it — revoked sessions stay refused, valid tokens stay accepted — while
// failures are counted, and a token of a key that cannot be fetched is
// unavailable rather than invalid.
func TestIdentityOutageKeepsTheLastState(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	revoked := f.issuer.Claims("cus_1")
	revokedToken := f.issuer.Mint(t, revoked)
	f.issuer.Revoke(revoked.SessionID)
	platformtest.Eventually(t, "the revocation arrives", func() bool {
		_, err := f.verify(t, revokedToken)
		return errors.Is(err, ErrRevoked)
	})

	first := f.issuer.SigningKey()
	f.issuer.SetDown(true)
	failures := func() float64 { return testutil.ToFloat64(f.v.m.revocationPolls.WithLabelValues("error")) }
	platformtest.Eventually(t, "failed polls are counted", func() bool { return failures() >= 2 })
	if _, err := f.verify(t, revokedToken); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked token during the outage: %v, want ErrRevoked", err)
	}
	f.mustVerify(t, f.issuer.Token(t, "cus_2"))
	f.issuer.Rotate(t)
	if _, err := f.verify(t, f.issuer.Token(t, "cus_3")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("token of a key identity could not serve: %v, want ErrUnavailable", err)
	}
	if err := f.v.Check(t.Context()); err != nil {
		t.Fatalf("readiness failed during an outage after loading: %v", err)
	}

	f.issuer.SetDown(false)
	later := f.issuer.Claims("cus_4")
	// Signed by a known key: the new one is not refetched for a few seconds
	// after the failed attempt.
	laterToken := f.issuer.Mint(t, later, authtest.SignedBy(first))
	f.issuer.Revoke(later.SessionID)
	platformtest.Eventually(t, "revocations flow again after the outage", func() bool {
		_, err := f.verify(t, laterToken)
		return errors.Is(err, ErrRevoked)
	})
}

// truncated cuts n characters off the end of token.
func truncated(token string, n int) string { return token[:len(token)-n] }

// unsigned builds a compact JWS with an empty signature.
func unsigned(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	return segment(t, header) + "." + segment(t, claims) + "."
}

// hmacSigned builds an HS256 token signed with secret: the key-confusion
// attack, where the secret is the verifier's public key.
func hmacSigned(t *testing.T, kid string, secret []byte, claims map[string]any) string {
	t.Helper()
	input := segment(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + segment(t, claims)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// es256Signed signs claims with a fresh P-256 key under kid.
func es256Signed(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// signedRaw signs an arbitrary payload with k.
func signedRaw(t *testing.T, k *authtest.Key, payload []byte) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.Private, KeyID: k.ID}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// tamper changes the claims of a signed token and keeps its signature.
func tamper(t *testing.T, token string, change func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	change(claims)
	parts[1] = segment(t, claims)
	return strings.Join(parts, ".")
}

func segment(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// publicKeyPEM is the PEM text an attacker would find for the public key.
func publicKeyPEM(t *testing.T, pub *rsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
