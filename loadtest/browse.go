package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// browsePageSize is the page size of the measured list and search
	// requests, the API's default.
	browsePageSize = "20"
	// listWalkPages is how many pages a worker follows before it starts a
	// new walk from the first page, so that later pages are exercised too.
	listWalkPages = 5
	// maxSearchTerms bounds the search words taken from product titles.
	maxSearchTerms = 300
	// minTermLength is the shortest title word used as a search term, in
	// letters, so that terms are words rather than stop words.
	minTermLength = 4
)

// browse is the read-only storefront workload: product detail, list and
// search, each driven as its own case.
type browse struct{}

func (browse) Name() string { return "browse" }

func (browse) Run(ctx context.Context, opts Options) ([]Result, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cat, err := discoverCatalog(ctx, opts)
	if err != nil {
		return nil, err
	}
	opts.Log.Info("browse setup done", "ids", len(cat.ids), "categories", len(cat.categories), "search_terms", len(cat.terms))
	cases := []struct {
		name string
		next NextFunc
	}{
		{"browse/product_detail", cat.detailCase()},
		{"browse/list", cat.listCase(opts.Concurrency)},
		{"browse/search", cat.searchCase()},
	}
	var results []Result
	for _, c := range cases {
		r, err := Drive(ctx, opts, c.name, c.next)
		if err != nil {
			if r.Requests > 0 {
				results = append(results, r) // interrupted: report what was measured
			}
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

// catalog is what browse setup learned about the running catalog.
type catalog struct {
	ids        []string
	categories []string
	terms      []string
}

// discoverCatalog pages through the products until it has opts.Browse.IDs
// ids, reads the categories and picks search words from product titles.
func discoverCatalog(ctx context.Context, opts Options) (*catalog, error) {
	t, err := parseTarget(opts.BaseURL)
	if err != nil {
		return nil, err
	}
	tr := newTransport(ctx, t, 1, opts.Timeout)
	defer tr.close()
	c := newClient(tr)
	get := func(path string, v any) error {
		resp, err := c.do(&Request{Path: path}, time.Now().Add(opts.Timeout))
		if errorKind(err) == KindConnect {
			return fmt.Errorf("GET %s%s: %w (is the platform running there?)", opts.BaseURL, path, err)
		}
		if err != nil {
			return fmt.Errorf("GET %s%s: %w", opts.BaseURL, path, err)
		}
		if resp.Status != 200 {
			return fmt.Errorf("GET %s%s: status %d: %s", opts.BaseURL, path, resp.Status, snippet(resp.Body))
		}
		if err := json.Unmarshal(resp.Body, v); err != nil {
			return fmt.Errorf("GET %s%s: decode: %w", opts.BaseURL, path, err)
		}
		return nil
	}

	cat := &catalog{}
	seen := map[string]bool{}
	words := newTermSet()
	token := ""
	for len(cat.ids) < opts.Browse.IDs {
		path := "/v1/products?page_size=100"
		if token != "" {
			path += "&page_token=" + url.QueryEscape(token)
		}
		var page struct {
			Items []struct {
				ID    string `json:"id"`
				Title string `json:"title"`
			} `json:"items"`
			NextPageToken string `json:"next_page_token"`
		}
		if err := get(path, &page); err != nil {
			return nil, fmt.Errorf("discover products: %w", err)
		}
		for _, p := range page.Items {
			if p.ID == "" || seen[p.ID] || len(cat.ids) == opts.Browse.IDs {
				continue
			}
			seen[p.ID] = true
			cat.ids = append(cat.ids, p.ID)
			words.addWords(p.Title)
		}
		if page.NextPageToken == "" || len(page.Items) == 0 {
			break
		}
		token = page.NextPageToken
	}
	if len(cat.ids) == 0 {
		return nil, fmt.Errorf("the catalog at %s has no products; seed it with `mercato seed --products N`", opts.BaseURL)
	}

	var categories struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if err := get("/v1/categories", &categories); err != nil {
		return nil, fmt.Errorf("discover categories: %w", err)
	}
	for _, c := range categories.Items {
		if c.ID != "" {
			cat.categories = append(cat.categories, c.ID)
		}
	}

	cat.terms = words.pick(maxSearchTerms)
	if len(cat.terms) == 0 {
		return nil, fmt.Errorf("no search terms: the titles of the %d products discovered have no words of %d or more letters", len(cat.ids), minTermLength)
	}
	return cat, nil
}

// termSet collects distinct lowercased title words in the order found.
type termSet struct {
	seen  map[string]bool
	terms []string
}

func newTermSet() *termSet { return &termSet{seen: map[string]bool{}} }

func (s *termSet) addWords(title string) {
	for _, w := range strings.FieldsFunc(strings.ToLower(title), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		if utf8.RuneCountInString(w) >= minTermLength && !s.seen[w] {
			s.seen[w] = true
			s.terms = append(s.terms, w)
		}
	}
}

// pick returns at most n terms spread evenly over all that were found, so
// that words of later products are searched too.
func (s *termSet) pick(n int) []string {
	if len(s.terms) <= n {
		return s.terms
	}
	out := make([]string, n)
	for i := range out {
		out[i] = s.terms[i*len(s.terms)/n]
	}
	return out
}

// detailCase asks for random discovered products.
func (c *catalog) detailCase() NextFunc {
	paths := make([]string, len(c.ids))
	for i, id := range c.ids {
		paths[i] = "/v1/products/" + url.PathEscape(id)
	}
	return func(_ int, rng *rand.Rand, _ Response) Request {
		return Request{Path: paths[rng.IntN(len(paths))]}
	}
}

// listCase makes each worker walk the product list, unfiltered or in a
// random category half of the time each, for up to listWalkPages pages.
func (c *catalog) listCase(concurrency int) NextFunc {
	unfiltered := "/v1/products?page_size=" + browsePageSize
	byCategory := make([]string, len(c.categories))
	for i, id := range c.categories {
		byCategory[i] = unfiltered + "&category=" + url.QueryEscape(id)
	}
	type walk struct {
		first string // the walk's first page
		pages int    // pages requested so far
	}
	walks := make([]walk, concurrency)
	return func(worker int, rng *rand.Rand, prev Response) Request {
		w := &walks[worker]
		if w.pages > 0 && w.pages < listWalkPages && prev.Status == 200 {
			if token := nextPageToken(prev.Body); token != "" {
				w.pages++
				return Request{Path: w.first + "&page_token=" + url.QueryEscape(token)}
			}
		}
		w.first, w.pages = unfiltered, 1
		if len(byCategory) > 0 && rng.IntN(2) == 0 {
			w.first = byCategory[rng.IntN(len(byCategory))]
		}
		return Request{Path: w.first}
	}
}

// searchCase searches for random title words.
func (c *catalog) searchCase() NextFunc {
	paths := make([]string, len(c.terms))
	for i, term := range c.terms {
		paths[i] = "/v1/products?q=" + url.QueryEscape(term) + "&page_size=" + browsePageSize
	}
	return func(_ int, rng *rand.Rand, _ Response) Request {
		return Request{Path: paths[rng.IntN(len(paths))]}
	}
}

// nextPageToken finds the list's next_page_token without decoding the whole
// page, which would cost more than the request itself. It looks for the last
// "next_page_token" followed by a colon, since the token follows the items:
// inside a string value the quotes would be escaped, and a string value that
// is exactly next_page_token is not followed by a colon.
func nextPageToken(body []byte) string {
	const key = `"next_page_token"`
	i := bytes.LastIndex(body, []byte(key))
	if i < 0 {
		return ""
	}
	return jsonString(valueAfterKey(body[i+len(key):]))
}

// valueAfterKey returns the JSON value that rest starts with after a colon,
// where rest follows a quoted name; nil when no colon follows, because the
// name was a string value rather than a key.
func valueAfterKey(rest []byte) []byte {
	rest = bytes.TrimLeft(rest, " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return nil
	}
	return bytes.TrimLeft(rest[1:], " \t\r\n")
}

// jsonString returns the JSON string that v starts with, and "" when v
// starts with another value, such as null.
func jsonString(v []byte) string {
	if len(v) == 0 || v[0] != '"' {
		return ""
	}
	end := bytes.IndexByte(v[1:], '"')
	if end < 0 {
		return ""
	}
	s := v[1 : 1+end]
	if bytes.IndexByte(s, '\\') >= 0 {
		// An escape: the closing quote may be escaped too, so let the JSON
		// decoder read the string.
		var decoded string
		if json.NewDecoder(bytes.NewReader(v)).Decode(&decoded) != nil {
			return ""
		}
		return decoded
	}
	return string(s)
}

// snippet shortens a response body for an error message.
func snippet(body []byte) string {
	const maxLen = 200
	s := strings.TrimSpace(string(body))
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "…"
	}
	return s
}
