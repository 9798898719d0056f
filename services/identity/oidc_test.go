package identity

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/net/html"
	"golang.org/x/oauth2"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
)

// loginForm is the login page as a browser sees it.
type loginForm struct {
	action string
	values url.Values
	errMsg string
}

// attr returns an attribute of an element.
func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func walk(n *html.Node, fn func(*html.Node)) {
	fn(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, fn)
	}
}

func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(c *html.Node) {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	})
	return strings.TrimSpace(b.String())
}

// parseLoginForm reads the login page and checks what the contract and
// accessibility ask of it: a lang attribute, one <form method="post">
// with inputs named email and password, a label bound to each input, an
// alert region for errors, and autocomplete hints.
func parseLoginForm(t *testing.T, r response) loginForm {
	t.Helper()
	if r.status != http.StatusOK && r.status != http.StatusForbidden && r.status != http.StatusTooManyRequests {
		t.Fatalf("login page: %d %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("login page content type %q", ct)
	}
	doc, err := html.Parse(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	var (
		f      loginForm
		forms  int
		labels = map[string]bool{}
		inputs = map[string]*html.Node{}
		lang   string
		alert  bool
	)
	f.values = url.Values{}
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.Data {
		case "html":
			lang, _ = attr(n, "lang")
		case "form":
			forms++
			if m, _ := attr(n, "method"); m != "post" {
				t.Errorf("form method %q", m)
			}
			f.action, _ = attr(n, "action")
		case "label":
			if id, ok := attr(n, "for"); ok {
				labels[id] = true
			}
		case "input":
			name, _ := attr(n, "name")
			inputs[name] = n
			if typ, _ := attr(n, "type"); typ == "hidden" {
				v, _ := attr(n, "value")
				f.values.Set(name, v)
			}
		}
		if role, _ := attr(n, "role"); role == "alert" {
			alert = true
			f.errMsg = text(n)
		}
	})
	if lang == "" || forms != 1 || !alert {
		t.Fatalf("page: lang %q, %d forms, alert region %v", lang, forms, alert)
	}
	for name, complete := range map[string]string{"email": "username", "password": "current-password"} {
		in := inputs[name]
		if in == nil {
			t.Fatalf("no input named %s", name)
		}
		id, _ := attr(in, "id")
		if !labels[id] {
			t.Errorf("input %s has no label", name)
		}
		if ac, _ := attr(in, "autocomplete"); ac != complete {
			t.Errorf("input %s autocomplete %q, want %q", name, ac, complete)
		}
	}
	if v, _ := attr(inputs["password"], "value"); v != "" {
		t.Errorf("the password is echoed into the page")
	}
	return f
}

// flow is one authorization code flow of the storefront client, with
// PKCE S256, state and nonce, in a browser that does not follow redirects.
type flow struct {
	in       *instance
	browser  *http.Client
	conf     oauth2.Config
	verifier string
	state    string
	nonce    string
}

func randomString(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func (in *instance) flow(t *testing.T, b *http.Client, scopes ...string) *flow {
	t.Helper()
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "profile", "email", oidc.ScopeOfflineAccess}
	}
	return &flow{
		in: in, browser: b, verifier: oauth2.GenerateVerifier(), state: randomString(t), nonce: randomString(t),
		conf: oauth2.Config{
			ClientID: StorefrontClient, RedirectURL: in.cfg.PublicURL + "/callback", Scopes: scopes,
			Endpoint: oauth2.Endpoint{AuthURL: in.url + "/authorize", TokenURL: in.url + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams},
		},
	}
}

// authorize sends the browser to the authorization endpoint.
func (f *flow) authorize(t *testing.T, extra ...oauth2.AuthCodeOption) response {
	t.Helper()
	opts := append([]oauth2.AuthCodeOption{oidc.Nonce(f.nonce), oauth2.S256ChallengeOption(f.verifier)}, extra...)
	return get(t, f.browser, f.conf.AuthCodeURL(f.state, opts...))
}

// follow takes the browser to a redirect's Location.
func (f *flow) follow(t *testing.T, r response) response {
	t.Helper()
	if r.status != http.StatusFound && r.status != http.StatusSeeOther {
		t.Fatalf("not a redirect: %d %s", r.status, r.body)
	}
	return get(t, f.browser, f.resolve(t, r.header.Get("Location")))
}

func (f *flow) resolve(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(f.in.url)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.ResolveReference(ref).String()
}

