package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/problem"
)

// Event types the catalog publishes.
const (
	EventProductChanged  = "product.changed"
	EventCategoryChanged = "category.changed"
	EventCatalogReloaded = "catalog.reloaded"
)

// ProductChanged is the data of a product.changed event.
type ProductChanged struct {
	ProductID string `json:"product_id"`
	Version   int64  `json:"version"`
	// Change is created, updated or deleted.
	Change string `json:"change"`
}

// Store keeps the catalog in its PostgreSQL database; every change writes its
// event to the outbox in the same transaction.
type Store struct {
	pool      *pgxpool.Pool
	namespace string
}

// NewStore returns a store over pool; namespace names the event topics.
func NewStore(pool *pgxpool.Pool, namespace string) *Store {
	return &Store{pool: pool, namespace: namespace}
}

func (s *Store) publish(ctx context.Context, tx pgx.Tx, typ, subject string, data any) error {
	env, err := events.New(serviceName, typ, subject, data)
	if err != nil {
		return err
	}
	return events.Add(ctx, tx, s.namespace, env)
}

// CreateProduct stores a new product with its variants and categories.
func (s *Store) CreateProduct(ctx context.Context, p *Product) error {
	return pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkCategories(ctx, tx, p.CategoryIDs); err != nil {
			return err
		}
		images, _ := json.Marshal(p.Images)
		if _, err := tx.Exec(ctx, `INSERT INTO products (id, title, description, images, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $6)`, p.ID, p.Title, p.Description, images, p.Version, p.CreatedAt); err != nil {
			return fmt.Errorf("insert product: %w", err)
		}
		for i := range p.Variants {
			if err := insertVariant(ctx, tx, p.ID, i, &p.Variants[i]); err != nil {
				return err
			}
		}
		if err := setCategories(ctx, tx, p.ID, p.CategoryIDs); err != nil {
			return err
		}
		return s.publish(ctx, tx, EventProductChanged, p.ID, ProductChanged{ProductID: p.ID, Version: p.Version, Change: "created"})
	})
}

