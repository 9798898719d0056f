package catalog

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/money"
	"github.com/mercato/mercato/platform/rpc"
	"github.com/mercato/mercato/platform/service"
	catalogv1 "github.com/mercato/mercato/proto/gen/mercato/catalog/v1"
	"github.com/mercato/mercato/proto/gen/mercato/catalog/v1/catalogv1connect"
	commonv1 "github.com/mercato/mercato/proto/gen/mercato/common/v1"
)

// maxBatch is the most variant ids BatchGetVariants takes at once.
const maxBatch = 100

// rpcServer is the catalog's internal Connect API.
type rpcServer struct {
	store *Store
}

func registerRPC(env *service.Env, store *Store) error {
	opts, err := rpc.HandlerOptions(env.Tracing.Provider, env.Registry, env.Log)
	if err != nil {
		return err
	}
	path, handler := catalogv1connect.NewCatalogServiceHandler(&rpcServer{store: store}, opts...)
	env.Server.Mux().Handle(path, handler)
	return nil
}

// GetProduct reads one product from the database; the detail cache holds
// rendered JSON, which is for the public API only.
func (s *rpcServer) GetProduct(ctx context.Context, req *connect.Request[catalogv1.GetProductRequest]) (*connect.Response[catalogv1.GetProductResponse], error) {
	pid := req.Msg.GetId()
	if !id.Valid("prod", pid) {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no product with this id"))
	}
	p, err := s.store.GetProduct(ctx, pid)
	if errors.Is(err, ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no product with this id"))
	}
	if err != nil {
		return nil, err
	}
	out := &catalogv1.Product{
		Id: p.ID, Title: p.Title, Description: p.Description, CategoryIds: p.CategoryIDs,
		CreatedAt: timestamppb.New(p.CreatedAt), UpdatedAt: timestamppb.New(p.UpdatedAt), Version: p.Version,
	}
	for _, img := range p.Images {
		out.Images = append(out.Images, img.URL)
	}
	for _, v := range p.Variants {
		out.Variants = append(out.Variants, variantMsg(p.ID, v))
	}
	return connect.NewResponse(&catalogv1.GetProductResponse{Product: out}), nil
}

// BatchGetVariants reads up to 100 variants in one query.
func (s *rpcServer) BatchGetVariants(ctx context.Context, req *connect.Request[catalogv1.BatchGetVariantsRequest]) (*connect.Response[catalogv1.BatchGetVariantsResponse], error) {
	ids := req.Msg.GetIds()
	if len(ids) > maxBatch {
		return nil, rpc.InvalidArgument("ids", "at most 100 ids per call")
	}
	var unique []string
	seen := map[string]bool{}
	for _, v := range ids {
		if !seen[v] {
			seen[v] = true
			unique = append(unique, v)
		}
	}
	found, err := s.store.GetVariants(ctx, unique)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]VariantRef, len(found))
	for _, v := range found {
		byID[v.ID] = v
	}
	resp := &catalogv1.BatchGetVariantsResponse{}
	for _, v := range unique {
		ref, ok := byID[v]
		if !ok {
			resp.NotFoundIds = append(resp.NotFoundIds, v)
			continue
		}
		resp.Variants = append(resp.Variants, variantMsg(ref.ProductID, ref.Variant))
	}
	return connect.NewResponse(resp), nil
}

func variantMsg(productID string, v Variant) *catalogv1.Variant {
	return &catalogv1.Variant{Id: v.ID, ProductId: productID, Sku: v.SKU, Title: v.Title, Price: moneyMsg(v.Price), InStock: v.InStock}
}

func moneyMsg(m money.Money) *commonv1.Money {
	return &commonv1.Money{Amount: m.Amount, Currency: m.Currency}
}
