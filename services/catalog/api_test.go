package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/auth/authtest"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/broker"
	"github.com/mercato/mercato/platform/openapi"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/service"
)

// instance is one running catalog service.
type instance struct {
	url string
	// admin is an admin access token, sent with every /v1/admin/ request
	// that does not bring its own Authorization.
	admin string
}

// platform is a test platform: a configuration in a fresh namespace whose
// databases, keys and streams are removed after the test, and a stand-in
// identity whose tokens the catalog verifies.
type platform struct {
	cfg    config.Config
	issuer *authtest.Issuer
}

// namespace makes a test platform.
func namespace(t *testing.T) platform {
	t.Helper()
	return namespaceFor(t, platformtest.Config(t))
}

// namespaceFor prepares cfg's namespace as namespace does.
func namespaceFor(t *testing.T, cfg config.Config) platform {
	t.Helper()
	issuer := authtest.New(t)
	issuer.Config(&cfg)
	platformtest.DropDatabasesAfter(t, cfg)
	platformtest.Redis(t, cfg)
	platformtest.CleanBroker(t, cfg)
	return platform{cfg: cfg, issuer: issuer}
}

// start runs a catalog instance in p's namespace until the test ends.
func start(t *testing.T, p platform) *instance {
	t.Helper()
	cfg := p.cfg
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- service.Run(ctx, Name, config.Static(cfg), platformtest.Logger(t), Run,
			service.Options{Listen: "127.0.0.1:0", Ready: func(a string) { addr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("catalog stopped with %v", err)
		}
	})
	var in *instance
	select {
	case a := <-addr:
		in = &instance{url: "http://" + a, admin: p.issuer.AdminToken(t)}
	case err := <-done:
		t.Fatalf("catalog did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("catalog did not start in time")
	}
	platformtest.Eventually(t, "the catalog is ready", func() bool {
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

func (in *instance) do(t *testing.T, method, path string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
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
	if strings.HasPrefix(path, "/v1/admin/") {
		req.Header.Set("Authorization", "Bearer "+in.admin)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i]) // an empty value sends none
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
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

func (in *instance) mustCategory(t *testing.T, slug string) string {
	t.Helper()
	r := in.do(t, "POST", "/v1/admin/categories", map[string]string{"slug": slug, "name": strings.ToUpper(slug)})
	if r.status != http.StatusCreated {
		t.Fatalf("create category: %d %s", r.status, r.body)
	}
	var c Category
	r.json(t, &c)
	return c.ID
}

func productBody(title, sku string, cats ...string) map[string]any {
	if cats == nil {
		cats = []string{}
	}
	return map[string]any{
		"title": title, "description": "Hand made. " + title, "category_ids": cats,
		"variants": []map[string]any{{"sku": sku, "price": map[string]any{"amount": 1999, "currency": "EUR"}}},
	}
}

func (in *instance) mustProduct(t *testing.T, body map[string]any) Product {
	t.Helper()
	r := in.do(t, "POST", "/v1/admin/products", body)
	if r.status != http.StatusCreated {
		t.Fatalf("create product: %d %s", r.status, r.body)
	}
	var p Product
	r.json(t, &p)
	return p
}

func TestProductLifecycle(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	in := start(t, cfg)
	cat := in.mustCategory(t, "chairs")

	r := in.do(t, "POST", "/v1/admin/products", productBody("Oak Chair", "OAK-1", cat))
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var created Product
	r.json(t, &created)
	if loc := r.header.Get("Location"); loc != "/v1/products/"+created.ID {
		t.Fatalf("Location = %q", loc)
	}

	got := in.do(t, "GET", "/v1/products/"+created.ID, nil)
	if got.status != http.StatusOK {
		t.Fatalf("get: %d %s", got.status, got.body)
	}
	var p Product
	got.json(t, &p)
	if p.Title != "Oak Chair" || len(p.Variants) != 1 || p.Variants[0].Price.Amount != 1999 || !slices.Equal(p.CategoryIDs, []string{cat}) {
		t.Fatalf("product = %+v", p)
	}
	tag := got.header.Get("ETag")
	if tag == "" || !strings.Contains(got.header.Get("Cache-Control"), "max-age=") {
		t.Fatalf("caching headers: ETag %q Cache-Control %q", tag, got.header.Get("Cache-Control"))
	}
	if r := in.do(t, "GET", "/v1/products/"+created.ID, nil, "If-None-Match", tag); r.status != http.StatusNotModified || len(r.body) != 0 {
		t.Fatalf("conditional get: %d %q", r.status, r.body)
	}

	// A stale If-Match is refused and changes nothing.
	if r := in.do(t, "PATCH", "/v1/admin/products/"+created.ID, map[string]any{"title": "Lost update"}, "If-Match", `"v99"`); r.status != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match: %d %s", r.status, r.body)
	}
	r = in.do(t, "PATCH", "/v1/admin/products/"+created.ID, map[string]any{"title": "Walnut Chair"}, "If-Match", tag)
	if r.status != http.StatusOK {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	got = in.do(t, "GET", "/v1/products/"+created.ID, nil, "If-None-Match", tag)
	if got.status != http.StatusOK || got.header.Get("ETag") == tag {
		t.Fatalf("after patch: %d etag %q", got.status, got.header.Get("ETag"))
	}
	got.json(t, &p)
	if p.Title != "Walnut Chair" {
		t.Fatalf("title after patch = %q", p.Title)
	}

	if r := in.do(t, "DELETE", "/v1/admin/categories/"+cat, nil); r.status != http.StatusConflict {
		t.Fatalf("deleting a used category: %d %s", r.status, r.body)
	}
	if r := in.do(t, "DELETE", "/v1/admin/products/"+created.ID, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := in.do(t, "GET", "/v1/products/"+created.ID, nil); r.status != http.StatusNotFound {
		t.Fatalf("get after delete: %d %s", r.status, r.body)
	}
	if r := in.do(t, "DELETE", "/v1/admin/categories/"+cat, nil); r.status != http.StatusNoContent {
		t.Fatalf("deleting an unused category: %d %s", r.status, r.body)
	}
}

func TestBadInputIsRefusedAndNothingHalfApplied(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	in := start(t, cfg)
	existing := in.mustProduct(t, productBody("Taken", "TAKEN-1"))
	missingCategory := "cat_01jbx6m1t3k9e2f5ag7h8j9k0m"

	tests := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		fields []string
	}{
		{"malformed json", "POST", "/v1/admin/products", `{"title": `, 400, nil},
		{"not an object", "POST", "/v1/admin/products", `[1,2]`, 400, nil},
		{"empty body", "POST", "/v1/admin/products", "", 400, nil},
		{"unknown field", "POST", "/v1/admin/products", `{"title":"x","colour":"red","variants":[]}`, 422, []string{"colour"}},
		{"wrong type", "POST", "/v1/admin/products", `{"title":"x","variants":[{"sku":"A","price":{"amount":"12","currency":"EUR"}}]}`, 422, []string{"variants[0].price.amount"}},
		{"field rules", "POST", "/v1/admin/products", map[string]any{"title": "", "variants": []map[string]any{{"sku": "bad sku", "price": map[string]any{"amount": 5, "currency": "EURO"}}}}, 422,
			[]string{"title", "variants[0].sku", "variants[0].price.currency"}},
		{"unknown category", "POST", "/v1/admin/products", productBody("Lamp", "LAMP-1", missingCategory), 422, []string{"category_ids[0]"}},
		{"sku taken", "POST", "/v1/admin/products", productBody("Copy", "TAKEN-1"), 409, []string{"variants[0].sku"}},
		{"patch unknown variant", "PATCH", "/v1/admin/products/" + existing.ID, map[string]any{"title": "New", "variants": []map[string]any{{"id": "var_01jbx6m1t3k9e2f5ag7h8j9k0m", "title": "x"}}}, 422, []string{"variants[0].id"}},
		{"patch sku to a taken one", "PATCH", "/v1/admin/products/" + existing.ID, map[string]any{"title": "New", "variants": []map[string]any{{"sku": "TAKEN-1", "price": map[string]any{"amount": 1, "currency": "EUR"}}}}, 422, []string{"variants[1].sku"}},
		{"bad page size", "GET", "/v1/products?page_size=101", nil, 422, []string{"page_size"}},
		{"bad category filter", "GET", "/v1/products?category=chairs", nil, 422, []string{"category"}},
		{"forged page token", "GET", "/v1/products?page_token=bm90LWEtdG9rZW4", nil, 400, []string{"page_token"}},
		{"unknown product", "GET", "/v1/products/prod_01jbx6m1t3k9e2f5ag7h8j9k0m", nil, 404, nil},
		{"malformed product id", "GET", "/v1/products/../../etc", nil, 404, nil},
		{"unknown route", "GET", "/v1/nothing-here", nil, 404, nil},
		{"wrong method", "PUT", "/v1/products", `{}`, 405, nil},
		{"too large", "POST", "/v1/admin/products", `{"title":"` + strings.Repeat("x", 2<<20) + `"}`, 413, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := in.do(t, tt.method, tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			got := r.problemFields(t)
			if tt.fields != nil && !slices.Equal(got, tt.fields) {
				t.Fatalf("fields %v, want %v", got, tt.fields)
			}
			if strings.Contains(string(r.body), "goroutine") || strings.Contains(string(r.body), ".go:") {
				t.Fatalf("body leaks internals: %s", r.body)
			}
		})
	}
	// None of the refused writes left anything behind.
	var page struct{ Items []Product }
	in.do(t, "GET", "/v1/products", nil).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].Title != "Taken" || len(page.Items[0].Variants) != 1 {
		t.Fatalf("catalog after refused writes: %+v", page.Items)
	}
}

// TestAdminNeedsAnAdminToken checks that the catalog verifies tokens itself
// rather than trusting the gateway: every admin route refuses a request
// without a token (401), with a bad one (401) and with a customer's (403),
// and creates nothing.
func TestAdminNeedsAnAdminToken(t *testing.T) {
	t.Parallel()
	p := namespace(t)
	in := start(t, p)
	expired := p.issuer.Claims("cus_admin", "admin")
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	revoked := p.issuer.Claims("cus_admin", "admin")
	revokedToken := p.issuer.Mint(t, revoked)
	p.issuer.Revoke(revoked.SessionID)
	platformtest.Eventually(t, "the catalog learns of the revocation", func() bool {
		return in.do(t, "GET", "/v1/admin/products/prod_01jbx6m1t3k9e2f5ag7h8j9k0m", nil, "Authorization", "Bearer "+revokedToken).status == http.StatusUnauthorized
	})
	routes := []struct{ method, path string }{
		{"POST", "/v1/admin/products"},
		{"GET", "/v1/admin/products/prod_01jbx6m1t3k9e2f5ag7h8j9k0m"},
		{"PATCH", "/v1/admin/products/prod_01jbx6m1t3k9e2f5ag7h8j9k0m"},
		{"DELETE", "/v1/admin/products/prod_01jbx6m1t3k9e2f5ag7h8j9k0m"},
		{"POST", "/v1/admin/categories"},
		{"PATCH", "/v1/admin/categories/cat_01jbx6m1t3k9e2f5ag7h8j9k0m"},
		{"DELETE", "/v1/admin/categories/cat_01jbx6m1t3k9e2f5ag7h8j9k0m"},
	}
	creds := []struct {
		name, auth string
		status     int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"not a token", "Bearer test-admin-token-0123456789", http.StatusUnauthorized},
		{"not a bearer", "Basic YWRtaW46YWRtaW4=", http.StatusUnauthorized},
		{"expired admin token", "Bearer " + p.issuer.Mint(t, expired), http.StatusUnauthorized},
		{"revoked admin token", "Bearer " + revokedToken, http.StatusUnauthorized},
		{"forged admin token", "Bearer " + p.issuer.Mint(t, p.issuer.Claims("cus_x", "admin"), authtest.SignedBy(p.issuer.NewKey(t)), authtest.KeyID(p.issuer.SigningKey().ID)), http.StatusUnauthorized},
		{"customer token", "Bearer " + p.issuer.Token(t, "cus_customer", "openid"), http.StatusForbidden},
	}
	for _, c := range creds {
		for _, r := range routes {
			t.Run(c.name+" "+r.method+" "+r.path, func(t *testing.T) {
				// do sends the admin token unless the request brings its own
				// Authorization; "no token" sends an empty one.
				resp := in.do(t, r.method, r.path, map[string]string{"slug": "x", "name": "X", "title": "X"}, "Authorization", c.auth)
				if resp.status != c.status {
					t.Fatalf("status %d, want %d; body %s", resp.status, c.status, resp.body)
				}
				if ct := resp.header.Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("content type %q", ct)
				}
				if !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer ") {
					t.Fatalf("WWW-Authenticate %q", resp.header.Get("WWW-Authenticate"))
				}
			})
		}
	}
	var page struct{ Items []Product }
	in.do(t, "GET", "/v1/products", nil).json(t, &page)
	var cats struct{ Items []Category }
	in.do(t, "GET", "/v1/categories", nil).json(t, &cats)
	if len(page.Items) != 0 || len(cats.Items) != 0 {
		t.Fatalf("refused requests created %d products and %d categories", len(page.Items), len(cats.Items))
	}
	// The admin token works, so the refusals above were about the token.
	if r := in.do(t, "POST", "/v1/admin/categories", map[string]string{"slug": "x", "name": "X"}); r.status != http.StatusCreated {
		t.Fatalf("admin token: %d %s", r.status, r.body)
	}
}

