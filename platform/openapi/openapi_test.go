package openapi_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/mercato/mercato/platform/openapi"
)

// catalogYAML is a small service fragment that uses the shared components.
const catalogYAML = `
paths:
  /v1/products:
    parameters:
      - $ref: "#/components/parameters/PageSize"
      - $ref: "#/components/parameters/PageToken"
    summary: Products
    get:
      operationId: listProducts
      responses:
        "200":
          description: A page of products.
          content:
            application/json:
              schema: {$ref: "#/components/schemas/ProductPage"}
        "422": {$ref: "#/components/responses/Invalid"}
        "429": {$ref: "#/components/responses/RateLimited"}
  /v1/products/{id}:
    get:
      operationId: getProduct
      responses:
        "200":
          description: The product.
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Product"}
        "404": {$ref: "#/components/responses/NotFound"}
  /v1/admin/products:
    post:
      operationId: createProduct
      security: [{bearer: []}]
      parameters:
        - $ref: "#/components/parameters/IdempotencyKey"
      responses:
        "201": {description: Created.}
        "401": {$ref: "#/components/responses/Unauthorized"}
components:
  schemas:
    Product:
      type: object
      properties:
        id: {type: string}
        price: {$ref: "#/components/schemas/Money"}
    ProductPage:
      type: object
      properties:
        items: {type: array, items: {$ref: "#/components/schemas/Product"}}
        next_page_token: {type: string}
`

// cartYAML is a second service; it repeats Money exactly as Common has it.
const cartYAML = `
paths:
  /v1/carts/{id}:
    get:
      tags: [carts]
      responses:
        "200": {description: The cart.}
    delete:
      responses:
        "204": {description: Deleted.}
components:
  schemas:
    Money:
      type: object
      required: [amount, currency]
      properties:
        amount: {type: integer, minimum: 0, description: Amount in minor units (cents for EUR).}
        currency: {type: string, pattern: "^[A-Z]{3}$", description: ISO 4217 currency code.}
`

