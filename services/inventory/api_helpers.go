package inventory

import "github.com/mercato/mercato/services/inventory/domain"

// levelView is a variant's stock as the admin API shows it: totals over the
// configured locations, then each location.
type levelView struct {
	VariantID string `json:"variant_id"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Committed int64  `json:"committed"`
	Available int64  `json:"available"`
	InStock   bool   `json:"in_stock"`
	// Locations is every configured location, in the configured order.
	Locations []locationView `json:"locations"`
}

// locationView is a variant's stock at one location.
type locationView struct {
	Location  string `json:"location"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Committed int64  `json:"committed"`
	Available int64  `json:"available"`
}

// importView is the answer to an import: each distinct variant once, in
// the order it first appears in the request.
type importView struct {
	Items []levelView `json:"items"`
}

// viewOf shows vs at the configured locations, in their order. A location
// vs does not mention has zeros; one no longer configured is left out of
// the totals too, since nothing can be reserved there.
func viewOf(vs domain.VariantStock, locations []string) levelView {
	at := make(map[string]domain.Counters, len(vs.Locations))
	for _, l := range vs.Locations {
		at[l.Location] = l.Counters
	}
	v := levelView{VariantID: vs.VariantID, Locations: make([]locationView, len(locations))}
	var total domain.Counters
	for i, name := range locations {
		c := at[name]
		total = total.Add(c)
		v.Locations[i] = locationView{Location: name, OnHand: c.OnHand, Reserved: c.Reserved, Committed: c.Committed, Available: c.Available()}
	}
	v.OnHand, v.Reserved, v.Committed, v.Available = total.OnHand, total.Reserved, total.Committed, total.Available()
	v.InStock = v.Available > 0
	return v
}