func TestListPagesAndFilters(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	lamps := in.mustCategory(t, "lamps")
	var want []string
	for i := range 25 {
		var cats []string
		if i%5 == 0 {
			cats = []string{lamps}
		}
		p := in.mustProduct(t, productBody(fmt.Sprintf("Product %02d", i), fmt.Sprintf("SKU-%02d", i), cats...))
		want = append(want, p.ID)
	}
	slices.Reverse(want) // newest first

	var seen []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		var page struct {
			Items         []Product
			NextPageToken string `json:"next_page_token"`
		}
		r := in.do(t, "GET", "/v1/products?page_size=10&page_token="+token, nil)
		if r.status != 200 {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		r.json(t, &page)
		for _, p := range page.Items {
			seen = append(seen, p.ID)
		}
		if page.NextPageToken == "" {
			break
		}
		token = page.NextPageToken
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("pages gave %d products in a different order than newest first", len(seen))
	}

	var inCat struct {
		Items         []Product
		NextPageToken string `json:"next_page_token"`
	}
	in.do(t, "GET", "/v1/products?category="+lamps+"&page_size=3", nil).json(t, &inCat)
	if len(inCat.Items) != 3 || inCat.NextPageToken == "" {
		t.Fatalf("category page = %d items, token %q", len(inCat.Items), inCat.NextPageToken)
	}
	for _, p := range inCat.Items {
		if !slices.Contains(p.CategoryIDs, lamps) {
			t.Fatalf("%s is not in the category", p.ID)
		}
	}
	// A token is bound to its filters.
	if r := in.do(t, "GET", "/v1/products?page_token="+inCat.NextPageToken, nil); r.status != http.StatusBadRequest {
		t.Fatalf("token reused without its filter: %d", r.status)
	}
}