// submit posts the login form with credentials.
func (f *flow) submit(t *testing.T, form loginForm, email, pw string) response {
	t.Helper()
	v := url.Values{}
	for k := range form.values {
		v.Set(k, form.values.Get(k))
	}
	v.Set("email", email)
	v.Set("password", pw)
	return postForm(t, f.browser, f.resolve(t, form.action), v)
}

// code checks that a response redirects to the client with this flow's
// state and returns the code.
func (f *flow) code(t *testing.T, r response) string {
	t.Helper()
	if r.status != http.StatusFound {
		t.Fatalf("want a redirect to the client, got %d %s", r.status, r.body)
	}
	u, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.String(), f.conf.RedirectURL+"?") {
		t.Fatalf("redirected to %s, want %s", u, f.conf.RedirectURL)
	}
	q := u.Query()
	if q.Get("state") != f.state || q.Get("code") == "" || q.Get("error") != "" {
		t.Fatalf("callback query %v (state %q)", q, f.state)
	}
	return q.Get("code")
}

// signIn runs a whole flow through the login form and returns the code.
func (f *flow) signIn(t *testing.T, email, pw string) string {
	t.Helper()
	page := f.follow(t, f.authorize(t))
	toCallback := f.submit(t, parseLoginForm(t, page), email, pw)
	if toCallback.status != http.StatusSeeOther {
		t.Fatalf("login: %d %s", toCallback.status, toCallback.body)
	}
	return f.code(t, f.follow(t, toCallback))
}

// exchange trades a code for tokens with x/oauth2.
func (f *flow) exchange(t *testing.T, code string) *oauth2.Token {
	t.Helper()
	tok, err := f.conf.Exchange(context.Background(), code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok
}

// verifyIDToken validates an ID token with go-oidc, from discovery at the
// issuer, and checks the nonce.
func (f *flow) verifyIDToken(t *testing.T, tok *oauth2.Token) *oidc.IDToken {
	t.Helper()
	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, f.in.cfg.PublicURL)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: StorefrontClient}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if idt.Nonce != f.nonce {
		t.Fatalf("nonce %q, want %q", idt.Nonce, f.nonce)
	}
	return idt
}

// oauthError posts a form to the token endpoint and returns the OAuth
// error code of a refusal.
func (in *instance) tokenEndpoint(t *testing.T, form url.Values) (response, string) {
	t.Helper()
	r := postForm(t, http.DefaultClient, in.url+"/oauth/token", form)
	var e struct{ Error string }
	_ = json.Unmarshal(r.body, &e)
	return r, e.Error
}

