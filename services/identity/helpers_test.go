package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/service"
)

// namespace is a test platform for identity: a configuration in a fresh
// namespace whose databases, keys and streams are removed after the test,
// with argon2id parameters cheap enough for the race detector.
func namespace(t *testing.T) config.Config {
	t.Helper()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	platformtest.Redis(t, cfg)
	platformtest.CleanBroker(t, cfg)
	cfg.Identity.Argon2 = config.Argon2Config{MemoryKiB: 1024, Iterations: 1, Parallelism: 1}
	return cfg
}

// instance is one running identity service.
type instance struct {
	url  string
	cfg  config.Config
	logs *platformtest.Buffer
}

// start runs identity in cfg's namespace until the test ends. The public
// URL (the issuer) is the instance's own address unless cfg sets one, as
// if the gateway were not there; logs go to the instance's buffer and, if
// the test fails, to the test log.
func start(t *testing.T, cfg config.Config, opts ...options) *instance {
	t.Helper()
	addr := platformtest.ClosedAddr(t)
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + addr
	}
	// Identity verifies tokens like every service does, fetching its own
	// JWKS and revocations, so it must know where it listens.
	services := maps.Clone(cfg.Services)
	if services == nil {
		services = map[string]config.ServiceConfig{}
	}
	services[Name] = config.ServiceConfig{Listen: addr, URL: "http://" + addr}
	cfg.Services = services
	var o options
	if len(opts) > 0 {
		o = opts[0]
	}
	logs := &platformtest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, Name, config.Static(cfg), log, func(ctx context.Context, env *service.Env) error {
			return run(ctx, env, o)
		}, service.Options{Listen: addr, Ready: func(a string) { ready <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("identity stopped with %v", err)
		}
		if t.Failed() {
			t.Logf("identity logs:\n%s", logs.String())
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("identity did not start: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatal("identity did not start in time")
	}
	in := &instance{url: "http://" + addr, cfg: cfg, logs: logs}
	platformtest.Eventually(t, "identity is ready", func() bool {
		resp, err := http.Get(in.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return in
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
}

// problemFields returns the field names a problem+json body lists.
func (r response) problemFields(t *testing.T) []string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, body %s", ct, r.body)
	}
	var p struct {
		Errors []struct{ Field string } `json:"errors"`
	}
	r.json(t, &p)
	var out []string
	for _, e := range p.Errors {
		out = append(out, e.Field)
	}
	return out
}

// problemType returns the type of a problem+json body.
func (r response) problemType(t *testing.T) string {
	t.Helper()
	var p struct{ Type string }
	r.json(t, &p)
	return p.Type
}

// do sends a JSON request; headers are name, value pairs.
func (in *instance) do(t *testing.T, method, path string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, in.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return send(t, http.DefaultClient, req)
}

func send(t *testing.T, c *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// as sends a request with a bearer token.
func (in *instance) as(t *testing.T, token, method, path string, body any, headers ...string) response {
	t.Helper()
	return in.do(t, method, path, body, append([]string{"Authorization", "Bearer " + token}, headers...)...)
}

// tokenBody is a REST login's answer.
type tokenBody struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
}

// register creates an account and returns its id.
func (in *instance) register(t *testing.T, email, password string) string {
	t.Helper()
	r := in.do(t, "POST", "/v1/customers", map[string]string{"email": email, "password": password, "name": "Ada Lovelace"})
	if r.status != http.StatusCreated {
		t.Fatalf("register %s: %d %s", email, r.status, r.body)
	}
	var c struct{ ID string }
	r.json(t, &c)
	return c.ID
}

// login signs in over REST; headers are name, value pairs.
func (in *instance) login(t *testing.T, email, password string, headers ...string) tokenBody {
	t.Helper()
	r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": email, "password": password}, headers...)
	if r.status != http.StatusOK {
		t.Fatalf("login %s: %d %s", email, r.status, r.body)
	}
	var tb tokenBody
	r.json(t, &tb)
	return tb
}

// claims decodes a JWT's payload without verifying it (tests verify
// signatures separately).
func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// header decodes a JWT's header.
func header(t *testing.T, jwt string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so a test can look at each step of a browser flow.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get sends a GET with a browser.
func get(t *testing.T, c *http.Client, u string) response {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, c, req)
}

// postForm sends a form with a browser.
func postForm(t *testing.T, c *http.Client, u string, form url.Values) response {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return send(t, c, req)
}

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now().UTC().Truncate(time.Millisecond)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