func TestSearchRanksByRelevance(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	titleHit := in.mustProduct(t, map[string]any{"title": "Walnut Reading Lamp", "description": "Warm light.",
		"variants": []map[string]any{{"sku": "S-1", "price": map[string]any{"amount": 100, "currency": "EUR"}}}})
	descHit := in.mustProduct(t, map[string]any{"title": "Desk Organizer", "description": "Pairs well with a walnut lamp.",
		"variants": []map[string]any{{"sku": "S-2", "price": map[string]any{"amount": 100, "currency": "EUR"}}}})
	in.mustProduct(t, map[string]any{"title": "Steel Stool", "description": "Industrial.",
		"variants": []map[string]any{{"sku": "S-3", "price": map[string]any{"amount": 100, "currency": "EUR"}}}})

	var page struct{ Items []Product }
	in.do(t, "GET", "/v1/products?q=walnut+lamps", nil).json(t, &page)
	var ids []string
	for _, p := range page.Items {
		ids = append(ids, p.ID)
	}
	if !slices.Equal(ids, []string{titleHit.ID, descHit.ID}) {
		t.Fatalf("search order = %v, want title match %s before description match %s", ids, titleHit.ID, descHit.ID)
	}
	in.do(t, "GET", "/v1/products?q=-walnut+stool", nil).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].Title != "Steel Stool" {
		t.Fatalf("exclusion search = %+v", page.Items)
	}
}

