package identity

import (
	"context"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mercato/mercato/platform/rpc"
	"github.com/mercato/mercato/platform/service"
	identityv1 "github.com/mercato/mercato/proto/gen/mercato/identity/v1"
	"github.com/mercato/mercato/proto/gen/mercato/identity/v1/identityv1connect"
)

// rpcServer is identity's internal Connect API: the revoked sessions that
// token verifiers poll.
type rpcServer struct {
	sessions *sessionStore
}

func registerRPC(env *service.Env, sessions *sessionStore) error {
	opts, err := rpc.HandlerOptions(env.Tracing.Provider, env.Registry, env.Log)
	if err != nil {
		return err
	}
	path, handler := identityv1connect.NewSessionServiceHandler(&rpcServer{sessions: sessions}, opts...)
	env.Server.Mux().Handle(path, handler)
	return nil
}

// ListRevokedSessions returns the revocations after the cursor, oldest
// first. The cursor is the score (Redis-clock microseconds) of the last
// revocation returned; every later revocation has a greater one.
func (s *rpcServer) ListRevokedSessions(ctx context.Context, req *connect.Request[identityv1.ListRevokedSessionsRequest]) (*connect.Response[identityv1.ListRevokedSessionsResponse], error) {
	var cursor int64
	if c := req.Msg.GetCursor(); c != "" {
		n, err := strconv.ParseInt(c, 10, 64)
		if err != nil || n < 0 {
			return nil, rpc.InvalidArgument("cursor", "is not a cursor this service returned")
		}
		cursor = n
	}
	revs, next, err := s.sessions.revocations(ctx, cursor, maxRevocationsPerPage)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	resp := &identityv1.ListRevokedSessionsResponse{Sessions: make([]*identityv1.RevokedSession, len(revs))}
	for i, r := range revs {
		resp.Sessions[i] = &identityv1.RevokedSession{
			SessionId: r.sessionID, RevokedAt: timestamppb.New(r.revokedAt), ExpiresAt: timestamppb.New(r.expiresAt),
		}
	}
	if next > 0 {
		resp.Cursor = strconv.FormatInt(next, 10)
	}
	return connect.NewResponse(resp), nil
}