func TestAuthorizationCodeFlowEndToEnd(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	cid := in.register(t, "browser@example.com", password)
	b := browser(t)
	f := in.flow(t, b)

	// Not signed in: the authorization endpoint leads to the login form.
	r := f.authorize(t)
	if r.status != http.StatusFound || !strings.HasPrefix(r.header.Get("Location"), in.cfg.PublicURL+"/login?authRequestID=") {
		t.Fatalf("authorize: %d, Location %q", r.status, r.header.Get("Location"))
	}
	page := f.follow(t, r)
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || page.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("login page headers %v", page.header)
	}
	form := parseLoginForm(t, page)
	if form.errMsg != "" || form.values.Get("csrf") == "" {
		t.Fatalf("fresh form: error %q, values %v", form.errMsg, form.values)
	}
	done := f.submit(t, form, "Browser@Example.com", password)
	if done.status != http.StatusSeeOther {
		t.Fatalf("login: %d %s", done.status, done.body)
	}
	var sessionCookieSet bool
	for _, c := range (&http.Response{Header: done.header}).Cookies() {
		if c.Name == sessionCookie {
			sessionCookieSet = c.HttpOnly && c.SameSite == http.SameSiteLaxMode && c.Path == "/" && !c.Secure
		}
	}
	if !sessionCookieSet {
		t.Fatalf("session cookie: %v", done.header["Set-Cookie"])
	}
	code := f.code(t, f.follow(t, done))

	tok := f.exchange(t, code)
	idt := f.verifyIDToken(t, tok)
	var idClaims struct {
		Email string `json:"email"`
		Name  string `json:"name"`
		SID   string `json:"sid"`
	}
	if err := idt.Claims(&idClaims); err != nil {
		t.Fatal(err)
	}
	if idt.Subject != cid || idt.Issuer != in.cfg.PublicURL || idClaims.Email != "browser@example.com" || idClaims.Name != "Ada Lovelace" || idt.AccessTokenHash == "" {
		t.Fatalf("ID token %+v, claims %+v", idt, idClaims)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Fatalf("at_hash: %v", err)
	}
	access := claims(t, tok.AccessToken)
	if access["sid"] != idClaims.SID || access["sub"] != cid || !slices.Contains(audience(access), "mercato") ||
		access["client_id"] != StorefrontClient || access["scope"] != "openid profile email offline_access" {
		t.Fatalf("access token claims %v", access)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token with offline_access")
	}
	if r := in.as(t, tok.AccessToken, "GET", "/v1/me", nil); r.status != 200 {
		t.Fatalf("/v1/me with the OpenID access token: %d", r.status)
	}
	if r := in.as(t, tok.AccessToken, "GET", "/userinfo", nil); r.status != 200 || !strings.Contains(string(r.body), `"email":"browser@example.com"`) {
		t.Fatalf("userinfo: %d %s", r.status, r.body)
	}
	// A code works once.
	if _, e := in.tokenEndpoint(t, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {StorefrontClient},
		"redirect_uri": {f.conf.RedirectURL}, "code_verifier": {f.verifier}}); e != "invalid_grant" {
		t.Fatalf("a code used twice: %q", e)
	}

	// Signed in: a second authorization skips the form and joins the session.
	again := in.flow(t, b)
	toCallback := again.follow(t, again.authorize(t))
	if toCallback.status != http.StatusSeeOther {
		t.Fatalf("with a live session the login page answered %d %s", toCallback.status, toCallback.body)
	}
	tok2 := again.exchange(t, again.code(t, again.follow(t, toCallback)))
	idt2 := again.verifyIDToken(t, tok2)
	if !idt2.IssuedAt.After(idt.IssuedAt.Add(-time.Second)) || claims(t, tok2.AccessToken)["sid"] != idClaims.SID {
		t.Fatalf("the second sign-in did not join the session")
	}

	// prompt=login shows the form again despite the session.
	forced := in.flow(t, b)
	if page := forced.follow(t, forced.authorize(t, oauth2.SetAuthURLParam("prompt", "login"))); page.status != http.StatusOK {
		t.Fatalf("prompt=login: %d", page.status)
	} else {
		parseLoginForm(t, page)
	}

	// The refresh token grant rotates; replaying the used token revokes
	// the session.
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {StorefrontClient}}
	r, e := in.tokenEndpoint(t, refresh)
	if r.status != 200 || e != "" {
		t.Fatalf("refresh grant: %d %s", r.status, r.body)
	}
	var refreshed oauth2.Token
	r.json(t, &refreshed)
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh grant did not rotate: %s", r.body)
	}
	if _, e := in.tokenEndpoint(t, refresh); e != "invalid_grant" {
		t.Fatalf("replayed refresh token: %q", e)
	}
	for _, at := range []string{tok.AccessToken, tok2.AccessToken, refreshed.AccessToken} {
		if r := in.as(t, at, "GET", "/v1/me", nil); r.status != 401 {
			t.Fatalf("an access token of the replayed session: %d", r.status)
		}
	}
	if r := in.as(t, refreshed.AccessToken, "GET", "/userinfo", nil); r.status != 401 {
		t.Fatalf("userinfo of the replayed session: %d", r.status)
	}
	// The browser's session went with it: the form is back.
	after := in.flow(t, b)
	parseLoginForm(t, after.follow(t, after.authorize(t)))
}