// Two instances share Redis but each has its own process memory: a change
// through one must reach the other through the product.changed event, on
// either broker.
func TestChangesReachEveryInstanceWithinASecond(t *testing.T) {
	t.Parallel()
	for _, broker := range []string{"nats", "rabbitmq"} {
		t.Run(broker, func(t *testing.T) {
			t.Parallel()
			cfg := platformtest.Config(t)
			if broker == "rabbitmq" {
				cfg.Broker.URL = platformtest.AMQPURL()
			}
			changesReachEveryInstance(t, namespaceFor(t, cfg))
		})
	}
}

func changesReachEveryInstance(t *testing.T, plat platform) {
	a, b := start(t, plat), start(t, plat)
	p := a.mustProduct(t, productBody("Linen Throw", "THROW-1"))
	// Warm b's caches: detail in memory and Redis, list and search pages.
	b.do(t, "GET", "/v1/products/"+p.ID, nil)
	b.do(t, "GET", "/v1/products?q=linen", nil)
	b.do(t, "GET", "/v1/products", nil)

	if r := a.do(t, "PATCH", "/v1/admin/products/"+p.ID, map[string]any{"title": "Velvet Throw"}); r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	changed := time.Now()
	check := func(path string, ok func(response) bool) {
		t.Helper()
		platformtest.EventuallyWithin(t, 5*time.Second, path+" reflects the change", func() bool { return ok(b.do(t, "GET", path, nil)) })
		if took := time.Since(changed); took > time.Second {
			t.Errorf("%s took %s to reflect the change", path, took)
		}
	}
	check("/v1/products/"+p.ID, func(r response) bool { return bytes.Contains(r.body, []byte("Velvet Throw")) })
	check("/v1/products?q=velvet", func(r response) bool { return bytes.Contains(r.body, []byte(p.ID)) })
	check("/v1/products", func(r response) bool { return bytes.Contains(r.body, []byte("Velvet Throw")) })

	if r := a.do(t, "DELETE", "/v1/admin/products/"+p.ID, nil); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	changed = time.Now()
	check("/v1/products/"+p.ID, func(r response) bool { return r.status == http.StatusNotFound })
}