// UpdateProduct changes a product inside a transaction: it locks the row,
// hands the current product to fn and stores what fn leaves. ifVersion, when
// non-zero, must equal the stored version (optimistic concurrency from
// If-Match).
func (s *Store) UpdateProduct(ctx context.Context, id string, ifVersion int64, fn func(*Product) error) (*Product, error) {
	var out *Product
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		ps, err := loadProducts(ctx, tx, []string{id}, true)
		if err != nil {
			return err
		}
		if len(ps) == 0 {
			return ErrNotFound
		}
		p := ps[0]
		if ifVersion != 0 && p.Version != ifVersion {
			return ErrVersionMismatch
		}
		before := make(map[string]Variant, len(p.Variants))
		for _, v := range p.Variants {
			before[v.ID] = v
		}
		if err := fn(p); err != nil {
			return err
		}
		if err := checkCategories(ctx, tx, p.CategoryIDs); err != nil {
			return err
		}
		images, _ := json.Marshal(p.Images)
		if _, err := tx.Exec(ctx, `UPDATE products SET title = $2, description = $3, images = $4, version = $5, updated_at = $6 WHERE id = $1`,
			p.ID, p.Title, p.Description, images, p.Version, p.UpdatedAt); err != nil {
			return fmt.Errorf("update product: %w", err)
		}
		for i := range p.Variants {
			v := &p.Variants[i]
			old, existed := before[v.ID]
			switch {
			case !existed:
				if err := insertVariant(ctx, tx, p.ID, i, v); err != nil {
					return err
				}
			case old != *v:
				if _, err := tx.Exec(ctx, `UPDATE variants SET sku = $2, title = $3, price_amount = $4, price_currency = $5, in_stock = $6 WHERE id = $1`,
					v.ID, v.SKU, v.Title, v.Price.Amount, v.Price.Currency, v.InStock); err != nil {
					return variantError(err, i, v.SKU)
				}
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM product_categories WHERE product_id = $1`, p.ID); err != nil {
			return err
		}
		if err := setCategories(ctx, tx, p.ID, p.CategoryIDs); err != nil {
			return err
		}
		out = p
		return s.publish(ctx, tx, EventProductChanged, p.ID, ProductChanged{ProductID: p.ID, Version: p.Version, Change: "updated"})
	})
	return out, err
}

// DeleteProduct removes a product and its variants; it returns the version
// that the deletion represents, for cache invalidation.
func (s *Store) DeleteProduct(ctx context.Context, id string) (int64, error) {
	var version int64
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `DELETE FROM products WHERE id = $1 RETURNING version`, id).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		version++
		return s.publish(ctx, tx, EventProductChanged, id, ProductChanged{ProductID: id, Version: version, Change: "deleted"})
	})
	return version, err
}

// GetProduct returns one product.
func (s *Store) GetProduct(ctx context.Context, id string) (*Product, error) {
	ps, err := loadProducts(ctx, s.pool, []string{id}, false)
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, ErrNotFound
	}
	return ps[0], nil
}

// ListProducts returns up to limit products, newest first, created before the
// product after (empty for the first page), optionally in one category.
func (s *Store) ListProducts(ctx context.Context, category, after string, limit int) ([]*Product, error) {
	var rows pgx.Rows
	var err error
	switch {
	case category != "" && after != "":
		rows, err = s.pool.Query(ctx, `SELECT product_id FROM product_categories WHERE category_id = $1 AND product_id < $2 ORDER BY product_id DESC LIMIT $3`, category, after, limit)
	case category != "":
		rows, err = s.pool.Query(ctx, `SELECT product_id FROM product_categories WHERE category_id = $1 ORDER BY product_id DESC LIMIT $2`, category, limit)
	case after != "":
		rows, err = s.pool.Query(ctx, `SELECT id FROM products WHERE id < $1 ORDER BY id DESC LIMIT $2`, after, limit)
	default:
		rows, err = s.pool.Query(ctx, `SELECT id FROM products ORDER BY id DESC LIMIT $1`, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return s.inOrder(ctx, ids)
}

// SearchProducts returns up to limit products matching the web-search style
// query q (words, "quoted phrases", -exclusions, or), best match first,
// skipping offset results.
func (s *Store) SearchProducts(ctx context.Context, q, category string, offset, limit int) ([]*Product, error) {
	const base = `SELECT p.id FROM products p, websearch_to_tsquery('english', $1) query WHERE p.search @@ query`
	var rows pgx.Rows
	var err error
	if category != "" {
		rows, err = s.pool.Query(ctx, base+` AND EXISTS (SELECT 1 FROM product_categories pc WHERE pc.product_id = p.id AND pc.category_id = $4)
			ORDER BY ts_rank_cd(p.search, query) DESC, p.id DESC OFFSET $2 LIMIT $3`, q, offset, limit, category)
	} else {
		rows, err = s.pool.Query(ctx, base+` ORDER BY ts_rank_cd(p.search, query) DESC, p.id DESC OFFSET $2 LIMIT $3`, q, offset, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("search products: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("search products: %w", err)
	}
	return s.inOrder(ctx, ids)
}

// inOrder loads the products with ids and returns them in the order of ids.
func (s *Store) inOrder(ctx context.Context, ids []string) ([]*Product, error) {
	if len(ids) == 0 {
		return []*Product{}, nil
	}
	ps, err := loadProducts(ctx, s.pool, ids, false)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*Product, len(ps))
	for _, p := range ps {
		byID[p.ID] = p
	}
	out := make([]*Product, 0, len(ids))
	for _, id := range ids {
		if p, ok := byID[id]; ok { // deleted between the two queries
			out = append(out, p)
		}
	}
	return out, nil
}

// VariantRef is a variant with the product it belongs to, for other services.
type VariantRef struct {
	Variant
	ProductID    string
	ProductTitle string
}

// GetVariants returns the variants with the given ids that exist.
func (s *Store) GetVariants(ctx context.Context, ids []string) ([]VariantRef, error) {
	rows, err := s.pool.Query(ctx, `SELECT v.id, v.sku, v.title, v.price_amount, v.price_currency, v.in_stock, p.id, p.title
		FROM variants v JOIN products p ON p.id = v.product_id WHERE v.id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("get variants: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (VariantRef, error) {
		var r VariantRef
		err := row.Scan(&r.ID, &r.SKU, &r.Title, &r.Price.Amount, &r.Price.Currency, &r.InStock, &r.ProductID, &r.ProductTitle)
		return r, err
	})
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// loadProducts reads whole products (with variants and categories) in three
// queries however many ids there are; forUpdate locks the product rows.
func loadProducts(ctx context.Context, q querier, ids []string, forUpdate bool) ([]*Product, error) {
	sql := `SELECT id, title, description, images, version, created_at, updated_at FROM products WHERE id = ANY($1)`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	rows, err := q.Query(ctx, sql, ids)
	if err != nil {
		return nil, fmt.Errorf("load products: %w", err)
	}
	ps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Product, error) {
		p := &Product{CategoryIDs: []string{}, Variants: []Variant{}}
		var images []byte
		if err := row.Scan(&p.ID, &p.Title, &p.Description, &images, &p.Version, &p.CreatedAt, &p.UpdatedAt); err != nil {
			return nil, err
		}
		p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
		if err := json.Unmarshal(images, &p.Images); err != nil {
			return nil, fmt.Errorf("product %s images: %w", p.ID, err)
		}
		return p, nil
	})
	if err != nil || len(ps) == 0 {
		return ps, err
	}
	byID := make(map[string]*Product, len(ps))
	for _, p := range ps {
		byID[p.ID] = p
	}
	rows, err = q.Query(ctx, `SELECT product_id, id, sku, title, price_amount, price_currency, in_stock FROM variants WHERE product_id = ANY($1) ORDER BY product_id, position`, ids)
	if err != nil {
		return nil, fmt.Errorf("load variants: %w", err)
	}
	var pid string
	var v Variant
	if _, err := pgx.ForEachRow(rows, []any{&pid, &v.ID, &v.SKU, &v.Title, &v.Price.Amount, &v.Price.Currency, &v.InStock}, func() error {
		if p := byID[pid]; p != nil {
			p.Variants = append(p.Variants, v)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load variants: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT product_id, category_id FROM product_categories WHERE product_id = ANY($1) ORDER BY product_id, position`, ids)
	if err != nil {
		return nil, fmt.Errorf("load categories: %w", err)
	}
	var cid string
	if _, err := pgx.ForEachRow(rows, []any{&pid, &cid}, func() error {
		if p := byID[pid]; p != nil {
			p.CategoryIDs = append(p.CategoryIDs, cid)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load categories: %w", err)
	}
	return ps, nil
}

func insertVariant(ctx context.Context, tx pgx.Tx, productID string, pos int, v *Variant) error {
	_, err := tx.Exec(ctx, `INSERT INTO variants (id, product_id, sku, title, price_amount, price_currency, in_stock, position)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, v.ID, productID, v.SKU, v.Title, v.Price.Amount, v.Price.Currency, v.InStock, pos)
	if err != nil {
		return variantError(err, pos, v.SKU)
	}
	return nil
}

func variantError(err error, pos int, sku string) error {
	if constraint, ok := pg.IsUniqueViolation(err); ok && constraint == "variants_sku_key" {
		return &ConflictError{Field: fmt.Sprintf("variants[%d].sku", pos), Value: sku}
	}
	return fmt.Errorf("store variant: %w", err)
}

func checkCategories(ctx context.Context, tx pgx.Tx, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT id FROM categories WHERE id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("check categories: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("check categories: %w", err)
	}
	known := make(map[string]bool, len(found))
	for _, id := range found {
		known[id] = true
	}
	var errs fieldErrors
	for i, id := range ids {
		if !known[id] {
			errs.add(fmt.Sprintf("category_ids[%d]", i), "is not an existing category")
		}
	}
	return errs.err()
}

func setCategories(ctx context.Context, tx pgx.Tx, productID string, ids []string) error {
	for i, c := range ids {
		if _, err := tx.Exec(ctx, `INSERT INTO product_categories (product_id, category_id, position) VALUES ($1, $2, $3)`, productID, c, i); err != nil {
			return fmt.Errorf("link category: %w", err)
		}
	}
	return nil
}

// ListCategories returns up to limit categories ordered by slug, after the
// slug after.
func (s *Store) ListCategories(ctx context.Context, after string, limit int) ([]Category, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, slug, name, parent_id, created_at, updated_at FROM categories WHERE slug > $1 ORDER BY slug LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list categories: %w", err)
	}
	return pgx.CollectRows(rows, scanCategory)
}

func scanCategory(row pgx.CollectableRow) (Category, error) {
	var c Category
	err := row.Scan(&c.ID, &c.Slug, &c.Name, &c.ParentID, &c.Created, &c.Updated)
	c.Created, c.Updated = c.Created.UTC(), c.Updated.UTC()
	return c, err
}

// GetCategory returns one category.
func (s *Store) GetCategory(ctx context.Context, id string) (Category, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, slug, name, parent_id, created_at, updated_at FROM categories WHERE id = $1`, id)
	if err != nil {
		return Category{}, err
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanCategory)
	if errors.Is(err, pgx.ErrNoRows) {
		return Category{}, ErrNotFound
	}
	return c, err
}

// CreateCategory stores a new category.
func (s *Store) CreateCategory(ctx context.Context, c *Category) error {
	return pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkParent(ctx, tx, c.ID, c.ParentID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO categories (id, slug, name, parent_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)`,
			c.ID, c.Slug, c.Name, c.ParentID, c.Created)
		if _, ok := pg.IsUniqueViolation(err); ok {
			return &ConflictError{Field: "slug", Value: c.Slug}
		}
		if err != nil {
			return fmt.Errorf("insert category: %w", err)
		}
		return s.publish(ctx, tx, EventCategoryChanged, c.ID, map[string]string{"category_id": c.ID, "change": "created"})
	})
}

