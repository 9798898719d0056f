package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

const (
	customersPath = "/v1/customers"
	loginPath     = "/v1/auth/login"
	refreshPath   = "/v1/auth/refresh"
	mePath        = "/v1/me"

	// authPassword is the password of every customer the auth scenario
	// creates: fixed, so that a later run with the same RunID can log in
	// as them, and long and mixed enough for any password policy.
	authPassword = "Mercato-load-7q4k-Passw0rd!"
	// maxRunIDLength bounds AuthOptions.RunID, which goes into emails.
	maxRunIDLength = 40
	// maxSetupParallel bounds the requests auth setup sends at once. Each
	// hashes a password on the server for tens of milliseconds of CPU, so
	// more at once than the server has cores only queue there.
	maxSetupParallel = 8
	// renewShare is the share of an access token's lifetime after which
	// the me case refreshes it, so that a long case does not see it expire.
	renewShare = 0.8
)

var (
	// errNoIdentity is setup's answer to a 404 from an identity endpoint.
	errNoIdentity = errors.New("status 404: the platform has no identity endpoints " +
		"(is the identity service running, and does the gateway route /v1/customers, /v1/auth and /v1/me to it?)")
	// errRateLimited is setup's answer to a 429, which a load from one
	// address meets first at login.
	errRateLimited = errors.New("status 429: the gateway limits requests, login attempts above all, per client address; " +
		"start the platform with MERCATO_RATE_LIMIT_PER_IP=0 to load it from one machine " +
		"(the per-account limits on failed logins stay on, and this scenario makes no failed logins)")
	// errLoginRefused is a 401 from login.
	errLoginRefused = errors.New("status 401: wrong email or password")
)

// auth is the identity workload: password login, refresh-token rotation
// and an authenticated GET /v1/me, each driven as its own case.
type auth struct{}

func (auth) Name() string { return "auth" }

func (auth) Run(ctx context.Context, opts Options) ([]Result, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Auth.Accounts < opts.Concurrency {
		return nil, fmt.Errorf("accounts (%d) must be at least concurrency (%d): each worker keeps a session of a customer of its own",
			opts.Auth.Accounts, opts.Concurrency)
	}
	if opts.Auth.RunID == "" {
		opts.Auth.RunID = fmt.Sprintf("%08x", rand.Uint32())
	}
	run, err := setupAuth(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("auth setup: %w", err)
	}
	cases := []struct {
		name string
		// prepare runs, unmeasured, before the case.
		prepare func(context.Context) error
		next    NextFunc
	}{
		{"auth/login", nil, run.loginCase()},
		{"auth/refresh", run.restore, run.refreshCase()},
		{"auth/me", run.restore, run.meCase()},
	}
	var results []Result
	for _, c := range cases {
		if c.prepare != nil {
			if err := c.prepare(ctx); err != nil {
				return results, fmt.Errorf("prepare %s: %w", c.name, err)
			}
		}
		r, err := Drive(ctx, opts, c.name, c.next)
		if err != nil {
			if r.Requests > 0 {
				results = append(results, r) // interrupted: report what was measured
			}
			return results, err
		}
		if n := r.ErrorKinds["status_429"]; n > 0 {
			opts.Log.Warn("requests were rate limited; start the platform with MERCATO_RATE_LIMIT_PER_IP=0 to load it from one machine",
				"case", c.name, "status_429", n)
		}
		results = append(results, r)
	}
	return results, nil
}

