package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mercato/mercato/platform/httpapi"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/problem"
)

const maxQuery = 200

// maxSearchOffset bounds how deep search pages go; relevance-ranked results
// past it are not useful and cost a full ranking each time.
const maxSearchOffset = 10_000

// api translates HTTP to catalog operations and errors to problems.
type api struct {
	store  *Store
	read   *reader
	log    *slog.Logger
	maxAge func() time.Duration
	now    func() time.Time
}

// router is where routes are registered: the server's mux, or a recorder in
// the test that keeps routes and OpenAPI fragment in step.
type router interface {
	Handle(pattern string, h http.Handler)
}

// public registers the routes everyone may call.
func (a *api) public(mux router) {
	mux.Handle("GET /v1/products", a.handle(a.listProducts))
	mux.Handle("GET /v1/products/{id}", a.handle(a.getProduct))
	mux.Handle("GET /v1/categories", a.handle(a.listCategories))
	mux.Handle("GET /v1/categories/{id}", a.handle(a.getCategory))
}

// admin registers the routes that change the catalog; wrap applies the admin
// check and idempotency.
func (a *api) admin(mux router, wrap func(http.Handler) http.Handler) {
	mux.Handle("POST /v1/admin/products", wrap(a.handle(a.createProduct)))
	mux.Handle("PATCH /v1/admin/products/{id}", wrap(a.handle(a.updateProduct)))
	mux.Handle("DELETE /v1/admin/products/{id}", wrap(a.handle(a.deleteProduct)))
	mux.Handle("GET /v1/admin/products/{id}", wrap(a.handle(a.adminGetProduct)))
	mux.Handle("POST /v1/admin/categories", wrap(a.handle(a.createCategory)))
	mux.Handle("PATCH /v1/admin/categories/{id}", wrap(a.handle(a.updateCategory)))
	mux.Handle("DELETE /v1/admin/categories/{id}", wrap(a.handle(a.deleteCategory)))
}

func (a *api) handle(h httpapi.HandlerFunc) http.Handler {
	return httpapi.Handle(a.log, func(w http.ResponseWriter, r *http.Request) error {
		return toProblem(h(w, r))
	})
}

// toProblem is the one place catalog errors become HTTP problems.
func toProblem(err error) error {
	var (
		invalid  *ValidationError
		conflict *ConflictError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &invalid):
		return problem.Invalid(invalid.Fields...)
	case errors.As(err, &conflict):
		slug := "sku-taken"
		if conflict.Field == "slug" {
			slug = "slug-taken"
		}
		p := problem.Conflict(slug, conflict.Error())
		p.Errors = []problem.FieldError{{Field: conflict.Field, Message: "is already taken"}}
		return p
	case errors.Is(err, ErrNotFound):
		return problem.NotFound("no such resource")
	case errors.Is(err, ErrVersionMismatch):
		return problem.New(http.StatusPreconditionFailed, "precondition-failed", "the resource changed since the version in If-Match")
	case errors.Is(err, ErrCategoryInUse):
		return problem.Conflict("category-in-use", "products or subcategories still use this category")
	case errors.Is(err, context.DeadlineExceeded):
		return problem.Unavailable("the catalog database did not answer in time", time.Second)
	default:
		return err
	}
}

func (a *api) getProduct(w http.ResponseWriter, r *http.Request) error {
	pid := r.PathValue("id")
	if !id.Valid("prod", pid) {
		return ErrNotFound
	}
	v, err := a.read.product(r.Context(), pid)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("ETag", v.ETag)
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(a.maxAge().Seconds()))+", stale-while-revalidate=60")
	h.Set("Vary", "Accept-Encoding")
	if etagMatches(r.Header.Get("If-None-Match"), v.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(v.Body)))
	_, _ = w.Write(v.Body)
	return nil
}

// etagMatches implements If-None-Match's weak comparison.
func etagMatches(header, tag string) bool {
	if header == "" {
		return false
	}
	for _, candidate := range strings.Split(header, ",") {
		candidate = strings.TrimPrefix(strings.TrimSpace(candidate), "W/")
		if candidate == "*" || candidate == tag {
			return true
		}
	}
	return false
}