// UpdateCategory changes a category inside a transaction.
func (s *Store) UpdateCategory(ctx context.Context, id string, fn func(*Category) error) (*Category, error) {
	var out Category
	err := pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, slug, name, parent_id, created_at, updated_at FROM categories WHERE id = $1 FOR UPDATE`, id)
		if err != nil {
			return err
		}
		c, err := pgx.CollectExactlyOneRow(rows, scanCategory)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := fn(&c); err != nil {
			return err
		}
		if err := checkParent(ctx, tx, c.ID, c.ParentID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE categories SET slug = $2, name = $3, parent_id = $4, updated_at = $5 WHERE id = $1`, c.ID, c.Slug, c.Name, c.ParentID, c.Updated)
		if _, ok := pg.IsUniqueViolation(err); ok {
			return &ConflictError{Field: "slug", Value: c.Slug}
		}
		if err != nil {
			return fmt.Errorf("update category: %w", err)
		}
		out = c
		return s.publish(ctx, tx, EventCategoryChanged, c.ID, map[string]string{"category_id": c.ID, "change": "updated"})
	})
	return &out, err
}

// DeleteCategory removes a category that no product or child category uses.
func (s *Store) DeleteCategory(ctx context.Context, id string) error {
	return pg.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var inUse bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM product_categories WHERE category_id = $1)
			OR EXISTS (SELECT 1 FROM categories WHERE parent_id = $1)`, id).Scan(&inUse); err != nil {
			return err
		}
		if inUse {
			return ErrCategoryInUse
		}
		tag, err := tx.Exec(ctx, `DELETE FROM categories WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return s.publish(ctx, tx, EventCategoryChanged, id, map[string]string{"category_id": id, "change": "deleted"})
	})
}

// checkParent refuses a parent that does not exist or whose ancestors include
// the category itself (a cycle).
func checkParent(ctx context.Context, tx pgx.Tx, id string, parent *string) error {
	if parent == nil {
		return nil
	}
	var exists, cycle bool
	err := tx.QueryRow(ctx, `WITH RECURSIVE up(id, parent_id) AS (
			SELECT id, parent_id FROM categories WHERE id = $1
			UNION SELECT c.id, c.parent_id FROM categories c JOIN up ON c.id = up.parent_id)
		SELECT EXISTS (SELECT 1 FROM up), EXISTS (SELECT 1 FROM up WHERE id = $2)`, *parent, id).Scan(&exists, &cycle)
	if err != nil {
		return fmt.Errorf("check parent: %w", err)
	}
	switch {
	case !exists:
		return &ValidationError{Fields: []problem.FieldError{{Field: "parent_id", Message: "is not an existing category"}}}
	case cycle:
		return &ValidationError{Fields: []problem.FieldError{{Field: "parent_id", Message: "would make the category its own ancestor"}}}
	}
	return nil
}

// Count returns how many products the catalog holds.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM products`).Scan(&n)
	return n, err
}