func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	body := productBody("Cork Board", "CORK-1")
	first := in.do(t, "POST", "/v1/admin/products", body, "Idempotency-Key", "create-cork-1")
	replay := in.do(t, "POST", "/v1/admin/products", body, "Idempotency-Key", "create-cork-1")
	if first.status != 201 || replay.status != 201 || !bytes.Equal(first.body, replay.body) || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d, replay %d (replayed=%q)", first.status, replay.status, replay.header.Get("Idempotent-Replayed"))
	}
	other := productBody("Cork Board", "CORK-2")
	if r := in.do(t, "POST", "/v1/admin/products", other, "Idempotency-Key", "create-cork-1"); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, other body: %d %s", r.status, r.body)
	}
	var page struct{ Items []Product }
	in.do(t, "GET", "/v1/products", nil).json(t, &page)
	if len(page.Items) != 1 {
		t.Fatalf("%d products, want 1", len(page.Items))
	}
}

func TestConcurrentPatchesLoseNoUpdate(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	p := in.mustProduct(t, productBody("Counter", "COUNT-1"))
	const writers = 10
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := in.do(t, "PATCH", "/v1/admin/products/"+p.ID, map[string]any{"variants": []map[string]any{{"sku": fmt.Sprintf("ADD-%d", i), "price": map[string]any{"amount": 1, "currency": "EUR"}}}})
			if r.status != 200 {
				t.Errorf("patch %d: %d %s", i, r.status, r.body)
			}
		}()
	}
	wg.Wait()
	var got Product
	in.do(t, "GET", "/v1/admin/products/"+p.ID, nil).json(t, &got)
	if len(got.Variants) != writers+1 {
		t.Fatalf("%d variants, want %d: concurrent patches lost updates", len(got.Variants), writers+1)
	}
}

