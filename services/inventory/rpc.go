package inventory

import (
	"context"
	"errors"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/rpc"
	"github.com/mercato/mercato/platform/service"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/proto/gen/mercato/inventory/v1/inventoryv1connect"
	"github.com/mercato/mercato/services/inventory/domain"
)

// maxStockBatch is the most variant ids GetStock takes at once.
const maxStockBatch = 100

// retryAfter is the Retry-After, in seconds, of an UNAVAILABLE answer:
// counters are rebuilt and admission frees up within about a second.
const retryAfter = "1"

// rpcServer is the inventory's internal Connect API, which checkout calls.
type rpcServer struct {
	inv *Inventory
}

var _ inventoryv1connect.InventoryServiceHandler = (*rpcServer)(nil)

func registerRPC(env *service.Env, inv *Inventory) error {
	opts, err := rpc.HandlerOptions(env.Tracing.Provider, env.Registry, env.Log)
	if err != nil {
		return err
	}
	path, handler := inventoryv1connect.NewInventoryServiceHandler(&rpcServer{inv: inv}, opts...)
	env.Server.Mux().Handle(path, handler)
	return nil
}

// Reserve holds every item or none.
func (s *rpcServer) Reserve(ctx context.Context, req *connect.Request[inventoryv1.ReserveRequest]) (*connect.Response[inventoryv1.ReserveResponse], error) {
	msg := req.Msg
	in := domain.ReserveRequest{
		Items:          make([]domain.Item, len(msg.GetItems())),
		IdempotencyKey: msg.GetIdempotencyKey(),
		CustomerID:     msg.GetCustomerId(),
	}
	for i, it := range msg.GetItems() {
		in.Items[i] = domain.Item{VariantID: it.GetVariantId(), Quantity: it.GetQuantity()}
	}
	if d := msg.GetTtl(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 {
			// Every invalid field is reported at once, so the rest of the
			// request is checked too.
			bad := problem.FieldError{Field: "ttl", Message: "must be a valid, non-negative duration"}
			var invalid *domain.ValidationError
			if errors.As(in.Validate(), &invalid) {
				return nil, rpc.InvalidArguments(append(invalid.Fields, bad)...)
			}
			return nil, rpc.InvalidArguments(bad)
		}
		in.TTL = d.AsDuration()
	}
	res, err := s.inv.Reserve(ctx, in)
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&inventoryv1.ReserveResponse{Reservation: reservationMsg(res)}), nil
}

// Commit turns a held reservation into a sale.
func (s *rpcServer) Commit(ctx context.Context, req *connect.Request[inventoryv1.CommitRequest]) (*connect.Response[inventoryv1.CommitResponse], error) {
	rid := req.Msg.GetReservationId()
	if !domain.ValidReservationID(rid) {
		return nil, rpcError(domain.ErrNotFound)
	}
	res, err := s.inv.Commit(ctx, rid)
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&inventoryv1.CommitResponse{Reservation: reservationMsg(res)}), nil
}

// Release gives a held reservation's units back.
func (s *rpcServer) Release(ctx context.Context, req *connect.Request[inventoryv1.ReleaseRequest]) (*connect.Response[inventoryv1.ReleaseResponse], error) {
	rid := req.Msg.GetReservationId()
	if !domain.ValidReservationID(rid) {
		return nil, rpcError(domain.ErrNotFound)
	}
	res, err := s.inv.Release(ctx, rid)
	if err != nil {
		return nil, rpcError(err)
	}
	return connect.NewResponse(&inventoryv1.ReleaseResponse{Reservation: reservationMsg(res)}), nil
}