// validRunID reports whether id can go into an email's local part as it
// is: empty, or a few letters, digits, '-' and '_'.
func validRunID(id string) bool {
	if len(id) > maxRunIDLength {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// customerEmail is the email of the run's n-th customer.
func customerEmail(runID string, n int) string {
	return fmt.Sprintf("load+%s-%d@example.com", runID, n)
}

// authRun is what auth setup prepared: the customers and a session for
// each worker, which the refresh and me cases carry on.
type authRun struct {
	opts Options
	// logins holds each customer's login request body.
	logins [][]byte
	// sessions holds worker i's session, of customer i. While a case runs
	// only worker i touches sessions[i]; between cases only restore does.
	sessions []session
}

// session is one worker's login session.
type session struct {
	customer int       // index into authRun.logins
	access   string    // the access token, "" when refused
	refresh  string    // the refresh token, "" once sent: each is sent once
	renewAt  time.Time // when the me case refreshes the access token; zero: never
	sent     sentKind  // what the worker's previous request was
	auth     [1]Header // Authorization: Bearer access
	body     []byte    // the refresh request's body, reused
}

// sentKind is what a worker's previous request was, for the next call of
// its NextFunc to read the response.
type sentKind uint8

const (
	sentNothing sentKind = iota
	sentLogin
	sentRefresh
	sentMe
)

// setupAuth creates opts.Auth.Accounts customers, or finds them from an
// earlier run with the same RunID, logs each in once and keeps a session
// for each worker; then it checks that GET /v1/me accepts a token.
func setupAuth(ctx context.Context, opts Options) (*authRun, error) {
	r := &authRun{
		opts:     opts,
		logins:   make([][]byte, opts.Auth.Accounts),
		sessions: make([]session, opts.Concurrency),
	}
	var existing atomic.Int64
	err := r.parallel(ctx, len(r.logins), func(c *client, i int) error {
		email := customerEmail(opts.Auth.RunID, i)
		body, err := json.Marshal(map[string]string{"email": email, "password": authPassword})
		if err != nil {
			return err
		}
		r.logins[i] = body
		created, err := r.createCustomer(c, email, i)
		if err != nil {
			return err
		}
		if !created {
			existing.Add(1)
		}
		s := session{customer: i}
		if err := r.logIn(c, &s); err != nil {
			if !created && errors.Is(err, errLoginRefused) {
				return fmt.Errorf("%w: %s exists from an earlier run with another password; choose another --run-id", err, email)
			}
			return err
		}
		if i < len(r.sessions) {
			r.sessions[i] = s
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := r.checkMe(ctx); err != nil {
		return nil, err
	}
	opts.Log.Info("auth setup done", "run_id", opts.Auth.RunID, "customers", len(r.logins),
		"created", int64(len(r.logins))-existing.Load(), "existing", existing.Load())
	return r, nil
}

// createCustomer creates the customer n with email, reporting false when
// it exists already.
func (r *authRun) createCustomer(c *client, email string, n int) (created bool, err error) {
	body, err := json.Marshal(map[string]string{"email": email, "password": authPassword, "name": fmt.Sprintf("Load Test %d", n)})
	if err != nil {
		return false, err
	}
	resp, err := r.send(c, Request{Method: "POST", Path: customersPath, Body: body})
	if err != nil {
		return false, err
	}
	switch resp.Status {
	case 201:
		return true, nil
	case 409:
		return false, nil
	}
	return false, r.statusError("POST", customersPath, resp, email)
}

// logIn logs s's customer in and adopts the new session's tokens.
func (r *authRun) logIn(c *client, s *session) error {
	email := customerEmail(r.opts.Auth.RunID, s.customer)
	resp, err := r.send(c, Request{Method: "POST", Path: loginPath, Body: r.logins[s.customer]})
	switch {
	case err != nil:
		return err
	case resp.Status == 401:
		return fmt.Errorf("POST %s%s as %s: %w", r.opts.BaseURL, loginPath, email, errLoginRefused)
	case resp.Status != 200:
		return r.statusError("POST", loginPath, resp, email)
	case !s.take(resp.Body):
		return fmt.Errorf("POST %s%s as %s: the answer has no access_token or refresh_token: %s",
			r.opts.BaseURL, loginPath, email, snippet(resp.Body))
	}
	return nil
}

// checkMe asks GET /v1/me with the first worker's token, so that a gateway
// that does not accept the tokens fails setup rather than every request of
// the me case.
func (r *authRun) checkMe(ctx context.Context) error {
	return r.parallel(ctx, 1, func(c *client, _ int) error {
		s := &r.sessions[0]
		resp, err := r.send(c, Request{Path: mePath, Header: s.auth[:]})
		switch {
		case err != nil:
			return err
		case resp.Status == 401:
			return fmt.Errorf("GET %s%s refused the access token that login had just issued: status 401: %s",
				r.opts.BaseURL, mePath, snippet(resp.Body))
		case resp.Status != 200:
			return r.statusError("GET", mePath, resp, customerEmail(r.opts.Auth.RunID, s.customer))
		}
		return nil
	})
}

// send sends an unmeasured setup request and names the failures that mean
// the platform cannot run the scenario.
func (r *authRun) send(c *client, req Request) (Response, error) {
	method := req.Method
	if method == "" {
		method = "GET"
	}
	resp, err := c.do(&req, time.Now().Add(r.opts.Timeout))
	switch {
	case err != nil && errorKind(err) == KindConnect:
		return resp, fmt.Errorf("%s %s%s: %w (is the platform running there?)", method, r.opts.BaseURL, req.Path, err)
	case err != nil:
		return resp, fmt.Errorf("%s %s%s: %w", method, r.opts.BaseURL, req.Path, err)
	case resp.Status == 404:
		return resp, fmt.Errorf("%s %s%s: %w", method, r.opts.BaseURL, req.Path, errNoIdentity)
	case resp.Status == 429:
		return resp, fmt.Errorf("%s %s%s: %w", method, r.opts.BaseURL, req.Path, errRateLimited)
	}
	return resp, nil
}

// statusError describes an unexpected status for the customer email.
func (r *authRun) statusError(method, path string, resp Response, email string) error {
	return fmt.Errorf("%s %s%s for %s: status %d: %s", method, r.opts.BaseURL, path, email, resp.Status, snippet(resp.Body))
}

// parallel calls do for 0…n-1 from up to maxSetupParallel goroutines, each
// with a client of its own, and stops at the first error, which it returns.
func (r *authRun) parallel(ctx context.Context, n int, do func(c *client, i int) error) error {
	t, err := parseTarget(r.opts.BaseURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := min(n, r.opts.Concurrency, maxSetupParallel)
	tr := newTransport(ctx, t, workers, r.opts.Timeout)
	defer tr.close()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			c := newClient(tr)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := do(c, i); err != nil {
					cancel(err) // the first error wins; the others follow from it
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// restore logs in again, unmeasured and before a case, every worker whose
// session the previous case lost. A case always ends with each worker's
// last request unread, and when that was a refresh, its refresh token may
// have been rotated on the server: sending it again would revoke the
// session, so the worker starts a new one.
func (r *authRun) restore(ctx context.Context) error {
	var lost []int
	for i := range r.sessions {
		s := &r.sessions[i]
		s.sent = sentNothing
		if s.refresh == "" {
			lost = append(lost, i)
		}
	}
	if len(lost) == 0 {
		return nil
	}
	start := time.Now()
	err := r.parallel(ctx, len(lost), func(c *client, i int) error {
		return r.logIn(c, &r.sessions[lost[i]])
	})
	r.opts.Log.Info("auth sessions restored", "sessions", len(lost), "took", time.Since(start).Round(time.Millisecond))
	return err
}

// loginCase makes worker w log in as customers w, w+Concurrency, … in
// turn.
func (r *authRun) loginCase() NextFunc {
	workers := len(r.sessions)
	next := make([]int, workers) // the customer each worker logs in as next
	for w := range next {
		next[w] = w
	}
	return func(w int, _ *rand.Rand, _ Response) Request {
		i := next[w]
		if next[w] += workers; next[w] >= len(r.logins) {
			next[w] = w
		}
		return Request{Method: "POST", Path: loginPath, Body: r.logins[i]}
	}
}

// refreshCase makes each worker refresh its session with the refresh
// token of its previous answer. A worker whose refresh failed does not
// know whether the server rotated the token, so it logs in again,
// unmeasured, rather than risk a replay.
func (r *authRun) refreshCase() NextFunc {
	return func(w int, _ *rand.Rand, prev Response) Request {
		s := &r.sessions[w]
		s.absorb(prev)
		if s.refresh == "" {
			return s.loginRequest(r, true)
		}
		return s.refreshRequest(false)
	}
}

// meCase makes each worker ask GET /v1/me with its access token, renewing
// it, unmeasured, before it expires or once it is refused.
func (r *authRun) meCase() NextFunc {
	return func(w int, _ *rand.Rand, prev Response) Request {
		s := &r.sessions[w]
		s.absorb(prev)
		if s.access == "" || !s.renewAt.IsZero() && time.Now().After(s.renewAt) {
			if s.refresh != "" {
				return s.refreshRequest(true)
			}
			return s.loginRequest(r, true)
		}
		s.sent = sentMe
		return Request{Path: mePath, Header: s.auth[:]}
	}
}

// absorb reads the answer to the worker's previous request.
func (s *session) absorb(prev Response) {
	switch s.sent {
	case sentLogin, sentRefresh:
		if prev.Status == 200 {
			s.take(prev.Body) // without tokens, the worker logs in again
		}
	case sentMe:
		if prev.Status == 401 {
			s.access = "" // expired or revoked: renew before the next
		}
	}
	s.sent = sentNothing
}

// take adopts the tokens of a login or refresh answer, reporting whether
// it held both.
func (s *session) take(body []byte) bool {
	access, refresh := tokenField(body, `"access_token"`), tokenField(body, `"refresh_token"`)
	if access == "" || refresh == "" {
		return false
	}
	s.access, s.refresh = access, refresh
	s.auth[0] = Header{Name: "Authorization", Value: "Bearer " + access}
	s.renewAt = time.Time{}
	if secs, ok := jsonInt(firstValue(body, `"expires_in"`)); ok && secs > 0 {
		s.renewAt = time.Now().Add(time.Duration(float64(secs) * renewShare * float64(time.Second)))
	}
	return true
}

// loginRequest logs the session's customer in again.
func (s *session) loginRequest(r *authRun, unmeasured bool) Request {
	s.sent = sentLogin
	return Request{Method: "POST", Path: loginPath, Body: r.logins[s.customer], Unmeasured: unmeasured}
}

// refreshRequest spends the session's refresh token.
func (s *session) refreshRequest(unmeasured bool) Request {
	s.body = append(appendJSONString(append(s.body[:0], `{"refresh_token":`...), s.refresh), '}')
	s.refresh = "" // whatever the answer, this token is never sent again
	s.sent = sentRefresh
	return Request{Method: "POST", Path: refreshPath, Body: s.body, Unmeasured: unmeasured}
}

// tokenField returns the string value of the quoted key in a token
// response without decoding the response, which would cost the generator
// several times as much (BenchmarkTokenField). A token response is a flat
// object of tokens, a token type and a number, so the first occurrence of
// the key followed by a colon is the key.
func tokenField(body []byte, key string) string {
	return jsonString(firstValue(body, key))
}

// firstValue returns the JSON value of the first occurrence of the quoted
// key followed by a colon, or nil.
func firstValue(body []byte, key string) []byte {
	for {
		i := bytes.Index(body, []byte(key))
		if i < 0 {
			return nil
		}
		body = body[i+len(key):]
		if v := valueAfterKey(body); v != nil {
			return v
		}
	}
}

// jsonInt returns the non-negative JSON integer that v starts with.
func jsonInt(v []byte) (int64, bool) {
	const maxDigits = 18 // fits an int64
	var n int64
	i := 0
	for ; i < len(v) && '0' <= v[i] && v[i] <= '9'; i++ {
		if i == maxDigits {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	if i == 0 || i < len(v) && (v[i] == '.' || v[i] == 'e' || v[i] == 'E') {
		return 0, false
	}
	return n, true
}

// appendJSONString appends s as a JSON string; tokens need no escapes, so
// they are copied as they are.
func appendJSONString(dst []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			quoted, _ := json.Marshal(s)
			return append(dst, quoted...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
