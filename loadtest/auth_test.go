package loadtest

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/platformtest"
)

// fakeIdentity serves the four identity endpoints of the auth scenario
// with rotating refresh tokens, as API.md describes them: refreshing
// spends a refresh token, and presenting a spent one revokes its session.
// It is as strict as a server may be about access tokens too: only the
// latest of a session is accepted, so a load that keeps using the one
// before a refresh fails. It records what the load did.
type fakeIdentity struct {
	mu        sync.Mutex
	fail      map[string]int          // "METHOD /path" → a status to answer instead
	customers map[string]string       // email → password
	sessions  []*fakeSession          // by id
	access    map[string]*fakeSession // every access token issued
	refresh   map[string]*fakeSession // every refresh token issued
	loginsBy  map[string]int          // email → successful logins
	counts    map[string]int          // what happened, by name below
	meTokens  map[string]struct{}     // access tokens GET /v1/me was asked with
}

type fakeSession struct {
	id      int
	email   string
	current string // the refresh token that may be spent next
	access  string // the latest access token
	revoked bool
}

// Counts of fakeIdentity.counts.
const (
	countCreated  = "created"  // 201 to POST /v1/customers
	countConflict = "conflict" // 409 to POST /v1/customers
	countLogin    = "login"    // 200 to POST /v1/auth/login
	countBadLogin = "bad_login"
	countRefresh  = "refresh"   // 200 to POST /v1/auth/refresh
	countReplay   = "replay"    // a spent refresh token presented again
	countUnknown  = "unknown"   // a refresh token never issued
	countRevoked  = "revoked"   // sessions revoked by a replay
	countMe       = "me"        // 200 to GET /v1/me
	countMeForged = "me_forged" // GET /v1/me with a token never issued, or none
	countMeDenied = "me_denied" // GET /v1/me with the token of a revoked session
	countMeStale  = "me_stale"  // GET /v1/me with a token its session has replaced
)

func newFakeIdentity() *fakeIdentity {
	return &fakeIdentity{
		customers: map[string]string{},
		access:    map[string]*fakeSession{},
		refresh:   map[string]*fakeSession{},
		loginsBy:  map[string]int{},
		counts:    map[string]int{},
		meTokens:  map[string]struct{}{},
	}
}

func (f *fakeIdentity) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/customers", f.createCustomer)
	mux.HandleFunc("POST /v1/auth/login", f.login)
	mux.HandleFunc("POST /v1/auth/refresh", f.refreshTokens)
	mux.HandleFunc("GET /v1/me", f.me)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		status := f.fail[r.Method+" "+r.URL.Path]
		f.mu.Unlock()
		if status != 0 {
			if status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "60")
			}
			problem(w, status)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func problem(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(v) != nil {
		problem(w, http.StatusBadRequest)
		return false
	}
	return true
}

func (f *fakeIdentity) createCustomer(w http.ResponseWriter, r *http.Request) {
	var in struct{ Email, Password, Name string }
	if !decodeBody(w, r, &in) {
		return
	}
	if !strings.Contains(in.Email, "@") || len(in.Password) < 10 || in.Name == "" {
		problem(w, http.StatusUnprocessableEntity)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.customers[in.Email]; ok {
		f.counts[countConflict]++
		problem(w, http.StatusConflict)
		return
	}
	f.customers[in.Email] = in.Password
	f.counts[countCreated]++
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]string{"id": "cus_" + in.Email, "email": in.Email, "name": in.Name})
}

func (f *fakeIdentity) login(w http.ResponseWriter, r *http.Request) {
	var in struct{ Email, Password string }
	if !decodeBody(w, r, &in) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if pw, ok := f.customers[in.Email]; !ok || pw != in.Password {
		f.counts[countBadLogin]++
		problem(w, http.StatusUnauthorized)
		return
	}
	s := &fakeSession{id: len(f.sessions), email: in.Email}
	f.sessions = append(f.sessions, s)
	f.counts[countLogin]++
	f.loginsBy[in.Email]++
	f.issue(w, s)
}

