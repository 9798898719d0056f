package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/auth/authtest"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/service"
)

// The gateway's neighbours in these tests are real HTTP servers on loopback
// that stand in for services: each serves a small OpenAPI fragment, records
// what reaches it and answers like a service would.

// catalogFragment and cartFragment are the parts of the public API the two
// fake upstreams own; both reference the shared components.
const catalogFragment = `
paths:
  /v1/products:
    get:
      operationId: listProducts
      parameters:
        - $ref: "#/components/parameters/PageSize"
      responses:
        "200": {description: a page of products}
  /v1/products/{id}:
    get:
      operationId: getProduct
      responses:
        "200":
          description: one product
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Product"}
  /v1/admin/products:
    post:
      operationId: createProduct
      responses:
        "201": {description: created}
  /v1/admin/products/{id}:
    patch:
      operationId: updateProduct
      responses:
        "200": {description: updated}
    delete:
      operationId: deleteProduct
      responses:
        "204": {description: deleted}
components:
  schemas:
    Product:
      type: object
      properties:
        price: {$ref: "#/components/schemas/Money"}
`

const cartFragment = `
paths:
  /v1/carts:
    post:
      operationId: createCart
      responses:
        "201": {description: created}
  /v1/carts/{id}:
    get:
      operationId: getCart
      responses:
        "200": {description: the cart}
  /v1/carts/{id}/items/{item_id}:
    put:
      operationId: putItem
      responses:
        "200": {description: the cart}
components:
  schemas:
    Cart:
      type: object
`

// seen is one request as an upstream received it.
type seen struct {
	Method     string
	Path       string // escaped, as on the wire
	RawQuery   string
	Body       string
	BodyErr    error // reading the body failed: the request was cut off
	Host       string
	RemoteAddr string
	Header     http.Header
}

// upstream is a fake service behind the gateway.
type upstream struct {
	name     string
	fragment string
	srv      *httptest.Server
	notReady atomic.Bool

	mu       sync.Mutex
	requests []seen
}

// upstreamOwnRequestID is the request id every fake upstream puts on its
// responses, as a real service's server middleware would.
const upstreamOwnRequestID = "set-by-the-upstream"