// GetStock reads the live stock of up to 100 variants, summed over
// locations, one entry per distinct id in the order asked.
func (s *rpcServer) GetStock(ctx context.Context, req *connect.Request[inventoryv1.GetStockRequest]) (*connect.Response[inventoryv1.GetStockResponse], error) {
	ids := req.Msg.GetVariantIds()
	if len(ids) > maxStockBatch {
		return nil, rpc.InvalidArgument("variant_ids", "at most 100 ids per call")
	}
	var bad []problem.FieldError
	unique := make([]string, 0, len(ids))
	seen := make(map[string]bool, len(ids))
	for i, v := range ids {
		switch {
		case !domain.ValidVariantID(v):
			bad = append(bad, problem.FieldError{Field: "variant_ids[" + strconv.Itoa(i) + "]", Message: "is not a variant id"})
		case !seen[v]:
			seen[v] = true
			unique = append(unique, v)
		}
	}
	if len(bad) > 0 {
		return nil, rpc.InvalidArguments(bad...)
	}
	resp := &inventoryv1.GetStockResponse{Stock: make([]*inventoryv1.Stock, 0, len(unique))}
	if len(unique) == 0 {
		return connect.NewResponse(resp), nil
	}
	stock, err := s.inv.Stock(ctx, unique)
	if err != nil {
		return nil, rpcError(err)
	}
	byID := make(map[string]domain.Counters, len(stock))
	for _, vs := range stock {
		byID[vs.VariantID] = vs.Total()
	}
	for _, v := range unique {
		t := byID[v] // a variant the inventory never heard of has zeros
		resp.Stock = append(resp.Stock, &inventoryv1.Stock{
			VariantId: v, OnHand: t.OnHand, Reserved: t.Reserved, Committed: t.Committed, Available: t.Available(),
		})
	}
	return connect.NewResponse(resp), nil
}

// reservationMsg describes r with its units summed per variant, in the
// order the variants first appear: callers asked for variants, not
// locations.
func reservationMsg(r domain.Reservation) *inventoryv1.Reservation {
	out := &inventoryv1.Reservation{Id: r.ID, Status: string(r.Status)}
	if !r.ExpiresAt.IsZero() {
		out.ExpiresAt = timestamppb.New(r.ExpiresAt)
	}
	byVariant := make(map[string]*inventoryv1.Item, len(r.Items))
	for _, p := range r.Items {
		if it, ok := byVariant[p.VariantID]; ok {
			it.Quantity += p.Quantity
			continue
		}
		it := &inventoryv1.Item{VariantId: p.VariantID, Quantity: p.Quantity}
		byVariant[p.VariantID] = it
		out.Items = append(out.Items, it)
	}
	return out
}

// rpcError is the one place inventory errors become RPC status codes.
func rpcError(err error) error {
	var (
		invalid *domain.ValidationError
		short   *domain.OutOfStockError
		limit   *domain.PurchaseLimitError
		ended   *domain.EndedError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &invalid):
		return rpc.InvalidArguments(invalid.Fields...)
	case errors.As(err, &short):
		detail := &inventoryv1.OutOfStock{Items: make([]*inventoryv1.Shortage, len(short.Shortages))}
		for i, sh := range short.Shortages {
			detail.Items[i] = &inventoryv1.Shortage{VariantId: sh.VariantID, Requested: sh.Requested, Available: sh.Available}
		}
		return withDetail(connect.NewError(connect.CodeFailedPrecondition, short), detail)
	case errors.As(err, &limit):
		detail := &inventoryv1.PurchaseLimitExceeded{VariantId: limit.VariantID, Limit: limit.Limit, AlreadyHeld: limit.AlreadyHeld}
		return withDetail(connect.NewError(connect.CodeFailedPrecondition, limit), detail)
	case errors.Is(err, domain.ErrKeyReused):
		return rpc.InvalidArgument("idempotency_key", "was used for another reservation, with other items or another customer")
	case errors.As(err, &ended):
		return connect.NewError(connect.CodeFailedPrecondition, ended)
	case errors.Is(err, domain.ErrCommitInProgress):
		return connect.NewError(connect.CodeAborted, domain.ErrCommitInProgress)
	case errors.Is(err, domain.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, domain.ErrNotFound)
	case errors.Is(err, domain.ErrOverloaded):
		return unavailable(domain.ErrOverloaded)
	case errors.Is(err, domain.ErrNotReady):
		return unavailable(domain.ErrNotReady)
	case errors.Is(err, domain.ErrUnavailable):
		return unavailable(domain.ErrUnavailable)
	default:
		return err
	}
}

// unavailable is an UNAVAILABLE answer telling the caller when to retry.
// It carries the sentinel only, not whatever store error wrapped it, which
// the caller has no use for.
func unavailable(sentinel error) *connect.Error {
	cerr := connect.NewError(connect.CodeUnavailable, sentinel)
	cerr.Meta().Set("Retry-After", retryAfter)
	return cerr
}

// withDetail attaches msg to cerr; marshalling one of the inventory's own
// detail messages cannot fail, and the code and message stand without it.
func withDetail(cerr *connect.Error, msg proto.Message) *connect.Error {
	if d, err := connect.NewErrorDetail(msg); err == nil {
		cerr.AddDetail(d)
	}
	return cerr
}