func TestParseFragment(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		wantErr string // "" means it parses
	}{
		{"YAML with paths", catalogYAML, ""},
		{"empty paths", "paths: {}\n", ""},
		{"JSON", `{"paths": {"/v1/x": {"get": {"responses": {"200": {"description": "ok"}}}}}}`, ""},
		{"no paths", "components:\n  schemas: {}\n", "no paths"},
		{"null paths", "paths:\n", "no paths"},
		{"paths as a list", "paths: [/v1/x]\n", "no paths"},
		{"empty document", "", "no paths"},
		{"bad YAML", "paths:\n  /v1/x:\n    get: [unclosed\n", "openapi fragment"},
		{"bad indentation", "paths:\n  /a: {}\n bad: 1\n", "openapi fragment"},
		{"a list, not a mapping", "- paths\n", "openapi fragment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := openapi.ParseFragment([]byte(tt.raw))
			if tt.wantErr == "" {
				if err != nil || f == nil {
					t.Fatalf("ParseFragment = %v, %v; want a fragment", f, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseFragment(%q) succeeded", tt.raw)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestOperations(t *testing.T) {
	f := parse(t, `
paths:
  /v1/b:
    summary: not an operation
    description: nor this
    parameters: [{name: q, in: query}]
    servers: [{url: "http://elsewhere"}]
    x-internal: true
    post: {responses: {"201": {description: ok}}}
    get: {responses: {"200": {description: ok}}}
  /v1/a/{id}:
    patch: {responses: {"200": {description: ok}}}
    delete: {responses: {"204": {description: ok}}}
    put: {}
    head: {}
    options: {}
    trace: {}
  /v1/empty: {}
  /v1/ref-only:
    $ref: "#/components/pathItems/X"
`)
	var got []string
	for _, op := range f.Operations() {
		got = append(got, op.Pattern())
	}
	want := []string{
		"DELETE /v1/a/{id}",
		"GET /v1/b",
		"HEAD /v1/a/{id}",
		"OPTIONS /v1/a/{id}",
		"PATCH /v1/a/{id}",
		"POST /v1/b",
		"PUT /v1/a/{id}",
		"TRACE /v1/a/{id}",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Operations() =\n  %q\nwant\n  %q", got, want)
	}

	t.Run("Pattern", func(t *testing.T) {
		op := openapi.Operation{Method: "GET", Path: "/v1/products/{id}"}
		if got := op.Pattern(); got != "GET /v1/products/{id}" {
			t.Errorf("Pattern() = %q", got)
		}
	})

	t.Run("no paths, no operations", func(t *testing.T) {
		if ops := parse(t, "paths: {}\n").Operations(); len(ops) != 0 {
			t.Errorf("Operations() = %v, want none", ops)
		}
	})
}

func TestOperationSecurity(t *testing.T) {
	f := parse(t, `
security: [{bearer: []}]
paths:
  /v1/me:
    get: {responses: {"200": {description: ok}}}
    patch:
      security: [{bearer: [profile, "profile:write"]}]
      responses: {"200": {description: ok}}
  /v1/products:
    get:
      security: []
      responses: {"200": {description: ok}}
  /v1/wishlist:
    get:
      security: [{}, {bearer: []}]
      responses: {"200": {description: ok}}
  /v1/orders:
    get:
      security: [{bearer: ["orders:read"]}, {bearer: [admin], clientBasic: []}]
      responses: {"200": {description: ok}}
components:
  securitySchemes:
    clientBasic: {type: http, scheme: basic}
    bearer: {type: http, scheme: bearer}
`)
	type want struct {
		security  string
		anonymous bool
	}
	wants := map[string]want{
		"GET /v1/me":       {"[map[bearer:[]]]", false}, // the fragment's
		"PATCH /v1/me":     {"[map[bearer:[profile profile:write]]]", false},
		"GET /v1/products": {"[]", true}, // an empty list overrides the fragment's
		"GET /v1/wishlist": {"[map[] map[bearer:[]]]", true},
		"GET /v1/orders":   {"[map[bearer:[orders:read]] map[bearer:[admin] clientBasic:[]]]", false},
	}
	ops := f.Operations()
	if len(ops) != len(wants) {
		t.Fatalf("%d operations, want %d", len(ops), len(wants))
	}
	for _, op := range ops {
		w, ok := wants[op.Pattern()]
		if !ok {
			t.Fatalf("unexpected operation %s", op.Pattern())
		}
		if got := fmt.Sprint(op.Security); got != w.security {
			t.Errorf("%s security %s, want %s", op.Pattern(), got, w.security)
		}
		if op.Anonymous() != w.anonymous {
			t.Errorf("%s Anonymous() = %v, want %v", op.Pattern(), op.Anonymous(), w.anonymous)
		}
	}
	if got := f.SecuritySchemes(); !slices.Equal(got, []string{"bearer", "clientBasic"}) {
		t.Errorf("SecuritySchemes() = %q", got)
	}

	t.Run("no security anywhere admits anyone", func(t *testing.T) {
		op := parse(t, "paths:\n  /v1/x:\n    get: {}\n").Operations()[0]
		if op.Security != nil || !op.Anonymous() {
			t.Errorf("security %v, anonymous %v", op.Security, op.Anonymous())
		}
	})
	t.Run("callers get copies", func(t *testing.T) {
		f.Operations()[4].Security[0]["bearer"][0] = "changed" // PATCH /v1/me
		if got := f.Operations()[4].Security[0]["bearer"][0]; got != "profile" {
			t.Errorf("the fragment changed through a returned operation: %q", got)
		}
	})
	t.Run("security it cannot read is an error", func(t *testing.T) {
		for _, raw := range []string{
			"security: {bearer: []}\npaths: {}\n",
			"paths:\n  /v1/x:\n    get: {security: {bearer: []}}\n",
			"paths:\n  /v1/x:\n    get: {security: [bearer]}\n",
			"paths:\n  /v1/x:\n    get: {security: [{bearer: admin}]}\n",
			"paths:\n  /v1/x:\n    get: {security: [{bearer: [[admin]]}]}\n",
			"paths:\n  /v1/x:\n    get: {security: [{bearer: [\"\"]}]}\n",
		} {
			if _, err := openapi.ParseFragment([]byte(raw)); err == nil || !strings.Contains(err.Error(), "security") {
				t.Errorf("ParseFragment(%q) = %v, want a security error", raw, err)
			}
		}
	})
}

func TestAssemble(t *testing.T) {
	const publicURL = "https://shop.example.com"
	base := parse(t, string(openapi.Common))
	raw := assemble(t, publicURL, base, map[string]string{"catalog": catalogYAML, "cart": cartYAML})
	doc := decode(t, raw)

	t.Run("document header", func(t *testing.T) {
		if doc["openapi"] != "3.1.0" {
			t.Errorf("openapi = %v, want 3.1.0", doc["openapi"])
		}
		if got := lookup(doc, "servers", 0, "url"); got != publicURL {
			t.Errorf("servers[0].url = %v, want %s", got, publicURL)
		}
		if got := lookup(doc, "info", "title"); got == nil || got == "" {
			t.Error("info.title is missing")
		}
		if got := lookup(doc, "info", "version"); got == nil || got == "" {
			t.Error("info.version is missing")
		}
		if got := fmt.Sprint(doc["tags"]); got != "[map[name:cart] map[name:catalog]]" {
			t.Errorf("tags = %s, want cart and catalog in order", got)
		}
	})

	t.Run("paths of every fragment", func(t *testing.T) {
		paths := doc["paths"].(map[string]any)
		var got []string
		for p := range paths {
			got = append(got, p)
		}
		sort.Strings(got)
		want := []string{"/v1/admin/products", "/v1/carts/{id}", "/v1/products", "/v1/products/{id}"}
		if !slices.Equal(got, want) {
			t.Errorf("paths = %q, want %q", got, want)
		}
		if got := lookup(doc, "paths", "/v1/products", "parameters", 0, "$ref"); got != "#/components/parameters/PageSize" {
			t.Errorf("path-level parameters lost: %v", got)
		}
	})

	t.Run("operations are tagged with their service", func(t *testing.T) {
		tests := []struct {
			path, method, want string
		}{
			{"/v1/products", "get", "[catalog]"},
			{"/v1/products/{id}", "get", "[catalog]"},
			{"/v1/admin/products", "post", "[catalog]"},
			{"/v1/carts/{id}", "delete", "[cart]"},
			{"/v1/carts/{id}", "get", "[carts]"}, // its own tags are kept
		}
		for _, tt := range tests {
			if got := fmt.Sprint(lookup(doc, "paths", tt.path, tt.method, "tags")); got != tt.want {
				t.Errorf("%s %s tags = %s, want %s", tt.method, tt.path, got, tt.want)
			}
		}
		if got := lookup(doc, "paths", "/v1/products", "parameters", "tags"); got != nil {
			t.Errorf("a non-operation key was tagged: %v", got)
		}
	})

	t.Run("components of the base and every fragment", func(t *testing.T) {
		for _, ref := range []string{
			"schemas/Money", "schemas/Problem", "schemas/FieldError", "schemas/Product", "schemas/ProductPage",
			"parameters/PageSize", "responses/NotFound", "headers/RetryAfter", "securitySchemes/bearer",
		} {
			kind, name, _ := strings.Cut(ref, "/")
			if lookup(doc, "components", kind, name) == nil {
				t.Errorf("component %s is missing", ref)
			}
		}
	})

	t.Run("every $ref resolves", func(t *testing.T) {
		refs := refsIn(doc)
		if len(refs) < 10 {
			t.Fatalf("found only %d $refs; the walk is broken", len(refs))
		}
		if bad := unresolved(doc); len(bad) > 0 {
			t.Errorf("unresolved $refs: %q", bad)
		}
	})

	t.Run("the same input gives the same bytes", func(t *testing.T) {
		again := assemble(t, publicURL, parse(t, string(openapi.Common)), map[string]string{"cart": cartYAML, "catalog": catalogYAML})
		if string(again) != string(raw) {
			t.Error("Assemble is not deterministic")
		}
	})
}

func TestAssembleRefusesAmbiguity(t *testing.T) {
	base := parse(t, `
paths:
  /ignored: {get: {responses: {"200": {description: ok}}}}
components:
  schemas:
    Money: {type: object}
`)
	tests := []struct {
		name      string
		fragments map[string]string
		wantErr   []string // parts of the error; none means success
	}{
		{name: "one path in two services",
			fragments: map[string]string{
				"catalog": "paths:\n  /v1/products: {get: {}}\n",
				"search":  "paths:\n  /v1/products: {post: {}}\n",
			},
			wantErr: []string{"/v1/products", "catalog", "search"}},
		{name: "one component with different content",
			fragments: map[string]string{
				"catalog": "paths: {}\ncomponents: {schemas: {Product: {type: object}}}\n",
				"order":   "paths: {}\ncomponents: {schemas: {Product: {type: string}}}\n",
			},
			wantErr: []string{"schemas/Product"}},
		{name: "a service contradicting the base",
			fragments: map[string]string{
				"cart": "paths: {}\ncomponents: {schemas: {Money: {type: string}}}\n",
			},
			wantErr: []string{"schemas/Money", "cart"}},
		{name: "identical duplicates are fine",
			fragments: map[string]string{
				"catalog": "paths: {}\ncomponents: {schemas: {Money: {type: object}, Id: {type: string}}}\n",
				"order":   "paths: {}\ncomponents: {schemas: {Id: {type: string}}}\n",
			}},
		{name: "the same name under different kinds is fine",
			fragments: map[string]string{
				"catalog": "paths: {}\ncomponents: {schemas: {Product: {type: object}}}\n",
				"order":   "paths: {}\ncomponents: {responses: {Product: {description: x}}}\n",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fragments := map[string]*openapi.Fragment{}
			for name, raw := range tt.fragments {
				fragments[name] = parse(t, raw)
			}
			out, err := openapi.Assemble("http://127.0.0.1:8080", base, fragments)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Assemble: %v", err)
				}
				if lookup(decode(t, out), "paths", "/ignored") != nil {
					t.Error("the base's paths reached the document")
				}
				return
			}
			if err == nil {
				t.Fatalf("Assemble succeeded:\n%s", out)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

func TestAssembleEdgeCases(t *testing.T) {
	base := parse(t, string(openapi.Common))

	t.Run("no services: empty paths and tags, not null", func(t *testing.T) {
		doc := decode(t, assemble(t, "http://127.0.0.1:8080", base, nil))
		if got, ok := doc["tags"].([]any); !ok || len(got) != 0 {
			t.Errorf("tags = %#v, want []", doc["tags"])
		}
		if got, ok := doc["paths"].(map[string]any); !ok || len(got) != 0 {
			t.Errorf("paths = %#v, want {}", doc["paths"])
		}
	})

	t.Run("unquoted response codes", func(t *testing.T) {
		doc := decode(t, assemble(t, "http://127.0.0.1:8080", base, map[string]string{
			"catalog": "paths:\n  /v1/x:\n    get:\n      responses:\n        200: {description: ok}\n        404: {$ref: '#/components/responses/NotFound'}\n",
		}))
		if lookup(doc, "paths", "/v1/x", "get", "responses", "200", "description") != "ok" {
			t.Errorf("response 200 lost: %v", lookup(doc, "paths", "/v1/x", "get", "responses"))
		}
		if bad := unresolved(doc); len(bad) > 0 {
			t.Errorf("unresolved $refs: %q", bad)
		}
	})
}

func TestCommon(t *testing.T) {
	f, err := openapi.ParseFragment(openapi.Common)
	if err != nil {
		t.Fatalf("Common does not parse: %v", err)
	}
	if ops := f.Operations(); len(ops) != 0 {
		t.Errorf("Common has operations %v; it should hold components only", ops)
	}
	doc := decode(t, assemble(t, "http://127.0.0.1:8080", f, nil))
	if bad := unresolved(doc); len(bad) > 0 {
		t.Errorf("Common's own $refs do not resolve: %q", bad)
	}
	for _, ref := range []string{"schemas/Problem", "schemas/Money", "parameters/PageSize", "parameters/PageToken", "responses/RateLimited"} {
		kind, name, _ := strings.Cut(ref, "/")
		if lookup(doc, "components", kind, name) == nil {
			t.Errorf("Common lacks %s", ref)
		}
	}
}

// TestUnresolved checks the checker: a test built on it can only fail if it
// notices a dangling reference.
func TestUnresolved(t *testing.T) {
	doc := decode(t, []byte(`{
		"paths": {"/x": {"get": {"responses": {
			"200": {"$ref": "#/components/responses/Ok"},
			"404": {"$ref": "#/components/responses/Missing"},
			"500": {"content": {"a/b": {"schema": {"items": [{"$ref": "#/components/schemas/Gone"}]}}}}
		}}}},
		"components": {"responses": {"Ok": {"$ref": "external.yaml#/Ok"}}}
	}`))
	want := []string{"#/components/responses/Missing", "#/components/schemas/Gone", "external.yaml#/Ok"}
	if got := unresolved(doc); !slices.Equal(got, want) {
		t.Errorf("unresolved = %q, want %q", got, want)
	}
}

// parse reads a fragment that must be valid.
func parse(t *testing.T, raw string) *openapi.Fragment {
	t.Helper()
	f, err := openapi.ParseFragment([]byte(raw))
	if err != nil {
		t.Fatalf("ParseFragment: %v\n%s", err, raw)
	}
	return f
}

// assemble builds a document from base and the named fragments, which must
// succeed.
func assemble(t *testing.T, publicURL string, base *openapi.Fragment, fragments map[string]string) []byte {
	t.Helper()
	fs := map[string]*openapi.Fragment{}
	for name, raw := range fragments {
		fs[name] = parse(t, raw)
	}
	out, err := openapi.Assemble(publicURL, base, fs)
	if err != nil {
		t.Fatalf("Assemble: %v", err)
	}
	return out
}

// decode parses an assembled document, which must be JSON.
func decode(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("document is not JSON: %v\n%s", err, raw)
	}
	return doc
}

// lookup walks doc by object keys and array indices, returning nil where the
// path leads nowhere.
func lookup(doc any, path ...any) any {
	cur := doc
	for _, step := range path {
		switch s := step.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[s]
		case int:
			a, ok := cur.([]any)
			if !ok || s >= len(a) {
				return nil
			}
			cur = a[s]
		}
	}
	return cur
}

// refsIn lists every "$ref" value in v.
func refsIn(v any) []string {
	var refs []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && k == "$ref" {
				refs = append(refs, s)
				continue
			}
			refs = append(refs, refsIn(e)...)
		}
	case []any:
		for _, e := range v {
			refs = append(refs, refsIn(e)...)
		}
	}
	return refs
}

// unresolved lists, sorted and without repeats, the $refs of doc that are not
// "#/components/<kind>/<name>" naming an existing component.
func unresolved(doc map[string]any) []string {
	var bad []string
	for _, ref := range refsIn(doc) {
		rest, ok := strings.CutPrefix(ref, "#/components/")
		kind, name, ok2 := strings.Cut(rest, "/")
		if !ok || !ok2 || strings.Contains(name, "/") || lookup(doc, "components", kind, name) == nil {
			bad = append(bad, ref)
		}
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}

func TestPublicMeansAnExplicitlyEmptySecurity(t *testing.T) {
	f, err := openapi.ParseFragment([]byte(`
security: [{bearer: []}]
paths:
  /login:
    post: {security: []}
  /me:
    get: {}
  /open:
    get: {security: [{}]}
components:
  securitySchemes:
    bearer: {type: http, scheme: bearer}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"POST /login": true, "GET /me": false, "GET /open": false}
	for _, op := range f.Operations() {
		if got := op.Public(); got != want[op.Pattern()] {
			t.Errorf("%s: Public() = %v, want %v", op.Pattern(), got, want[op.Pattern()])
		}
	}
}