// Of concurrent exchanges of one code exactly one gets tokens.
func TestCodeIsExchangedOnce(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "once@example.com", password)
	f := in.flow(t, browser(t))
	code := f.signIn(t, "once@example.com", password)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {StorefrontClient},
		"redirect_uri": {f.conf.RedirectURL}, "code_verifier": {f.verifier}}
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Go(func() {
			resp, err := http.PostForm(in.url+"/oauth/token", form)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	if n := len(slices.DeleteFunc(slices.Clone(statuses), func(s int) bool { return s != 200 })); n != 1 {
		t.Fatalf("statuses %v, want exactly one 200", statuses)
	}
}

func TestDiscovery(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	var d map[string]any
	r := in.do(t, "GET", "/.well-known/openid-configuration", nil)
	r.json(t, &d)
	iss := in.cfg.PublicURL
	want := map[string]any{
		"issuer": iss, "authorization_endpoint": iss + "/authorize", "token_endpoint": iss + "/oauth/token",
		"userinfo_endpoint": iss + "/userinfo", "jwks_uri": iss + "/keys", "end_session_endpoint": iss + "/end_session",
		"revocation_endpoint": iss + "/revoke", "introspection_endpoint": iss + "/oauth/introspect",
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
	for k, v := range map[string]string{"code_challenge_methods_supported": `["S256"]`, "response_types_supported": `["code"]`,
		"id_token_signing_alg_values_supported": `["RS256"]`, "grant_types_supported": `["authorization_code","refresh_token"]`} {
		if got, _ := json.Marshal(d[k]); string(got) != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
	if _, ok := d["device_authorization_endpoint"]; ok {
		t.Error("discovery lists a device endpoint that is not served")
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	redirect := in.cfg.PublicURL + "/callback"
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	base := func(change map[string]string) string {
		q := url.Values{"client_id": {StorefrontClient}, "redirect_uri": {redirect}, "response_type": {"code"}, "scope": {"openid"},
			"state": {"s1"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
		for k, v := range change {
			if v == "" {
				q.Del(k)
			} else {
				q.Set(k, v)
			}
		}
		return in.url + "/authorize?" + q.Encode()
	}
	tests := []struct {
		name   string
		change map[string]string
		// oauthError is the error redirected to the client; empty for a
		// refusal that must not redirect (an untrusted redirect_uri).
		oauthError string
	}{
		{"no PKCE from a public client", map[string]string{"code_challenge": "", "code_challenge_method": ""}, "invalid_request"},
		{"PKCE plain", map[string]string{"code_challenge_method": "plain"}, "invalid_request"},
		{"PKCE without a method (plain)", map[string]string{"code_challenge_method": ""}, "invalid_request"},
		{"implicit flow", map[string]string{"response_type": "id_token"}, "unauthorized_client"},
		{"wrong redirect_uri", map[string]string{"redirect_uri": "https://evil.example/callback"}, ""},
		{"redirect_uri with extra path", map[string]string{"redirect_uri": redirect + "/more"}, ""},
		{"unknown client", map[string]string{"client_id": "mallory"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, browser(t), base(tt.change))
			loc := r.header.Get("Location")
			if tt.oauthError == "" {
				if r.status != http.StatusBadRequest || loc != "" {
					t.Fatalf("want 400 without a redirect, got %d to %q", r.status, loc)
				}
				return
			}
			u, err := url.Parse(loc)
			if r.status != http.StatusFound || err != nil || !strings.HasPrefix(loc, redirect) || u.Path != "/callback" {
				t.Fatalf("want a redirect to the client, got %d to %q", r.status, loc)
			}
			params := u.Query()
			if len(params) == 0 {
				// Implicit response types answer in the fragment.
				params, _ = url.ParseQuery(u.Fragment)
			}
			if params.Get("error") != tt.oauthError || params.Get("state") != "s1" || params.Get("code") != "" {
				t.Fatalf("redirect parameters %v, want error %s", params, tt.oauthError)
			}
		})
	}
	// And the code needs its verifier.
	in.register(t, "pkce@example.com", password)
	f := in.flow(t, browser(t))
	code := f.signIn(t, "pkce@example.com", password)
	if _, e := in.tokenEndpoint(t, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {StorefrontClient},
		"redirect_uri": {f.conf.RedirectURL}, "code_verifier": {oauth2.GenerateVerifier()}}); e != "invalid_grant" {
		t.Fatalf("a wrong code_verifier: %q", e)
	}
}

func TestPromptNoneAndMaxAge(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	in := start(t, namespace(t), options{now: clock.Now})
	in.register(t, "age@example.com", password)
	b := browser(t)

	// Not signed in and no interaction allowed.
	f := in.flow(t, b)
	r := f.follow(t, f.authorize(t, oauth2.SetAuthURLParam("prompt", "none")))
	u, _ := url.Parse(r.header.Get("Location"))
	if r.status != http.StatusFound || u.Query().Get("error") != "login_required" || u.Query().Get("state") != f.state {
		t.Fatalf("prompt=none without a session: %d %s", r.status, r.header.Get("Location"))
	}

	first := in.flow(t, b)
	signedInAt := authTime(t, first.verifyIDToken(t, first.exchange(t, first.signIn(t, "age@example.com", password))))
	if d := signedInAt.Sub(clock.Now()); d > time.Second || d < -time.Second {
		t.Fatalf("auth_time %v, want the sign-in time %v", signedInAt, clock.Now())
	}

	// Within max_age the session is reused, with its original auth_time.
	clock.Advance(30 * time.Minute)
	within := in.flow(t, b)
	toCallback := within.follow(t, within.authorize(t, oauth2.SetAuthURLParam("max_age", "3600")))
	if toCallback.status != http.StatusSeeOther {
		t.Fatalf("within max_age: %d", toCallback.status)
	}
	idt := within.verifyIDToken(t, within.exchange(t, within.code(t, within.follow(t, toCallback))))
	if got := authTime(t, idt); !got.Equal(signedInAt) {
		t.Fatalf("auth_time %v, want the original %v", got, signedInAt)
	}
	// prompt=none with a session answers without the form.
	none := in.flow(t, b)
	none.code(t, none.follow(t, none.follow(t, none.authorize(t, oauth2.SetAuthURLParam("prompt", "none")))))

	// Older than max_age: the form again.
	clock.Advance(time.Hour)
	older := in.flow(t, b)
	parseLoginForm(t, older.follow(t, older.authorize(t, oauth2.SetAuthURLParam("max_age", "3600"))))
}

// authTime is an ID token's auth_time.
func authTime(t *testing.T, idt *oidc.IDToken) time.Time {
	t.Helper()
	var c struct {
		AuthTime int64 `json:"auth_time"`
	}
	if err := idt.Claims(&c); err != nil || c.AuthTime == 0 {
		t.Fatalf("auth_time: %d, %v", c.AuthTime, err)
	}
	return time.Unix(c.AuthTime, 0)
}

func TestEndSession(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "bye@example.com", password)
	b := browser(t)
	f := in.flow(t, b)
	tok := f.exchange(t, f.signIn(t, "bye@example.com", password))
	rawID, _ := tok.Extra("id_token").(string)

	q := url.Values{"id_token_hint": {rawID}, "post_logout_redirect_uri": {in.cfg.PublicURL + "/"}, "state": {"bye"}}
	r := get(t, b, in.url+"/end_session?"+q.Encode())
	if r.status != http.StatusFound || r.header.Get("Location") != in.cfg.PublicURL+"/?state=bye" {
		t.Fatalf("end_session: %d to %q %s", r.status, r.header.Get("Location"), r.body)
	}
	cleared := false
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		cleared = cleared || (c.Name == sessionCookie && c.MaxAge < 0)
	}
	if !cleared {
		t.Fatalf("the session cookie was not cleared: %v", r.header["Set-Cookie"])
	}
	if r := in.as(t, tok.AccessToken, "GET", "/v1/me", nil); r.status != 401 {
		t.Fatalf("an access token after end_session: %d", r.status)
	}
	// An unregistered post-logout URI is refused.
	bad := url.Values{"client_id": {StorefrontClient}, "post_logout_redirect_uri": {"https://evil.example/"}}
	if r := get(t, b, in.url+"/end_session?"+bad.Encode()); r.status != http.StatusBadRequest {
		t.Fatalf("an unregistered post_logout_redirect_uri: %d %q", r.status, r.header.Get("Location"))
	}
	next := in.flow(t, b)
	parseLoginForm(t, next.follow(t, next.authorize(t)))
}

func TestRevokeEndpoint(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "revoke@example.com", password)
	f := in.flow(t, browser(t))
	tok := f.exchange(t, f.signIn(t, "revoke@example.com", password))
	r := postForm(t, http.DefaultClient, in.url+"/revoke", url.Values{"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {StorefrontClient}})
	if r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := in.as(t, tok.AccessToken, "GET", "/v1/me", nil); r.status != 401 {
		t.Fatalf("after revoking the refresh token: %d", r.status)
	}
	// An unknown token is accepted and changes nothing (RFC 7009).
	if r := postForm(t, http.DefaultClient, in.url+"/revoke", url.Values{"token": {"nonsense"}, "client_id": {StorefrontClient}}); r.status != 200 {
		t.Fatalf("revoking nonsense: %d %s", r.status, r.body)
	}
}

func TestConfidentialClient(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	cfg.Identity.Clients = []config.ClientConfig{{ID: "backoffice", Secret: "s3cret-s3cret", RedirectURIs: []string{"https://backoffice.example/cb"}}}
	in := start(t, cfg)
	in.register(t, "staff@example.com", password)
	f := in.flow(t, browser(t))
	f.conf.ClientID, f.conf.ClientSecret, f.conf.RedirectURL = "backoffice", "s3cret-s3cret", "https://backoffice.example/cb"
	f.conf.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	// A confidential client may leave PKCE out.
	page := get(t, f.browser, f.conf.AuthCodeURL(f.state, oidc.Nonce(f.nonce)))
	toCallback := f.submit(t, parseLoginForm(t, f.follow(t, page)), "staff@example.com", password)
	code := f.code(t, f.follow(t, toCallback))
	wrong := f.conf
	wrong.ClientSecret = "guess"
	if _, err := wrong.Exchange(context.Background(), code); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("a wrong secret: %v", err)
	}
	// The failed attempt burned the code; a new one with the right secret works.
	page = get(t, f.browser, f.conf.AuthCodeURL(f.state, oidc.Nonce(f.nonce)))
	code = f.code(t, f.follow(t, f.follow(t, page)))
	tok, err := f.conf.Exchange(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	if c := claims(t, tok.AccessToken); c["client_id"] != "backoffice" || !slices.Contains(audience(c), "mercato") {
		t.Fatalf("claims %v", c)
	}
	// Its refresh tokens need the secret: the REST refresh refuses them.
	if tok.RefreshToken != "" {
		if r := in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": tok.RefreshToken}); r.status != 401 {
			t.Fatalf("REST refresh of a confidential client's token: %d", r.status)
		}
	}
}

func TestLoginFormRefusals(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	cfg.Identity.LoginFailureBurst = 2
	in := start(t, cfg)
	in.register(t, "form@example.com", password)
	b := browser(t)
	f := in.flow(t, b)
	page := f.follow(t, f.authorize(t))
	form := parseLoginForm(t, page)

	// From another browser (with a login cookie of its own), or without
	// the form's token, or with another token: refused, nothing signed in.
	other := browser(t)
	otherFlow := in.flow(t, other)
	parseLoginForm(t, otherFlow.follow(t, otherFlow.authorize(t)))
	post := func(c *http.Client, csrf string) response {
		t.Helper()
		v := url.Values{"authRequestID": {form.values.Get("authRequestID")}, "email": {"form@example.com"}, "password": {password}}
		if csrf != "" {
			v.Set("csrf", csrf)
		}
		return postForm(t, c, f.resolve(t, form.action), v)
	}
	if r := post(other, form.values.Get("csrf")); r.status != http.StatusForbidden || strings.Contains(string(r.body), "<form") {
		t.Fatalf("a post from another browser: %d %s", r.status, r.body)
	}
	if r := post(b, randomString(t)); r.status != http.StatusForbidden {
		t.Fatalf("a post with another token: %d", r.status)
	}
	r := post(b, "")
	if r.status != http.StatusForbidden {
		t.Fatalf("a post without the token: %d", r.status)
	}
	if form = parseLoginForm(t, r); form.errMsg != msgFormExpired {
		t.Fatalf("message %q", form.errMsg)
	}

	// Wrong credentials: the form again with one message, the email kept,
	// the password not.
	unknown := f.submit(t, form, "nobody@example.com", password)
	formU := parseLoginForm(t, unknown)
	wrong := f.submit(t, formU, "form@example.com", "wrong password!")
	formW := parseLoginForm(t, wrong)
	formW = parseLoginForm(t, f.submit(t, formW, "form@example.com", "wrong again!"))
	if formU.errMsg != msgInvalidCredentials || formW.errMsg != msgInvalidCredentials || !strings.Contains(string(wrong.body), `value="form@example.com"`) {
		t.Fatalf("messages %q and %q", formU.errMsg, formW.errMsg)
	}
	if strings.Contains(string(wrong.body), "wrong password!") {
		t.Fatal("the password is echoed")
	}
	// The account's failure burst is spent (2; the unknown email counted
	// on its own): throttled, even with the right password, as the REST
	// login is.
	limited := f.submit(t, formW, "form@example.com", password)
	if limited.status != http.StatusTooManyRequests || limited.header.Get("Retry-After") == "" {
		t.Fatalf("after the burst: %d %v", limited.status, limited.header)
	}
	if r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "form@example.com", "password": password}); r.status != 429 {
		t.Fatalf("the REST login shares the budget: %d", r.status)
	}
	// An unknown or expired auth request.
	if r := get(t, b, in.url+"/login?authRequestID=ar_nope"); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "expired") {
		t.Fatalf("unknown auth request: %d %s", r.status, r.body)
	}
}