func (f *fakeIdentity) refreshTokens(w http.ResponseWriter, r *http.Request) {
	var in struct {
		RefreshToken string `json:"refresh_token"`
	}
	if !decodeBody(w, r, &in) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.refresh[in.RefreshToken]
	switch {
	case !ok:
		f.counts[countUnknown]++
		problem(w, http.StatusUnauthorized)
		return
	case s.current != in.RefreshToken:
		f.counts[countReplay]++
		if !s.revoked {
			s.revoked = true
			f.counts[countRevoked]++
		}
		problem(w, http.StatusUnauthorized)
		return
	case s.revoked:
		problem(w, http.StatusUnauthorized)
		return
	}
	f.counts[countRefresh]++
	f.issue(w, s)
}

// issue answers with new tokens for s, its previous refresh token spent.
// Each answer is a token response as API.md has it, with tokens as long as
// real ones; the refresh tokens hold a '&', which encoding/json escapes, so
// that the load must decode and encode them properly, and the id_token
// comes first and mentions "refresh_token" to mislead a careless scanner.
func (f *fakeIdentity) issue(w http.ResponseWriter, s *fakeSession) {
	n := len(f.access)
	payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"sid":%d,"n":%d,"scope":"openid profile","pad":"%s"}`,
		s.email, s.id, n, strings.Repeat("x", 300)))
	access := "eyJhbGciOiJFUzI1NiJ9." + payload + ".c2ln"
	refresh := fmt.Sprintf("rt-%d-%d&%s", s.id, n, payload[:32])
	f.access[access] = s
	f.refresh[refresh] = s
	s.current, s.access = refresh, access
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		IDToken      string `json:"id_token"`
		AccessToken  string `json:"access_token"`
		TokenType    string `json:"token_type"`
		ExpiresIn    int    `json:"expires_in"`
		RefreshToken string `json:"refresh_token"`
	}{"eyJhbGciOiJFUzI1NiJ9." + payload + ".refresh_token", access, "Bearer", 900, refresh})
}

func (f *fakeIdentity) me(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.meTokens[token] = struct{}{}
	s, ok := f.access[token]
	switch {
	case !ok:
		f.counts[countMeForged]++
		problem(w, http.StatusUnauthorized)
	case s.revoked:
		f.counts[countMeDenied]++
		problem(w, http.StatusUnauthorized)
	case s.access != token:
		f.counts[countMeStale]++
		problem(w, http.StatusUnauthorized)
	default:
		f.counts[countMe]++
		writeJSON(w, map[string]string{"id": "cus_" + s.email, "email": s.email, "name": "Load Test"})
	}
}

// addCustomers registers customers 0…n-1 of runID, as an earlier run would
// have left them.
func (f *fakeIdentity) addCustomers(runID, password string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		f.customers[customerEmail(runID, i)] = password
	}
}

func (f *fakeIdentity) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[name]
}

func startFakeIdentity(t *testing.T) (*fakeIdentity, Options) {
	t.Helper()
	f := newFakeIdentity()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	return f, testOptions(t, srv.URL)
}

func TestAuth(t *testing.T) {
	f, opts := startFakeIdentity(t)
	var out bytes.Buffer
	opts.Out = &out
	opts.Auth.Accounts = opts.Concurrency + 2 // two workers take turns with a second customer
	opts.Auth.RunID = "test"
	results, err := Run(t.Context(), "auth", opts)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("every case ran and printed a line with the documented fields", func(t *testing.T) {
		checkResultLines(t, &out, results, "auth/login", "auth/refresh", "auth/me")
	})

	f.mu.Lock()
	defer f.mu.Unlock()

	t.Run("setup created every customer", func(t *testing.T) {
		if f.counts[countCreated] != opts.Auth.Accounts || f.counts[countConflict] != 0 {
			t.Errorf("%d created and %d conflicts, want %d created", f.counts[countCreated], f.counts[countConflict], opts.Auth.Accounts)
		}
	})

	t.Run("login took turns with every customer and never failed", func(t *testing.T) {
		for i := range opts.Auth.Accounts {
			// Once in setup, and again in the case.
			if email := customerEmail("test", i); f.loginsBy[email] < 2 {
				t.Errorf("%s logged in %d times", email, f.loginsBy[email])
			}
		}
		if f.counts[countBadLogin] != 0 {
			t.Errorf("%d failed logins", f.counts[countBadLogin])
		}
	})

	t.Run("no refresh token was sent twice", func(t *testing.T) {
		if f.counts[countRefresh] < int(results[1].Requests) || results[1].Requests == 0 {
			t.Errorf("the fake answered %d refreshes, the case measured %d", f.counts[countRefresh], results[1].Requests)
		}
		if f.counts[countReplay] != 0 || f.counts[countRevoked] != 0 || f.counts[countUnknown] != 0 {
			t.Errorf("%d replays revoked %d sessions; %d unknown refresh tokens",
				f.counts[countReplay], f.counts[countRevoked], f.counts[countUnknown])
		}
	})

	t.Run("GET /v1/me carried the latest tokens the fake issued", func(t *testing.T) {
		if f.counts[countMe] < int(results[2].Requests) || results[2].Requests == 0 {
			t.Errorf("the fake answered %d, the case measured %d", f.counts[countMe], results[2].Requests)
		}
		if f.counts[countMeForged] != 0 || f.counts[countMeDenied] != 0 || f.counts[countMeStale] != 0 {
			t.Errorf("%d requests with tokens never issued, %d with tokens of revoked sessions, %d with replaced tokens",
				f.counts[countMeForged], f.counts[countMeDenied], f.counts[countMeStale])
		}
		// One token per worker, and one more when a worker lost its
		// session, would do; a token per request would mean the case
		// measured something else.
		if len(f.meTokens) > 2*opts.Concurrency {
			t.Errorf("%d distinct access tokens for %d workers", len(f.meTokens), opts.Concurrency)
		}
	})
}

// TestFakeIdentityRotates checks the fake that TestAuth relies on: a
// refresh token works once, its replay revokes the session, and each
// refusal counts.
func TestFakeIdentityRotates(t *testing.T) {
	f, opts := startFakeIdentity(t)
	f.addCustomers("fake", authPassword, 1)
	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(opts.BaseURL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	me := func(token any) int {
		t.Helper()
		req, _ := http.NewRequest("GET", opts.BaseURL+"/v1/me", nil)
		req.Header.Set("Authorization", fmt.Sprint("Bearer ", token))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	status, login := post("/v1/auth/login", fmt.Sprintf(`{"email":%q,"password":%q}`, customerEmail("fake", 0), authPassword))
	if status != 200 {
		t.Fatalf("login: %d", status)
	}
	spend := fmt.Sprintf(`{"refresh_token":%q}`, login["refresh_token"])
	status, refreshed := post("/v1/auth/refresh", spend)
	if status != 200 || refreshed["refresh_token"] == login["refresh_token"] {
		t.Fatalf("first refresh: %d %v", status, refreshed)
	}
	if status := me(refreshed["access_token"]); status != 200 {
		t.Fatalf("me before the replay: %d", status)
	}
	if status := me(login["access_token"]); status != 401 {
		t.Errorf("me with the replaced token: %d, want 401", status)
	}
	if status, _ := post("/v1/auth/refresh", spend); status != 401 {
		t.Errorf("replayed refresh: %d, want 401", status)
	}
	if status := me(refreshed["access_token"]); status != 401 {
		t.Errorf("me after the replay: %d, want 401", status)
	}
	if status := me("forged"); status != 401 {
		t.Errorf("me with a forged token: %d, want 401", status)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range []string{countReplay, countRevoked, countMeForged, countMeDenied, countMeStale} {
		if f.counts[c] != 1 {
			t.Errorf("counts %v, want one %s", f.counts, c)
		}
	}
}

func TestAuthReusesCustomersOfAnEarlierRun(t *testing.T) {
	f, opts := startFakeIdentity(t)
	f.addCustomers("again", authPassword, 2)
	opts.Duration = 100 * time.Millisecond
	opts.Auth.RunID = "again"
	var out bytes.Buffer
	opts.Out = &out
	results, err := Run(t.Context(), "auth", opts)
	if err != nil {
		t.Fatal(err)
	}
	checkResultLines(t, &out, results, "auth/login", "auth/refresh", "auth/me")
	if created, conflicts := f.count(countCreated), f.count(countConflict); created != opts.Concurrency-2 || conflicts != 2 {
		t.Errorf("%d created and %d conflicts, want %d and 2", created, conflicts, opts.Concurrency-2)
	}
}

func TestAuthSetupFailures(t *testing.T) {
	tests := []struct {
		name  string
		fail  map[string]int
		other string // the customers exist with this password
		is    error
		want  string
	}{
		{"no customers endpoint", map[string]int{"POST /v1/customers": 404}, "", errNoIdentity, "POST http://"},
		{"no login endpoint", map[string]int{"POST /v1/auth/login": 404}, "", errNoIdentity, "/v1/auth/login"},
		{"no me endpoint", map[string]int{"GET /v1/me": 404}, "", errNoIdentity, "/v1/me"},
		{"login limited per address", map[string]int{"POST /v1/auth/login": 429}, "", errRateLimited, "MERCATO_RATE_LIMIT_PER_IP=0"},
		{"customers limited per address", map[string]int{"POST /v1/customers": 429}, "", errRateLimited, "MERCATO_RATE_LIMIT_PER_IP=0"},
		{"tokens refused", map[string]int{"GET /v1/me": 401}, "", nil, "refused the access token"},
		{"invalid customer", map[string]int{"POST /v1/customers": 422}, "", nil, "status 422"},
		{"customers of another password", nil, "another-password", errLoginRefused, "choose another --run-id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, opts := startFakeIdentity(t)
			f.mu.Lock()
			f.fail = tt.fail
			f.mu.Unlock()
			opts.Auth.RunID = "fails"
			if tt.other != "" {
				f.addCustomers("fails", tt.other, opts.Concurrency)
			}
			var out bytes.Buffer
			opts.Out = &out
			results, err := Run(t.Context(), "auth", opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v mentioning %q", err, tt.is, tt.want)
			}
			if len(results) != 0 || out.Len() != 0 {
				t.Errorf("printed %q after a failed setup", out.String())
			}
			if n := f.count(countLogin); n > opts.Concurrency {
				t.Errorf("%d logins after a failed setup", n)
			}
		})
	}
}

func TestAuthUnreachable(t *testing.T) {
	opts := testOptions(t, "http://"+platformtest.ClosedAddr(t))
	_, err := Run(t.Context(), "auth", opts)
	if err == nil || !strings.Contains(err.Error(), "/v1/customers") || !strings.Contains(err.Error(), "is the platform running there?") {
		t.Errorf("err = %v, want the failed request and a hint", err)
	}
}

func TestAuthNeedsACustomerPerWorker(t *testing.T) {
	f, opts := startFakeIdentity(t)
	opts.Auth.Accounts = opts.Concurrency - 1
	_, err := Run(t.Context(), "auth", opts)
	if err == nil || !strings.Contains(err.Error(), "at least concurrency") {
		t.Errorf("err = %v, want a refusal of too few accounts", err)
	}
	if n := f.count(countCreated); n != 0 {
		t.Errorf("created %d customers", n)
	}
}

func TestAuthRandomRunID(t *testing.T) {
	f, opts := startFakeIdentity(t)
	opts.Duration = 50 * time.Millisecond
	opts.Concurrency = 1
	opts.Out = io.Discard
	for range 2 {
		if _, err := Run(t.Context(), "auth", opts); err != nil {
			t.Fatal(err)
		}
	}
	if created, conflicts := f.count(countCreated), f.count(countConflict); created != 2 || conflicts != 0 {
		t.Errorf("two runs created %d customers with %d conflicts, want 2 and none", created, conflicts)
	}
}

// TestSessionRecovery drives the refresh and me cases' NextFuncs by hand
// through the answers a worker can meet.
func TestSessionRecovery(t *testing.T) {
	tokens := func(access, refresh string, expiresIn int) Response {
		return Response{Status: 200, Body: fmt.Appendf(nil, `{"access_token":%q,"token_type":"Bearer","expires_in":%d,"refresh_token":%q,"id_token":"x"}`,
			access, expiresIn, refresh)}
	}
	newRun := func() *authRun {
		r := &authRun{logins: [][]byte{[]byte(`{"email":"a"}`)}, sessions: make([]session, 1)}
		if !r.sessions[0].take(tokens("at0", "rt0", 900).Body) {
			t.Fatal("take refused a token response")
		}
		return r
	}
	type step struct {
		prev Response // the answer to the previous request
		want string   // the next request, as "METHOD path body|unmeasured|Authorization"
	}
	describe := func(req Request) string {
		s := cmp.Or(req.Method, "GET") + " " + req.Path + " " + string(req.Body)
		if req.Unmeasured {
			s += " unmeasured"
		}
		for _, h := range req.Header {
			s += " " + h.Name + ": " + h.Value
		}
		return s
	}
	login := `POST /v1/auth/login {"email":"a"} unmeasured`
	tests := []struct {
		name  string
		next  func(*authRun) NextFunc
		steps []step
	}{
		{"refresh follows the chain", (*authRun).refreshCase, []step{
			{Response{}, `POST /v1/auth/refresh {"refresh_token":"rt0"}`},
			{tokens("at1", "rt1", 900), `POST /v1/auth/refresh {"refresh_token":"rt1"}`},
			{tokens("at2", `r"t2`, 900), `POST /v1/auth/refresh {"refresh_token":"r\"t2"}`},
		}},
		{"a failed refresh logs in again", (*authRun).refreshCase, []step{
			{Response{}, `POST /v1/auth/refresh {"refresh_token":"rt0"}`},
			{Response{Status: 401}, login},
			{Response{Status: 429}, login},
			{tokens("at1", "rt1", 900), `POST /v1/auth/refresh {"refresh_token":"rt1"}`},
			{Response{}, login}, // no answer at all: a timeout
		}},
		{"a refresh answered without tokens logs in again", (*authRun).refreshCase, []step{
			{Response{}, `POST /v1/auth/refresh {"refresh_token":"rt0"}`},
			{Response{Status: 200, Body: []byte(`{}`)}, login},
		}},
		{"me renews a refused token", (*authRun).meCase, []step{
			{Response{}, "GET /v1/me  Authorization: Bearer at0"},
			{Response{Status: 200}, "GET /v1/me  Authorization: Bearer at0"},
			{Response{Status: 401}, `POST /v1/auth/refresh {"refresh_token":"rt0"} unmeasured`},
			{tokens("at1", "rt1", 900), "GET /v1/me  Authorization: Bearer at1"},
			{Response{Status: 401}, `POST /v1/auth/refresh {"refresh_token":"rt1"} unmeasured`},
			{Response{Status: 401}, login},
			{tokens("at2", "rt2", 900), "GET /v1/me  Authorization: Bearer at2"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRun()
			next := tt.next(r)
			for i, s := range tt.steps {
				if got := describe(next(0, nil, s.prev)); got != s.want {
					t.Fatalf("step %d: after %d %s, sent %q, want %q", i+1, s.prev.Status, s.prev.Body, got, s.want)
				}
			}
		})
	}
	t.Run("me renews a token before it expires", func(t *testing.T) {
		r := newRun()
		r.sessions[0].renewAt = time.Now().Add(-time.Millisecond)
		if got := describe(r.meCase()(0, nil, Response{})); got != `POST /v1/auth/refresh {"refresh_token":"rt0"} unmeasured` {
			t.Errorf("with the token due, sent %q", got)
		}
		if !r.sessions[0].take(tokens("at1", "rt1", 1).Body) || time.Until(r.sessions[0].renewAt) > time.Second {
			t.Errorf("a token of 1s is renewed at %v", r.sessions[0].renewAt)
		}
	})
}

func TestTokenField(t *testing.T) {
	tests := []struct {
		name, body, key, want string
	}{
		{"first field", `{"access_token":"a.b.c","refresh_token":"r1"}`, `"access_token"`, "a.b.c"},
		{"later field", `{"access_token":"a.b.c","refresh_token":"r1"}`, `"refresh_token"`, "r1"},
		{"spaces", "{\n  \"refresh_token\" :  \"r1\"\n}", `"refresh_token"`, "r1"},
		{"a value that equals the key", `{"token_type":"refresh_token","refresh_token":"r1"}`, `"refresh_token"`, "r1"},
		{"escapes", `{"refresh_token":"r\u00261\"x"}`, `"refresh_token"`, `r&1"x`},
		{"null", `{"refresh_token":null}`, `"refresh_token"`, ""},
		{"absent", `{"access_token":"a"}`, `"refresh_token"`, ""},
		{"not JSON", `<html>refresh_token</html>`, `"refresh_token"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tokenField([]byte(tt.body), tt.key); got != tt.want {
				t.Errorf("tokenField(%s, %s) = %q, want %q", tt.body, tt.key, got, tt.want)
			}
		})
	}
}

func TestJSONInt(t *testing.T) {
	tests := []struct {
		v    string
		want int64
		ok   bool
	}{
		{"900,", 900, true},
		{"0}", 0, true},
		{"900.5", 0, false},
		{"9e2", 0, false},
		{"-1", 0, false},
		{`"900"`, 0, false},
		{"", 0, false},
		{"1234567890123456789", 0, false},
	}
	for _, tt := range tests {
		if got, ok := jsonInt([]byte(tt.v)); got != tt.want || ok != tt.ok {
			t.Errorf("jsonInt(%q) = %d, %v; want %d, %v", tt.v, got, ok, tt.want, tt.ok)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "eyJ.abc-_~", `a"b\c`, "tab\there", "é&<>"} {
		var got string
		if err := json.Unmarshal(appendJSONString([]byte("x"), s)[1:], &got); err != nil || got != s {
			t.Errorf("appendJSONString(%q) decodes to %q, %v", s, got, err)
		}
	}
}