// newUpstream starts a fake service. reply, when not nil, answers its
// operations instead of the default echo (a JSON body naming the upstream).
func newUpstream(t *testing.T, name, fragment string, reply http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{name: name, fragment: fragment}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if u.notReady.Load() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		body, err := io.ReadAll(r.Body)
		u.mu.Lock()
		u.requests = append(u.requests, seen{
			Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Body: string(body), BodyErr: err,
			Host: r.Host, RemoteAddr: r.RemoteAddr, Header: r.Header.Clone(),
		})
		u.mu.Unlock()
		w.Header().Set("X-Request-Id", upstreamOwnRequestID)
		if reply != nil {
			reply(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"v1"`)
		_ = json.NewEncoder(w).Encode(map[string]string{"upstream": name})
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// seen returns what reached the upstream so far.
func (u *upstream) seen() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.requests...)
}

// last returns the last request that reached the upstream.
func (u *upstream) last(t *testing.T) seen {
	t.Helper()
	s := u.seen()
	if len(s) == 0 {
		t.Fatalf("no request reached %s", u.name)
	}
	return s[len(s)-1]
}

func (u *upstream) wantUntouched(t *testing.T) {
	t.Helper()
	if s := u.seen(); len(s) > 0 {
		t.Fatalf("%s was reached %d times, first %s %s; want not at all", u.name, len(s), s[0].Method, s[0].Path)
	}
}

func (u *upstream) asUpstream() Upstream { return Upstream{Name: u.name, OpenAPI: []byte(u.fragment)} }

// testConfig is the default configuration in a fresh namespace whose Redis
// keys are removed after the test.
func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := platformtest.Config(t)
	cfg.Services = map[string]config.ServiceConfig{}
	platformtest.Redis(t, cfg)
	return cfg
}

// gw is a running gateway.
type gw struct {
	url   string
	addr  string
	store *config.Store
	// issuer stands in for identity, unless the test brought its own.
	issuer *authtest.Issuer
}

// startGateway runs the gateway in front of ups until the test ends; each
// upstream is reached at its httptest address. Unless cfg already names an
// identity service, an authtest issuer stands in for it, and the gateway is
// started once it has loaded the issuer's keys.
func startGateway(t *testing.T, cfg config.Config, ups ...*upstream) *gw {
	t.Helper()
	var issuer *authtest.Issuer
	if cfg.Services["identity"].URL == "" {
		issuer = authtest.New(t)
		issuer.Config(&cfg)
	}
	var list []Upstream
	for _, u := range ups {
		cfg.Services[u.name] = config.ServiceConfig{URL: u.srv.URL}
		list = append(list, u.asUpstream())
	}
	store := config.Static(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, Name, store, platformtest.Logger(t), Setup(list),
			service.Options{Listen: "127.0.0.1:0", Ready: func(a string) { addr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway stopped with %v", err)
		}
	})
	select {
	case a := <-addr:
		g := &gw{url: "http://" + a, addr: a, store: store, issuer: issuer}
		if issuer != nil {
			g.waitAuthReady(t)
		}
		return g
	case err := <-done:
		t.Fatalf("gateway did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not start in time")
	}
	return nil
}

// waitAuthReady waits until the gateway's token verifier has loaded, which
// its readiness check reports.
func (g *gw) waitAuthReady(t *testing.T) {
	t.Helper()
	platformtest.Eventually(t, "the gateway's verifier loads identity's keys", func() bool {
		resp, err := http.Get(g.url + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body problemBody
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return body.Checks["auth"] == "ok"
	})
}

// setupError runs the gateway's setup alone and returns its error; the gateway
// stops at once if setup succeeds.
func setupError(t *testing.T, cfg config.Config, ups ...Upstream) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, Name, config.Static(cfg), platformtest.Logger(t), Setup(ups),
			service.Options{Listen: "127.0.0.1:0", Ready: func(string) { cancel() }})
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("gateway setup neither failed nor started in time")
		return nil
	}
}

// response is what a client got back.
type response struct {
	status int
	header http.Header
	body   []byte
}

// request is a client call; header values are pairs of name and value.
type request struct {
	method string
	path   string
	body   string
	host   string
	header []string
}

func (g *gw) do(t *testing.T, req request) response {
	t.Helper()
	if req.method == "" {
		req.method = http.MethodGet
	}
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	r, err := http.NewRequest(req.method, g.url+req.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if req.host != "" {
		r.Host = req.host
	}
	for i := 0; i+1 < len(req.header); i += 2 {
		r.Header.Add(req.header[i], req.header[i+1])
	}
	return send(t, r)
}

func send(t *testing.T, r *http.Request) response {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", r.Method, r.URL, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (g *gw) get(t *testing.T, path string, header ...string) response {
	t.Helper()
	return g.do(t, request{path: path, header: header})
}

// wantStatus fails the test unless the response has the status.
func (r response) wantStatus(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

// wantProblem fails the test unless the response is a problem+json body of
// the status, and returns the problem.
func (r response) wantProblem(t *testing.T, status int) problemBody {
	t.Helper()
	r.wantStatus(t, status)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json; body %s", ct, r.body)
	}
	var p problemBody
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %q: %v", r.body, err)
	}
	if p.Status != status || p.Type == "" || p.Title == "" {
		t.Fatalf("problem %+v is not a complete problem of status %d", p, status)
	}
	return p
}

type problemBody struct {
	Type   string            `json:"type"`
	Title  string            `json:"title"`
	Status int               `json:"status"`
	Detail string            `json:"detail"`
	Checks map[string]string `json:"checks"`
}

// cfgURL points a service at addr.
func cfgURL(addr string) config.ServiceConfig { return config.ServiceConfig{URL: "http://" + addr} }
