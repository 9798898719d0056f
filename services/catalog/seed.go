package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/schollz/progressbar/v3"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/pg"
)

// demoCategories are the categories every seeded catalog has.
var demoCategories = []struct{ slug, name string }{
	{"furniture", "Furniture"}, {"lighting", "Lighting"}, {"kitchen", "Kitchen"},
	{"textiles", "Textiles"}, {"outdoor", "Outdoor"}, {"office", "Office"},
	{"apparel", "Apparel"}, {"footwear", "Footwear"}, {"bags", "Bags"},
	{"electronics", "Electronics"}, {"toys", "Toys"}, {"sports", "Sports"},
}

var (
	adjectives = []string{"Rustic", "Modern", "Classic", "Minimal", "Vintage", "Sleek", "Cozy", "Bold", "Nordic", "Urban",
		"Elegant", "Compact", "Deluxe", "Handmade", "Organic", "Ergonomic", "Lightweight", "Durable", "Premium", "Everyday"}
	materials = []string{"Oak", "Walnut", "Bamboo", "Linen", "Cotton", "Wool", "Leather", "Steel", "Brass", "Ceramic",
		"Glass", "Marble", "Velvet", "Canvas", "Cork", "Copper", "Rattan", "Denim", "Merino", "Recycled"}
	nouns = map[string][]string{
		"furniture":   {"Chair", "Table", "Bench", "Stool", "Shelf", "Sideboard", "Desk", "Sofa"},
		"lighting":    {"Lamp", "Pendant", "Sconce", "Lantern", "Floor Lamp", "Desk Light"},
		"kitchen":     {"Mug", "Bowl", "Plate", "Teapot", "Knife", "Cutting Board", "Pan", "Carafe"},
		"textiles":    {"Throw", "Cushion", "Rug", "Towel", "Blanket", "Curtain", "Napkin"},
		"outdoor":     {"Planter", "Hammock", "Lounger", "Parasol", "Grill", "Firepit"},
		"office":      {"Notebook", "Pen", "Organizer", "Monitor Stand", "Lamp", "Chair"},
		"apparel":     {"Shirt", "Sweater", "Jacket", "Scarf", "Hoodie", "Dress", "Coat"},
		"footwear":    {"Sneaker", "Boot", "Loafer", "Sandal", "Slipper", "Runner"},
		"bags":        {"Backpack", "Tote", "Duffel", "Wallet", "Satchel", "Messenger Bag"},
		"electronics": {"Speaker", "Headphones", "Charger", "Keyboard", "Mouse", "Clock"},
		"toys":        {"Puzzle", "Blocks", "Kite", "Robot", "Train", "Plush Bear"},
		"sports":      {"Yoga Mat", "Water Bottle", "Racket", "Ball", "Dumbbell", "Jump Rope"},
	}
	sizes  = []string{"S", "M", "L", "XL"}
	colors = []string{"Black", "White", "Sand", "Olive", "Navy", "Rust", "Grey", "Blush"}
	feats  = []string{"built to last for years", "made in a small family workshop", "easy to clean", "designed in Copenhagen",
		"finished by hand", "sustainably sourced", "with a lifetime guarantee", "ready in minutes", "perfect as a gift",
		"a best seller this season", "water resistant", "ships flat-packed"}
)

// SeedOptions control a bulk load.
type SeedOptions struct {
	Products int
	// Seed makes the generated catalog reproducible.
	Seed uint64
	// Progress, when set, shows a progress bar there.
	Progress io.Writer
	// Batch is how many products go in one COPY round.
	Batch int
}

