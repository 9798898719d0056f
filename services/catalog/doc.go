// Package catalog is the catalog service: products with variants (SKUs),
// categories and prices, maintained by admins and read by everyone. Reads are
// served from an in-process and Redis cache kept fresh by product.changed
// events; lists and full-text search come from PostgreSQL behind a short
// in-process cache.
package catalog