// BenchmarkTokenField compares reading a login or refresh answer of 1.5 kB
// as the auth cases do with decoding it. On the 2-core development machine
// the scan, with the copies of both tokens and the new Authorization
// header, took about 1.4 µs and 3 allocations; json.Unmarshal of the three
// fields alone about 9 µs and 7 allocations, nearly as much again as the
// ~11 µs a whole request otherwise costs the generator (see doc.go).
func BenchmarkTokenField(b *testing.B) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat(`{"sub":"cus_01J","sid":"ses_01J","scope":"openid"}`, 8)))
	body, err := json.Marshal(map[string]any{
		"access_token":  "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0." + payload + ".c2lnbmF0dXJl",
		"token_type":    "Bearer",
		"expires_in":    900,
		"refresh_token": "rt_01JABCDEFGHJKMNPQRSTVWXYZ0123456789abcdef",
		"id_token":      "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0." + payload + payload[:200] + ".c2lnbmF0dXJl",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		var s session
		for b.Loop() {
			if !s.take(body) {
				b.Fatal("no tokens")
			}
		}
	})
	b.Run("json_unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v struct {
				AccessToken  string `json:"access_token"`
				ExpiresIn    int64  `json:"expires_in"`
				RefreshToken string `json:"refresh_token"`
			}
			if err := json.Unmarshal(body, &v); err != nil || v.AccessToken == "" {
				b.Fatal(err)
			}
		}
	})
}