// routeRecorder collects the patterns a service registers.
type routeRecorder []string

func (r *routeRecorder) Handle(pattern string, _ http.Handler) { *r = append(*r, pattern) }

// The OpenAPI fragment and the routes must describe the same operations: the
// gateway routes exactly what the document lists.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var routes routeRecorder
	a := &api{}
	a.public(&routes)
	a.admin(&routes, func(h http.Handler) http.Handler { return h })
	f, err := openapi.ParseFragment(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, op := range f.Operations() {
		documented = append(documented, op.Pattern())
	}
	sort.Strings(routes)
	if !slices.Equal(routes, documented) {
		t.Fatalf("routes and OpenAPI differ\nroutes:     %v\ndocumented: %v", routes, documented)
	}
}

// publishStock publishes inventory's stock.changed for a variant, as the
// inventory service would.
func publishStock(t *testing.T, cfg config.Config, sc StockChanged) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, &cfg, platformtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	env, err := events.New("inventory", EventStockChanged, sc.VariantID, sc)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(env)
	if err := b.Publish(ctx, events.Message{Topic: events.Topic(cfg.Namespace, "inventory", EventStockChanged), ID: env.ID, Body: body}); err != nil {
		t.Fatal(err)
	}
}

// Inventory owns stock; the catalog shows each variant's in_stock from its
// events within a second, and a late, older event does not undo a newer one.
func TestStockEventsSetInStock(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	in := start(t, cfg)
	p := in.mustProduct(t, productBody("Kite", "KITE-1"))
	q := in.mustProduct(t, productBody("Reel", "REEL-1"))
	variant, other := p.Variants[0].ID, q.Variants[0].ID
	inStock := func(productID string) bool {
		var got Product
		in.do(t, "GET", "/v1/products/"+productID, nil).json(t, &got)
		return got.Variants[0].InStock
	}
	if !inStock(p.ID) {
		t.Fatal("a new variant is not in stock")
	}

	publishStock(t, cfg.cfg, StockChanged{VariantID: variant, Available: 0, InStock: false, Version: 5})
	took := platformtest.EventuallyWithin(t, 10*time.Second, "the variant shows out of stock", func() bool { return !inStock(p.ID) })
	if took > time.Second {
		t.Errorf("stock.changed took %s to reach the product", took)
	}

	// An older event arrives late; then a newer one for another variant
	// marks when the late one has been handled.
	publishStock(t, cfg.cfg, StockChanged{VariantID: variant, Available: 3, InStock: true, Version: 3})
	publishStock(t, cfg.cfg, StockChanged{VariantID: other, Available: 0, InStock: false, Version: 1})
	platformtest.Eventually(t, "the marker event is applied", func() bool { return !inStock(q.ID) })
	if inStock(p.ID) {
		t.Fatal("an older stock.changed undid a newer one")
	}

	publishStock(t, cfg.cfg, StockChanged{VariantID: variant, Available: 7, InStock: true, Version: 6})
	platformtest.Eventually(t, "the variant is back in stock", func() bool { return inStock(p.ID) })
}