// During a key rotation the JWKS holds both keys: tokens of the old key
// keep verifying while the new key takes over.
func TestKeyRotationPublishesBothKeys(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	cfg := namespace(t)
	// Logins poll for the new key; no per-address limit may stop them.
	cfg.Gateway.RateLimitPerIP = 0
	in := start(t, cfg, options{now: clock.Now, keyReload: 20 * time.Millisecond})
	in.register(t, "rotate@example.com", password)
	old := in.login(t, "rotate@example.com", password)
	oldKid := header(t, old.AccessToken)["kid"]
	if ks := in.jwks(t); len(ks.Keys) != 1 || ks.Keys[0].KeyID != oldKid {
		t.Fatalf("before rotation: %v", kidsOf(ks.Keys))
	}

	clock.Advance(cfg.Identity.KeyRotation)
	platformtest.Eventually(t, "the new key is published", func() bool { return len(in.jwks(t).Keys) == 2 })
	// lead = 40ms of the fake clock; then the new key signs.
	clock.Advance(time.Second)
	var fresh tokenBody
	platformtest.Eventually(t, "the new key signs", func() bool {
		fresh = in.login(t, "rotate@example.com", password)
		return header(t, fresh.AccessToken)["kid"] != oldKid
	})
	ks := in.jwks(t)
	if len(ks.Keys) != 2 {
		t.Fatalf("after the switch: %v", kidsOf(ks.Keys))
	}
	verifyWith(t, ks, old.AccessToken)
	verifyWith(t, ks, fresh.AccessToken)
	for _, tok := range []string{old.AccessToken, fresh.AccessToken} {
		if r := in.as(t, tok, "GET", "/v1/me", nil); r.status != 200 {
			t.Fatalf("a token during rotation: %d", r.status)
		}
	}
	// Once every token of the old key has expired, it is withdrawn.
	clock.Advance(cfg.Identity.AccessTokenTTL + cfg.Identity.IDTokenTTL)
	platformtest.Eventually(t, "the old key is withdrawn", func() bool { return len(in.jwks(t).Keys) == 1 })
	if in.jwks(t).Keys[0].KeyID != header(t, fresh.AccessToken)["kid"] {
		t.Fatal("the wrong key was withdrawn")
	}
}