// Seed bulk-loads generated products with PostgreSQL COPY, then publishes one
// catalog.reloaded event so every catalog instance drops its cached pages.
// It can run while the catalog serves; each run adds new products.
func Seed(ctx context.Context, pool *pgxpool.Pool, namespace string, opts SeedOptions) error {
	if opts.Batch <= 0 {
		opts.Batch = 5000
	}
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	cats, err := ensureDemoCategories(ctx, pool)
	if err != nil {
		return err
	}
	run := strings.ToUpper(id.New("seed")[len("seed_")+10:]) // the random part keeps SKUs of separate runs apart
	var bar *progressbar.ProgressBar
	if opts.Progress != nil {
		bar = progressbar.NewOptions(opts.Products,
			progressbar.OptionSetWriter(opts.Progress),
			progressbar.OptionSetDescription("seeding products"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("products"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(opts.Progress) }),
		)
	}
	for done := 0; done < opts.Products; {
		n := min(opts.Batch, opts.Products-done)
		if err := seedBatch(ctx, pool, rng, cats, run, done, n); err != nil {
			return err
		}
		done += n
		if bar != nil {
			_ = bar.Add(n)
		}
	}
	return pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		env, err := events.New(serviceName, EventCatalogReloaded, "catalog", map[string]int{"products_added": opts.Products})
		if err != nil {
			return err
		}
		return events.Add(ctx, tx, namespace, env)
	})
}

type seedCategory struct{ id, slug string }

func ensureDemoCategories(ctx context.Context, pool *pgxpool.Pool) ([]seedCategory, error) {
	out := make([]seedCategory, 0, len(demoCategories))
	for _, c := range demoCategories {
		var cid string
		err := pool.QueryRow(ctx, `INSERT INTO categories (id, slug, name) VALUES ($1, $2, $3)
			ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id`, id.New("cat"), c.slug, c.name).Scan(&cid)
		if err != nil {
			return nil, fmt.Errorf("seed category %s: %w", c.slug, err)
		}
		out = append(out, seedCategory{cid, c.slug})
	}
	return out, nil
}

func seedBatch(ctx context.Context, pool *pgxpool.Pool, rng *rand.Rand, cats []seedCategory, run string, offset, n int) error {
	now := time.Now().UTC()
	products := make([][]any, 0, n)
	variants := make([][]any, 0, n*3)
	links := make([][]any, 0, n*2)
	for i := range n {
		cat := cats[rng.IntN(len(cats))]
		adj, mat := adjectives[rng.IntN(len(adjectives))], materials[rng.IntN(len(materials))]
		noun := nouns[cat.slug][rng.IntN(len(nouns[cat.slug]))]
		title := adj + " " + mat + " " + noun
		desc := fmt.Sprintf("A %s %s %s in %s, %s and %s.", strings.ToLower(adj), strings.ToLower(mat), strings.ToLower(noun),
			strings.ToLower(colors[rng.IntN(len(colors))]), feats[rng.IntN(len(feats))], feats[rng.IntN(len(feats))])
		pid := id.New("prod")
		images, _ := json.Marshal([]Image{{URL: "https://picsum.photos/seed/" + pid + "/800/800", Alt: title}})
		products = append(products, []any{pid, title, desc, images, int64(1), now, now})
		base := int64(500 + rng.IntN(50_000))
		nv := 1 + rng.IntN(4)
		for v := range nv {
			vtitle, sku := title, fmt.Sprintf("SEED-%s-%d-%d", run, offset+i, v)
			if nv > 1 {
				if cat.slug == "apparel" || cat.slug == "footwear" {
					vtitle = title + " / " + sizes[v%len(sizes)]
				} else {
					vtitle = title + " / " + colors[v%len(colors)]
				}
			}
			variants = append(variants, []any{id.New("var"), pid, sku, vtitle, base + int64(v*100), "EUR", rng.IntN(10) != 0, v})
		}
		links = append(links, []any{pid, cat.id, 0})
		if extra := cats[rng.IntN(len(cats))]; rng.IntN(3) == 0 && extra.id != cat.id {
			links = append(links, []any{pid, extra.id, 1})
		}
	}
	return pg.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"products"}, []string{"id", "title", "description", "images", "version", "created_at", "updated_at"}, pgx.CopyFromRows(products)); err != nil {
			return fmt.Errorf("copy products: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"variants"}, []string{"id", "product_id", "sku", "title", "price_amount", "price_currency", "in_stock", "position"}, pgx.CopyFromRows(variants)); err != nil {
			return fmt.Errorf("copy variants: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"product_categories"}, []string{"product_id", "category_id", "position"}, pgx.CopyFromRows(links)); err != nil {
			return fmt.Errorf("copy category links: %w", err)
		}
		return nil
	})
}
