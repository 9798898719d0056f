package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"html"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/mercato/mercato/platform/platformtest"
)

// identityChecks drives accounts, sessions, revocation and the OpenID
// provider through the gateway of a running platform.
func identityChecks(t *testing.T, p *platform) {
	email := "shopper-" + randomHex(4) + "@example.com"
	const password = "a long and secret passphrase"

	t.Run("sign up and sign in", func(t *testing.T) {
		r := p.do("POST", "/v1/customers", map[string]string{"email": "  " + strings.ToUpper(email) + " ", "password": password, "name": "Ada"})
		if r.status != http.StatusCreated || !bytes.Contains(r.body, []byte(`"email":"`+email+`"`)) {
			t.Fatalf("register: %d %s", r.status, r.body)
		}
		p.do("POST", "/v1/customers", map[string]string{"email": email, "password": password, "name": "Again"}).isProblem(t, 409)
		bad := p.do("POST", "/v1/customers", map[string]string{"email": "not-an-email", "password": "short", "name": "X"})
		bad.isProblem(t, 422)
		if !bytes.Contains(bad.body, []byte(`"field":"email"`)) || !bytes.Contains(bad.body, []byte(`"field":"password"`)) {
			t.Fatalf("422 does not name email and password: %s", bad.body)
		}
		unknown := p.do("POST", "/v1/auth/login", map[string]string{"email": "nobody-" + randomHex(4) + "@example.com", "password": password})
		wrong := p.do("POST", "/v1/auth/login", map[string]string{"email": email, "password": "not the password!"})
		unknown.isProblem(t, 401)
		wrong.isProblem(t, 401)
		if !bytes.Equal(unknown.body, wrong.body) {
			t.Fatalf("unknown email and wrong password answer differently:\n%s\n%s", unknown.body, wrong.body)
		}
	})

	t.Run("refresh rotates and a replay revokes the session at the edge", func(t *testing.T) {
		first := p.login(email, password)
		if first.TokenType != "Bearer" || first.ExpiresIn <= 0 || first.IDToken == "" {
			t.Fatalf("login answer %+v", first)
		}
		if r := p.do("GET", "/v1/me", nil, bearer(first.AccessToken)...); r.status != 200 || !bytes.Contains(r.body, []byte(email)) {
			t.Fatalf("me: %d %s", r.status, r.body)
		}
		r := p.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": first.RefreshToken}, bearer("stale.token.sent.along")...)
		if r.status != 200 {
			t.Fatalf("refresh (with a stale bearer header, which must not matter): %d %s", r.status, r.body)
		}
		var second tokens
		r.decode(t, &second)
		if second.RefreshToken == first.RefreshToken || second.AccessToken == first.AccessToken {
			t.Fatal("refresh did not rotate the tokens")
		}
		p.do("POST", "/v1/auth/refresh", map[string]string{"refresh_token": first.RefreshToken}).isProblem(t, 401)
		// Identity knows at once; the gateway and every other service learn
		// it from identity's revocation list. A catalog route shows the edge.
		took := platformtest.EventuallyWithin(t, 5*time.Second, "the replayed session's token is refused at the gateway", func() bool {
			return p.do("GET", "/v1/products?page_size=1", nil, bearer(second.AccessToken)...).status == http.StatusUnauthorized
		})
		if took > time.Second {
			t.Errorf("a revoked session's token worked for %s", took)
		}
		p.do("GET", "/v1/me", nil, bearer(second.AccessToken)...).isProblem(t, 401)
	})

	t.Run("logout stops the token everywhere within a second", func(t *testing.T) {
		tok := p.login(email, password)
		if r := p.do("POST", "/v1/auth/logout", nil, bearer(tok.AccessToken)...); r.status != http.StatusNoContent {
			t.Fatalf("logout: %d %s", r.status, r.body)
		}
		took := platformtest.EventuallyWithin(t, 5*time.Second, "the logged-out token is refused", func() bool {
			return p.do("GET", "/v1/products?page_size=1", nil, bearer(tok.AccessToken)...).status == http.StatusUnauthorized
		})
		if took > time.Second {
			t.Errorf("a logged-out token worked for %s", took)
		}
	})

	t.Run("admin operations need the admin scope", func(t *testing.T) {
		customer := p.login(email, password)
		p.do("POST", "/v1/admin/categories", map[string]string{"slug": "x", "name": "X"}, bearer(customer.AccessToken)...).isProblem(t, 403)
		p.do("POST", "/v1/admin/categories", map[string]string{"slug": "x", "name": "X"}).isProblem(t, 401)
		// A token with its payload edited (admin added) is refused.
		parts := strings.Split(customer.AccessToken, ".")
		forged := parts[0] + "." + strings.TrimRight(parts[1], "=") + "e30" + "." + parts[2]
		p.do("GET", "/v1/me", nil, bearer(forged)...).isProblem(t, 401)
	})

	t.Run("openid connect code flow with PKCE through the login form", func(t *testing.T) {
		ctx := context.Background()
		provider, err := oidc.NewProvider(ctx, p.url)
		if err != nil {
			t.Fatalf("discovery at %s: %v", p.url, err)
		}
		conf := oauth2.Config{ClientID: "storefront", Endpoint: provider.Endpoint(), RedirectURL: p.url + "/callback",
			Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}
		verifier, state, nonce := oauth2.GenerateVerifier(), randomHex(8), randomHex(8)
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

		// Without PKCE the public client is refused.
		noPKCE := get(t, browser, conf.AuthCodeURL(state, oidc.Nonce(nonce)))
		if loc := noPKCE.header.Get("Location"); noPKCE.status != http.StatusFound || !strings.Contains(loc, "error=") {
			t.Fatalf("authorize without PKCE: %d Location %q", noPKCE.status, loc)
		}

		r := get(t, browser, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)))
		if r.status != http.StatusFound || !strings.Contains(r.header.Get("Location"), "/login") {
			t.Fatalf("authorize while signed out: %d Location %q", r.status, r.header.Get("Location"))
		}
		form := formFields(t, get(t, browser, absolute(t, p.url, r.header.Get("Location"))))
		form.values.Set("email", email)
		form.values.Set("password", password)
		resp, err := browser.PostForm(absolute(t, p.url, form.action), form.values)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		r = response{resp.StatusCode, resp.Header, nil}
		for i := 0; r.status/100 == 3 && !strings.HasPrefix(r.header.Get("Location"), conf.RedirectURL); i++ {
			if i > 5 {
				t.Fatal("redirect loop after the login form")
			}
			r = get(t, browser, absolute(t, p.url, r.header.Get("Location")))
		}
		callback, err := url.Parse(r.header.Get("Location"))
		if err != nil || callback.Query().Get("state") != state || callback.Query().Get("code") == "" {
			t.Fatalf("not sent back to the client with code and state: %d %q", r.status, r.header.Get("Location"))
		}

		tok, err := conf.Exchange(ctx, callback.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("code exchange: %v", err)
		}
		raw, _ := tok.Extra("id_token").(string)
		idt, err := provider.Verifier(&oidc.Config{ClientID: "storefront"}).Verify(ctx, raw)
		if err != nil {
			t.Fatalf("ID token refused by go-oidc: %v", err)
		}
		if idt.Nonce != nonce {
			t.Fatalf("nonce %q, want %q", idt.Nonce, nonce)
		}
		var claims struct {
			Email string `json:"email"`
		}
		if err := idt.Claims(&claims); err != nil || claims.Email != email {
			t.Fatalf("ID token email %q (%v)", claims.Email, err)
		}
		// The access token from the flow works at the gateway.
		if me := p.do("GET", "/v1/me", nil, bearer(tok.AccessToken)...); me.status != 200 {
			t.Fatalf("me with the flow's access token: %d %s", me.status, me.body)
		}
		info, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
		if err != nil || info.Email != email {
			t.Fatalf("userinfo: %+v %v", info, err)
		}
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// get fetches u with c and returns the answer with its body read.
func get(t *testing.T, c *http.Client, u string) response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return response{resp.StatusCode, resp.Header, buf.Bytes()}
}

func absolute(t *testing.T, base, ref string) string {
	t.Helper()
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	r, err := url.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	return b.ResolveReference(r).String()
}

type form struct {
	action string
	values url.Values
}

var (
	formTag   = regexp.MustCompile(`<form[^>]*method="post"[^>]*action="([^"]*)"`)
	hiddenTag = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)"`)
)

// formFields reads the login page's form: where it posts and its hidden
// fields (the auth request and the CSRF token).
func formFields(t *testing.T, page response) form {
	t.Helper()
	body := page.body
	if page.status != http.StatusOK {
		t.Fatalf("login page: %d %s", page.status, body)
	}
	for _, input := range []string{`name="email"`, `name="password"`} {
		if !bytes.Contains(body, []byte(input)) {
			t.Fatalf("login form has no input %s", input)
		}
	}
	m := formTag.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no <form method=\"post\"> on the login page:\n%s", body)
	}
	f := form{action: html.UnescapeString(string(m[1])), values: url.Values{}}
	for _, h := range hiddenTag.FindAllSubmatch(body, -1) {
		f.values.Set(string(h[1]), html.UnescapeString(string(h[2])))
	}
	if f.values.Get("csrf") == "" {
		t.Fatal("the login form carries no CSRF token")
	}
	return f
}
