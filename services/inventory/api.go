package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/mercato/mercato/platform/httpapi"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/services/inventory/domain"
)

// maxImportItems bounds the rows of one import, which is applied in one
// step: all of it or none.
const maxImportItems = 1000

// api translates the admin REST API to inventory operations and errors to
// problems.
type api struct {
	inv *Inventory
	log *slog.Logger
}

// router is where routes are registered: the server's mux, or a recorder in
// the test that keeps routes and OpenAPI fragment in step.
type router interface {
	Handle(pattern string, h http.Handler)
}

// admin registers the routes that read and count stock; wrap applies the
// admin check and idempotency.
func (a *api) admin(mux router, wrap func(http.Handler) http.Handler) {
	mux.Handle("GET /v1/admin/inventory/{variant_id}", wrap(a.handle(a.getLevel)))
	mux.Handle("PUT /v1/admin/inventory/{variant_id}", wrap(a.handle(a.setLevel)))
	mux.Handle("POST /v1/admin/inventory/import", wrap(a.handle(a.importLevels)))
}

func (a *api) handle(h httpapi.HandlerFunc) http.Handler {
	return httpapi.Handle(a.log, func(w http.ResponseWriter, r *http.Request) error {
		return toProblem(h(w, r))
	})
}

// toProblem is the one place inventory errors become HTTP problems; a
// StockConflictError is turned into one by its handler, which knows the
// fields its rows came from (conflictProblem).
func toProblem(err error) error {
	var (
		invalid  *domain.ValidationError
		conflict *domain.StockConflictError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &invalid):
		return problem.Invalid(invalid.Fields...)
	case errors.As(err, &conflict):
		return problem.Conflict("stock-conflict", "on_hand would be below the units reserved and committed")
	case errors.Is(err, domain.ErrNotReady):
		return problem.Unavailable("the stock counters are being rebuilt; retry shortly", time.Second)
	case errors.Is(err, domain.ErrUnavailable):
		return problem.Unavailable("a stock store is unreachable", time.Second)
	case errors.Is(err, domain.ErrOverloaded):
		return problem.Unavailable("the inventory is overloaded", time.Second)
	case errors.Is(err, context.DeadlineExceeded):
		return problem.Unavailable("the stock stores did not answer in time", time.Second)
	default:
		return err
	}
}

// conflictProblem names each row of err by field(i), the prefix of row i
// (nil: the bare on_hand, for a single row from the path).
func conflictProblem(err error, rows []domain.Adjustment, field func(i int) string) error {
	var conflict *domain.StockConflictError
	if !errors.As(err, &conflict) {
		return err
	}
	p := problem.Conflict("stock-conflict", "on_hand would be below the units reserved and committed")
	for _, c := range conflict.Conflicts {
		name := "on_hand"
		if field != nil {
			name = field(c.Index) + ".on_hand"
		}
		where := ""
		if c.Index >= 0 && c.Index < len(rows) {
			where = " at " + rows[c.Index].Location
		}
		p.Errors = append(p.Errors, problem.FieldError{Field: name, Message: fmt.Sprintf(
			"must be at least %d: %d units are reserved and %d committed%s", c.Reserved+c.Committed, c.Reserved, c.Committed, where)})
	}
	return p
}

// getLevel reads a variant's live stock; a variant the inventory never
// counted has zeros.
func (a *api) getLevel(w http.ResponseWriter, r *http.Request) error {
	vid := r.PathValue("variant_id")
	if !domain.ValidVariantID(vid) {
		return problem.NotFound("no variant with this id")
	}
	stock, err := a.inv.Stock(r.Context(), []string{vid})
	if err != nil {
		return err
	}
	vs, err := stockOf(stock, vid)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, viewOf(vs, a.inv.Locations()))
	return nil
}

// levelInput is the body of PUT /v1/admin/inventory/{variant_id}.
type levelInput struct {
	OnHand   *int64  `json:"on_hand"`
	Location *string `json:"location"`
}

// setLevel sets a variant's on_hand at one location to an admin's count.
func (a *api) setLevel(w http.ResponseWriter, r *http.Request) error {
	vid := r.PathValue("variant_id")
	if !domain.ValidVariantID(vid) {
		return problem.NotFound("no variant with this id")
	}
	var in levelInput
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	locations := a.inv.Locations()
	rows, err := domain.NewAdjustments([]domain.AdjustmentInput{{VariantID: vid, Location: in.Location, OnHand: in.OnHand}}, locations, nil)
	if err != nil {
		return err
	}
	stock, err := a.inv.Adjust(r.Context(), rows)
	if err != nil {
		return conflictProblem(err, rows, nil)
	}
	vs, err := stockOf(stock, vid)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, viewOf(vs, locations))
	return nil
}

// importInput is the body of POST /v1/admin/inventory/import.
type importInput struct {
	Items []importItem `json:"items"`
}

// importItem is one row of an import.
type importItem struct {
	VariantID string  `json:"variant_id"`
	Location  *string `json:"location"`
	OnHand    *int64  `json:"on_hand"`
}

// importLevels sets many counts at once, all or none: a stock take.
func (a *api) importLevels(w http.ResponseWriter, r *http.Request) error {
	var in importInput
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	if len(in.Items) == 0 || len(in.Items) > maxImportItems {
		return problem.Invalid(problem.FieldError{Field: "items", Message: fmt.Sprintf("must hold between 1 and %d items", maxImportItems)})
	}
	inputs := make([]domain.AdjustmentInput, len(in.Items))
	for i, it := range in.Items {
		inputs[i] = domain.AdjustmentInput{VariantID: it.VariantID, Location: it.Location, OnHand: it.OnHand}
	}
	field := func(i int) string { return "items[" + strconv.Itoa(i) + "]" }
	locations := a.inv.Locations()
	rows, err := domain.NewAdjustments(inputs, locations, field)
	if err != nil {
		return err
	}
	stock, err := a.inv.Adjust(r.Context(), rows)
	if err != nil {
		return conflictProblem(err, rows, field)
	}
	byID := make(map[string]domain.VariantStock, len(stock))
	for _, vs := range stock {
		byID[vs.VariantID] = vs
	}
	out := importView{Items: []levelView{}}
	seen := make(map[string]bool, len(rows))
	for _, row := range rows {
		if seen[row.VariantID] {
			continue
		}
		seen[row.VariantID] = true
		vs, ok := byID[row.VariantID]
		if !ok {
			return fmt.Errorf("the inventory answered without the stock of %s", row.VariantID)
		}
		out.Items = append(out.Items, viewOf(vs, locations))
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// stockOf picks variant's stock out of what the inventory answered, which
// holds every variant asked about.
func stockOf(stock []domain.VariantStock, variant string) (domain.VariantStock, error) {
	for _, vs := range stock {
		if vs.VariantID == variant {
			return vs, nil
		}
	}
	return domain.VariantStock{}, fmt.Errorf("the inventory answered without the stock of %s", variant)
}