// listCursor is what a page token holds: where the next page starts and a
// fingerprint of the filters it belongs to.
type listCursor struct {
	After  string `json:"a,omitempty"`
	Offset int    `json:"o,omitempty"`
	Filter string `json:"f"`
}

func (a *api) listProducts(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	size, err := httpapi.PageSize(q)
	if err != nil {
		return err
	}
	text := strings.TrimSpace(q.Get("q"))
	category := q.Get("category")
	var errs []problem.FieldError
	if utf8.RuneCountInString(text) > maxQuery || !utf8.ValidString(text) {
		errs = append(errs, problem.FieldError{Field: "q", Message: "must be valid text of at most 200 characters"})
	}
	if category != "" && !id.Valid("cat", category) {
		errs = append(errs, problem.FieldError{Field: "category", Message: "is not a category id"})
	}
	if len(errs) > 0 {
		return problem.Invalid(errs...)
	}
	filter := fingerprint(text, category)
	var cur listCursor
	if ok, err := httpapi.DecodeToken(q, &cur); err != nil {
		return err
	} else if ok && cur.Filter != filter {
		return &problem.Problem{Type: problem.TypeURI("bad-request"), Title: "Bad Request", Status: http.StatusBadRequest,
			Detail: "page_token belongs to a list with other filters", Errors: []problem.FieldError{{Field: "page_token", Message: "was issued for different q or category"}}}
	}
	if cur.Offset < 0 || cur.Offset > maxSearchOffset {
		return problem.BadRequest("page_token points past the last searchable result")
	}
	key := filter + "|" + strconv.Itoa(size) + "|" + cur.After + "|" + strconv.Itoa(cur.Offset)
	body, err := a.read.pages.get(r.Context(), key, func(ctx context.Context) ([]byte, error) {
		var products []*Product
		var err error
		// One extra row tells whether another page follows.
		if text != "" {
			products, err = a.store.SearchProducts(ctx, text, category, cur.Offset, size+1)
		} else {
			products, err = a.store.ListProducts(ctx, category, cur.After, size+1)
		}
		if err != nil {
			return nil, err
		}
		page := httpapi.Page[*Product]{Items: products}
		if len(products) > size {
			page.Items = products[:size]
			next := listCursor{Filter: filter}
			if text != "" {
				next.Offset = cur.Offset + size
			} else {
				next.After = page.Items[size-1].ID
			}
			if next.Offset <= maxSearchOffset {
				page.NextPageToken, _ = httpapi.EncodeToken(next)
			}
		}
		var buf bytes.Buffer
		err = json.NewEncoder(&buf).Encode(page)
		return buf.Bytes(), err
	})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=5")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	return nil
}

func fingerprint(text, category string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(text) + "\x00" + category))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

func (a *api) listCategories(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	size := httpapi.MaxPageSize
	if q.Has("page_size") {
		var err error
		if size, err = httpapi.PageSize(q); err != nil {
			return err
		}
	}
	var cur struct {
		After string `json:"a"`
	}
	if _, err := httpapi.DecodeToken(q, &cur); err != nil {
		return err
	}
	body, err := a.read.pages.get(r.Context(), "categories|"+strconv.Itoa(size)+"|"+cur.After, func(ctx context.Context) ([]byte, error) {
		cats, err := a.store.ListCategories(ctx, cur.After, size+1)
		if err != nil {
			return nil, err
		}
		page := httpapi.Page[Category]{Items: cats}
		if len(cats) > size {
			page.Items = cats[:size]
			page.NextPageToken, _ = httpapi.EncodeToken(map[string]string{"a": cats[size-1].Slug})
		}
		var buf bytes.Buffer
		err = json.NewEncoder(&buf).Encode(page)
		return buf.Bytes(), err
	})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=30")
	_, _ = w.Write(body)
	return nil
}

func (a *api) createProduct(w http.ResponseWriter, r *http.Request) error {
	var in ProductInput
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	p, err := NewProduct(in, a.now())
	if err != nil {
		return err
	}
	if err := a.store.CreateProduct(r.Context(), p); err != nil {
		return err
	}
	a.afterWrite(r.Context(), p.ID, p.Version)
	w.Header().Set("Location", "/v1/products/"+p.ID)
	return a.writeProduct(w, http.StatusCreated, p)
}

