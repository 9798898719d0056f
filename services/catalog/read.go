package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/cache"
)

// view is a product rendered for the public API: its JSON body and ETag,
// computed once per version and served from cache.
type view struct {
	Body []byte
	ETag string
}

// viewCodec stores a view in Redis as "<etag>\n<body>".
type viewCodec struct{}

func (viewCodec) Marshal(v view) ([]byte, error) {
	out := make([]byte, 0, len(v.ETag)+1+len(v.Body))
	out = append(out, v.ETag...)
	out = append(out, '\n')
	return append(out, v.Body...), nil
}

func (viewCodec) Unmarshal(b []byte) (view, error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return view{}, fmt.Errorf("cached product view without etag")
	}
	return view{ETag: string(b[:i]), Body: b[i+1:]}, nil
}

// etag is the entity tag of a product version.
func etag(version int64) string { return `"v` + strconv.FormatInt(version, 10) + `"` }

func render(p *Product) (view, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return view{}, err
	}
	return view{Body: body, ETag: etag(p.Version)}, nil
}

// reader serves the public read path: product detail through the two-tier
// cache, list and search pages through an in-process cache that every
// catalog change empties.
type reader struct {
	store    *Store
	products *cache.Cache[view]
	pages    *pageCache
}

func (r *reader) product(ctx context.Context, id string) (view, error) {
	return r.products.Get(ctx, id, func(ctx context.Context) (view, int64, error) {
		p, err := r.store.GetProduct(ctx, id)
		if err != nil {
			return view{}, 0, err
		}
		v, err := render(p)
		return v, p.Version, err
	})
}

// changed reacts to a product.changed event (or the local write that caused
// it): drop the product's stale views and every cached page.
func (r *reader) changed(ctx context.Context, productID string, version int64) error {
	r.pages.purge()
	return r.products.Invalidate(ctx, productID, version)
}

// pageCache keeps rendered list and search pages in process memory. Any
// change to the catalog starts a new generation; pages of older generations
// are never served again and age out. Because a page is stored under the
// generation its load began in, a load that raced a change can never put a
// stale page into the current generation.
type pageCache struct {
	gen   atomic.Uint64
	cache *otter.Cache[string, []byte]
	hits  prometheus.Counter
	loads prometheus.Counter
}

func newPageCache(size int, ttl time.Duration, reg prometheus.Registerer) (*pageCache, error) {
	c, err := otter.New(&otter.Options[string, []byte]{
		MaximumSize:      size,
		ExpiryCalculator: otter.ExpiryWriting[string, []byte](ttl),
	})
	if err != nil {
		return nil, err
	}
	p := &pageCache{
		cache: c,
		hits:  prometheus.NewCounter(prometheus.CounterOpts{Name: "catalog_page_cache_hits_total", Help: "List and search pages served from process memory."}),
		loads: prometheus.NewCounter(prometheus.CounterOpts{Name: "catalog_page_cache_loads_total", Help: "List and search pages rendered from the database."}),
	}
	reg.MustRegister(p.hits, p.loads)
	return p, nil
}

// get returns the page for key, rendering it with load at most once at a
// time per key.
func (p *pageCache) get(ctx context.Context, key string, load func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	k := strconv.FormatUint(p.gen.Load(), 10) + "|" + key
	loaded := false
	body, err := p.cache.Get(ctx, k, otter.LoaderFunc[string, []byte](func(ctx context.Context, _ string) ([]byte, error) {
		loaded = true
		return load(ctx)
	}))
	if loaded {
		p.loads.Inc()
	} else if err == nil {
		p.hits.Inc()
	}
	return body, err
}

func (p *pageCache) purge() { p.gen.Add(1) }
