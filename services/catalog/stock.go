package catalog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/mercato/mercato/platform/events"
)

// Inventory's event that the catalog follows to keep variants' in_stock.
const (
	inventorySource    = "inventory"
	EventStockChanged  = "stock.changed"
	stockConsumerGroup = serviceName
)

// StockChanged is the data of inventory's stock.changed event, as far as
// the catalog reads it.
type StockChanged struct {
	VariantID string `json:"variant_id"`
	Available int64  `json:"available"`
	InStock   bool   `json:"in_stock"`
	// Version grows with every change of the variant's stock.
	Version int64 `json:"version"`
}

// ApplyStock records a variant's availability in the catalog's read model,
// inside the consumer's transaction: it ignores events older than the last
// applied, and when in_stock flips it bumps the product's version and
// publishes product.changed so every cache drops the old view.
func (s *Store) ApplyStock(ctx context.Context, tx pgx.Tx, sc StockChanged) error {
	var productID string
	var was bool
	err := tx.QueryRow(ctx, `SELECT product_id, in_stock FROM variants WHERE id = $1 FOR UPDATE`, sc.VariantID).Scan(&productID, &was)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // the product was deleted; nothing to show
	}
	if err != nil {
		return fmt.Errorf("read variant %s: %w", sc.VariantID, err)
	}
	tag, err := tx.Exec(ctx, `UPDATE variants SET in_stock = $2, stock_version = $3 WHERE id = $1 AND stock_version < $3`,
		sc.VariantID, sc.InStock, sc.Version)
	if err != nil {
		return fmt.Errorf("update variant %s: %w", sc.VariantID, err)
	}
	if tag.RowsAffected() == 0 || was == sc.InStock {
		return nil // older than what we have, or nothing a reader would see
	}
	var version int64
	if err := tx.QueryRow(ctx, `UPDATE products SET version = version + 1, updated_at = now() WHERE id = $1 RETURNING version`, productID).Scan(&version); err != nil {
		return fmt.Errorf("bump product %s: %w", productID, err)
	}
	return s.publish(ctx, tx, EventProductChanged, productID, ProductChanged{ProductID: productID, Version: version, Change: "updated"})
}

// followStock subscribes the catalog to inventory's stock changes.
func followStock(c *events.Consumer, store *Store) {
	c.On(inventorySource, EventStockChanged, func(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
		var sc StockChanged
		if err := e.Decode(&sc); err != nil {
			return events.Permanent(err)
		}
		if sc.VariantID == "" {
			return events.Permanent(fmt.Errorf("stock.changed %s without a variant id", e.ID))
		}
		return store.ApplyStock(ctx, tx, sc)
	})
}