func (a *api) updateProduct(w http.ResponseWriter, r *http.Request) error {
	pid := r.PathValue("id")
	if !id.Valid("prod", pid) {
		return ErrNotFound
	}
	ifVersion, err := ifMatchVersion(r)
	if err != nil {
		return err
	}
	var patch ProductPatch
	if err := httpapi.Decode(r, &patch); err != nil {
		return err
	}
	now := a.now()
	p, err := a.store.UpdateProduct(r.Context(), pid, ifVersion, func(p *Product) error { return p.Apply(patch, now) })
	if err != nil {
		return err
	}
	a.afterWrite(r.Context(), p.ID, p.Version)
	return a.writeProduct(w, http.StatusOK, p)
}

func (a *api) deleteProduct(w http.ResponseWriter, r *http.Request) error {
	pid := r.PathValue("id")
	if !id.Valid("prod", pid) {
		return ErrNotFound
	}
	version, err := a.store.DeleteProduct(r.Context(), pid)
	if err != nil {
		return err
	}
	a.afterWrite(r.Context(), pid, version)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// adminGetProduct reads straight from the database, bypassing caches, so an
// admin sees exactly what is stored.
func (a *api) adminGetProduct(w http.ResponseWriter, r *http.Request) error {
	pid := r.PathValue("id")
	if !id.Valid("prod", pid) {
		return ErrNotFound
	}
	p, err := a.store.GetProduct(r.Context(), pid)
	if err != nil {
		return err
	}
	return a.writeProduct(w, http.StatusOK, p)
}

// afterWrite invalidates this instance's caches at once; the product.changed
// event does the same on every other instance.
func (a *api) afterWrite(ctx context.Context, productID string, version int64) {
	if err := a.read.changed(ctx, productID, version); err != nil {
		a.log.WarnContext(ctx, "cache invalidation after write failed; the event will retry it", "product_id", productID, "err", err)
	}
}

func (a *api) writeProduct(w http.ResponseWriter, status int, p *Product) error {
	w.Header().Set("ETag", etag(p.Version))
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, status, p)
	return nil
}

// ifMatchVersion reads an If-Match header holding one product ETag.
func ifMatchVersion(r *http.Request) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return 0, nil
	}
	v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(h, `"v`), `"`), 10, 64)
	if err != nil || v < 1 {
		return 0, problem.BadRequest(`If-Match must be an ETag of this product, such as "v3"`)
	}
	return v, nil
}

func (a *api) getCategory(w http.ResponseWriter, r *http.Request) error {
	cid := r.PathValue("id")
	if !id.Valid("cat", cid) {
		return ErrNotFound
	}
	c, err := a.store.GetCategory(r.Context(), cid)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "public, max-age=30")
	httpapi.WriteJSON(w, http.StatusOK, c)
	return nil
}

func (a *api) createCategory(w http.ResponseWriter, r *http.Request) error {
	var in CategoryInput
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	c, err := NewCategory(in, a.now())
	if err != nil {
		return err
	}
	if err := a.store.CreateCategory(r.Context(), c); err != nil {
		return err
	}
	a.read.pages.purge()
	w.Header().Set("Location", "/v1/categories/"+c.ID)
	httpapi.WriteJSON(w, http.StatusCreated, c)
	return nil
}

func (a *api) updateCategory(w http.ResponseWriter, r *http.Request) error {
	cid := r.PathValue("id")
	if !id.Valid("cat", cid) {
		return ErrNotFound
	}
	var in CategoryInput
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	now := a.now()
	c, err := a.store.UpdateCategory(r.Context(), cid, func(c *Category) error { return c.Apply(in, now) })
	if err != nil {
		return err
	}
	a.read.pages.purge()
	httpapi.WriteJSON(w, http.StatusOK, c)
	return nil
}

func (a *api) deleteCategory(w http.ResponseWriter, r *http.Request) error {
	cid := r.PathValue("id")
	if !id.Valid("cat", cid) {
		return ErrNotFound
	}
	if err := a.store.DeleteCategory(r.Context(), cid); err != nil {
		return err
	}
	a.read.pages.purge()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
