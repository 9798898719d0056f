package domain

// Event types the inventory publishes (source "inventory"; topics
// <namespace>.inventory.stock.changed and …stock.depleted).
const (
	// EventStockChanged tells that a variant's stock changed; a burst of
	// changes is told once, with the latest state.
	EventStockChanged = "stock.changed"
	// EventStockDepleted tells that a variant's available stock reached 0.
	EventStockDepleted = "stock.depleted"
)

// StockEvent is the data of stock.changed and stock.depleted: the variant's
// stock summed over locations. Version grows with every change of the
// variant, so a consumer keeps the highest it saw and ignores older events
// arriving late.
type StockEvent struct {
	VariantID string `json:"variant_id"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Committed int64  `json:"committed"`
	Available int64  `json:"available"`
	InStock   bool   `json:"in_stock"`
	Version   int64  `json:"version"`
}

// NewStockEvent describes a variant whose counters summed over locations
// are c at version.
func NewStockEvent(variantID string, c Counters, version int64) StockEvent {
	return StockEvent{
		VariantID: variantID, OnHand: c.OnHand, Reserved: c.Reserved, Committed: c.Committed,
		Available: c.Available(), InStock: c.Available() > 0, Version: version,
	}
}
