package loadtest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/platformtest"
)

// fakeCatalog serves the three catalog endpoints browse uses over products
// prod_000…, each in one of three categories, and records what the load
// asked for.
type fakeCatalog struct {
	products   []fakeProduct
	categories []string

	mu          sync.Mutex
	details     map[string]int // product id → detail requests
	unknown     int            // detail requests for ids not in the catalog
	listOffsets map[int]int    // page offset of page_size=20 list requests → count
	listCats    map[string]int // category filter of list requests → count
	searches    map[string]int // q → count
}

type fakeProduct struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	CategoryIDs []string `json:"category_ids"`
}

func newFakeCatalog(t *testing.T, n int) *fakeCatalog {
	t.Helper()
	adjectives := []string{"Rustic", "Sleek", "Ergonomic", "Handmade", "Vintage", "Modern", "Compact"}
	things := []string{"lamp", "chair", "table", "kettle", "backpack", "notebook", "blanket", "mirror"}
	f := &fakeCatalog{
		categories:  []string{"cat_home", "cat_garden", "cat_office"},
		details:     map[string]int{},
		listOffsets: map[int]int{},
		listCats:    map[string]int{},
		searches:    map[string]int{},
	}
	for i := range n {
		f.products = append(f.products, fakeProduct{
			ID: fmt.Sprintf("prod_%03d", i),
			// Short words ("of", "a") must not become search terms.
			Title:       fmt.Sprintf("%s %s of a kind #%d", adjectives[i%len(adjectives)], things[i%len(things)], i),
			Description: `A "quoted" next_page_token, to confuse a careless scanner`,
			CategoryIDs: []string{f.categories[i%len(f.categories)]},
		})
	}
	return f
}

func (f *fakeCatalog) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/products", f.list)
	mux.HandleFunc("GET /v1/products/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		i := slices.IndexFunc(f.products, func(p fakeProduct) bool { return p.ID == id })
		f.mu.Lock()
		if i < 0 {
			f.unknown++
		} else {
			f.details[id]++
		}
		f.mu.Unlock()
		if i < 0 {
			http.NotFound(w, r)
			return
		}
		writeJSON(w, f.products[i])
	})
	mux.HandleFunc("GET /v1/categories", func(w http.ResponseWriter, r *http.Request) {
		type category struct{ ID, Slug, Name string }
		var items []category
		for _, c := range f.categories {
			items = append(items, category{c, strings.TrimPrefix(c, "cat_"), c})
		}
		writeJSON(w, map[string]any{"items": items})
	})
	return mux
}

func (f *fakeCatalog) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size, err := strconv.Atoi(q.Get("page_size"))
	if err != nil || size < 1 || size > 100 {
		http.Error(w, "bad page_size", http.StatusBadRequest)
		return
	}
	offset := 0
	if tok := q.Get("page_token"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			http.Error(w, "bad page_token", http.StatusBadRequest)
			return
		}
		if offset, err = strconv.Atoi(strings.TrimPrefix(string(raw), "offset:")); err != nil {
			http.Error(w, "bad page_token", http.StatusBadRequest)
			return
		}
	}
	category, term := q.Get("category"), q.Get("q")
	var matches []fakeProduct
	for _, p := range f.products {
		if (category == "" || slices.Contains(p.CategoryIDs, category)) &&
			(term == "" || strings.Contains(strings.ToLower(p.Title), term)) {
			matches = append(matches, p)
		}
	}
	if size == 20 {
		f.mu.Lock()
		if term != "" {
			f.searches[term]++
		} else {
			f.listOffsets[offset]++
			f.listCats[category]++
		}
		f.mu.Unlock()
	}
	page := struct {
		Items         []fakeProduct `json:"items"`
		NextPageToken string        `json:"next_page_token,omitempty"`
	}{Items: []fakeProduct{}}
	if offset < len(matches) {
		page.Items = matches[offset:min(offset+size, len(matches))]
	}
	if offset+size < len(matches) {
		page.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(offset+size)))
	}
	writeJSON(w, page)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func TestBrowse(t *testing.T) {
	const discover = 150 // fewer than the 250 products, and not a whole number of pages
	f := newFakeCatalog(t, 250)
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)

	var out bytes.Buffer
	opts := testOptions(t, srv.URL)
	opts.Out = &out
	opts.Browse.IDs = discover
	results, err := Run(t.Context(), "browse", opts)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("every case ran and printed a line with the documented fields", func(t *testing.T) {
		checkResultLines(t, &out, results, "browse/product_detail", "browse/list", "browse/search")
	})

	f.mu.Lock()
	defer f.mu.Unlock()

	t.Run("detail asked only for discovered ids", func(t *testing.T) {
		if len(f.details) == 0 || f.unknown > 0 {
			t.Fatalf("%d ids asked for, %d unknown", len(f.details), f.unknown)
		}
		discovered := f.products[:discover]
		for id := range f.details {
			if !slices.ContainsFunc(discovered, func(p fakeProduct) bool { return p.ID == id }) {
				t.Errorf("asked for %s, which was not among the first %d listed", id, discover)
			}
		}
	})

	t.Run("list followed page tokens for up to five pages", func(t *testing.T) {
		for offset, n := range f.listOffsets {
			if offset%20 != 0 || offset > 80 {
				t.Errorf("%d requests for offset %d, beyond a five-page walk", n, offset)
			}
		}
		for _, offset := range []int{0, 20, 40, 60, 80} {
			if f.listOffsets[offset] == 0 {
				t.Errorf("no list request for offset %d: %v", offset, f.listOffsets)
			}
		}
	})

	t.Run("list filtered by known categories half of the time", func(t *testing.T) {
		unfiltered, filtered := f.listCats[""], 0
		for c, n := range f.listCats {
			if c != "" {
				filtered += n
				if !slices.Contains(f.categories, c) {
					t.Errorf("filtered by unknown category %q", c)
				}
			}
		}
		if unfiltered == 0 || filtered == 0 {
			t.Errorf("%d unfiltered and %d filtered list requests, want both", unfiltered, filtered)
		}
	})

	t.Run("search used title words of four letters or more", func(t *testing.T) {
		if len(f.searches) == 0 {
			t.Fatal("no search request")
		}
		for term := range f.searches {
			found := slices.ContainsFunc(f.products[:discover], func(p fakeProduct) bool {
				return slices.Contains(strings.Fields(strings.ToLower(p.Title)), term)
			})
			if !found || len(term) < 4 || term != strings.ToLower(term) {
				t.Errorf("searched for %q", term)
			}
		}
	})
}