func kidsOf(keys []jose.JSONWebKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.KeyID
	}
	return out
}

// Logs of every flow hold no password, token or hash; the metrics count
// what happened.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	cfg.Log.Level = "debug"
	in := start(t, cfg)
	in.register(t, "quiet@example.com", password)
	rest := in.login(t, "quiet@example.com", password)
	var refreshed tokenBody
	in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": rest.RefreshToken}).json(t, &refreshed)
	// A replay is logged (as a warning, by session id).
	in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": rest.RefreshToken})
	in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "quiet@example.com", "password": "wrong password!"})
	f := in.flow(t, browser(t))
	tok := f.exchange(t, f.signIn(t, "quiet@example.com", password))
	in.as(t, tok.AccessToken, "POST", "/v1/auth/logout", nil)

	metrics := string(in.do(t, "GET", "/metrics", nil).body)
	for _, line := range []string{"identity_refresh_token_replays_total 1", `identity_logins_total{result="invalid_credentials"} 1`, `identity_logins_total{result="success"} 2`} {
		if !strings.Contains(metrics, line) {
			t.Errorf("metrics lack %q", line)
		}
	}
	logs := in.logs.String()
	if !strings.Contains(logs, "a used refresh token was presented again") {
		t.Fatalf("the replay was not logged; logs:\n%s", logs)
	}
	for name, secret := range map[string]string{
		"password": password, "wrong password": "wrong password!", "refresh token": rest.RefreshToken,
		"rotated refresh token": refreshed.RefreshToken, "access token": rest.AccessToken, "OpenID refresh token": tok.RefreshToken,
		"password hash": "$argon2id$",
	} {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("the logs hold the %s", name)
		}
	}
	// The refresh token's secret half alone must not appear either.
	if i := strings.IndexByte(rest.RefreshToken, '.'); i > 0 && strings.Contains(logs, rest.RefreshToken[i+1:]) {
		t.Error("the logs hold a refresh token's secret")
	}
}