// checkResultLines checks that out holds one JSON line per case of
// wantCases, in order, each with the documented fields, some requests and
// no errors, and that results has as many entries.
func checkResultLines(t *testing.T, out *bytes.Buffer, results []Result, wantCases ...string) {
	t.Helper()
	wantFields := []string{"concurrency", "duration_s", "error_kinds", "errors", "p50_ms", "p95_ms", "p99_ms", "requests", "rps", "scenario"}
	sc := bufio.NewScanner(out)
	var lines int
	for sc.Scan() {
		var fields map[string]any
		if err := json.Unmarshal(sc.Bytes(), &fields); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", lines+1, err, sc.Bytes())
		}
		if got := slices.Sorted(maps.Keys(fields)); !slices.Equal(got, wantFields) {
			t.Errorf("line %d has fields %v, want %v", lines+1, got, wantFields)
		}
		if lines < len(wantCases) && fields["scenario"] != wantCases[lines] {
			t.Errorf("line %d is %v, want %s", lines+1, fields["scenario"], wantCases[lines])
		}
		if fields["errors"] != 0.0 || fields["requests"] == 0.0 || fields["rps"] == 0.0 {
			t.Errorf("line %d: %s", lines+1, sc.Bytes())
		}
		lines++
	}
	if lines != len(wantCases) || len(results) != len(wantCases) {
		t.Errorf("%d lines and %d results, want %d", lines, len(results), len(wantCases))
	}
}

func TestBrowseEmptyCatalog(t *testing.T) {
	srv := httptest.NewServer(newFakeCatalog(t, 0).handler())
	t.Cleanup(srv.Close)
	var out bytes.Buffer
	opts := testOptions(t, srv.URL)
	opts.Out = &out
	_, err := Run(t.Context(), "browse", opts)
	if err == nil || !strings.Contains(err.Error(), "mercato seed --products N") {
		t.Errorf("err = %v, want advice to seed the catalog", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q for an empty catalog", out.String())
	}
}

func TestBrowseUnreachable(t *testing.T) {
	opts := testOptions(t, "http://"+platformtest.ClosedAddr(t))
	opts.Timeout = time.Second
	_, err := Run(t.Context(), "browse", opts)
	if err == nil || !strings.Contains(err.Error(), "/v1/products") {
		t.Errorf("err = %v, want the failed discovery request", err)
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"browse", true},
		{"auth", true},
		{"flash-sale", true},
		{"checkout", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Lookup(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("Lookup(%q) = %v, %v", tt.name, s, err)
			}
			if tt.ok && s.Name() != tt.name {
				t.Errorf("Lookup(%q) is named %q", tt.name, s.Name())
			}
			if !tt.ok && !strings.Contains(err.Error(), "browse") {
				t.Errorf("error %q does not list the known scenarios", err)
			}
		})
	}
}

func TestNextPageToken(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"last field", `{"items":[{"id":"p1"}],"next_page_token":"b2Zmc2V0OjIw"}`, "b2Zmc2V0OjIw"},
		{"spaces", "{\"items\": [],\n  \"next_page_token\" : \"abc\"\n}", "abc"},
		{"absent on the last page", `{"items":[{"id":"p1"}]}`, ""},
		{"empty on the last page", `{"items":[],"next_page_token":""}`, ""},
		{"null", `{"items":[],"next_page_token":null}`, ""},
		{"a value that looks like the key", `{"items":[{"title":"next_page_token"}]}`, ""},
		{"the key inside a string", `{"items":[{"d":"\"next_page_token\":\"evil\""}],"next_page_token":"good"}`, "good"},
		{"escapes", `{"next_page_token":"a\u002Fb\"c"}`, `a/b"c`},
		{"not JSON", `<html>`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextPageToken([]byte(tt.body)); got != tt.want {
				t.Errorf("nextPageToken(%s) = %q, want %q", tt.body, got, tt.want)
			}
		})
	}
}

func TestTermSet(t *testing.T) {
	s := newTermSet()
	s.addWords("Rustic Lamp of OAK")
	s.addWords("rustic chair, 2024 edition; café-table")
	want := []string{"rustic", "lamp", "chair", "2024", "edition", "café", "table"}
	if !slices.Equal(s.terms, want) {
		t.Errorf("terms %q, want %q", s.terms, want)
	}
	if got := s.pick(3); !slices.Equal(got, []string{"rustic", "chair", "edition"}) {
		t.Errorf("pick(3) = %q, want three spread over all", got)
	}
	if got := s.pick(100); len(got) != len(want) {
		t.Errorf("pick(100) = %q, want all", got)
	}
}
