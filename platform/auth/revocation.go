package auth

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/mercato/mercato/platform/config"
	identityv1 "github.com/mercato/mercato/proto/gen/mercato/identity/v1"
)

// maxPagesPerPoll bounds how many answers one poll asks for when identity
// hands out revocations in pages.
const maxPagesPerPoll = 100

// SessionLister is the part of identity's SessionService a verifier uses;
// identityv1connect.SessionServiceClient is one.
type SessionLister interface {
	ListRevokedSessions(context.Context, *connect.Request[identityv1.ListRevokedSessionsRequest]) (*connect.Response[identityv1.ListRevokedSessionsResponse], error)
}

// revocations is the local copy of identity's revoked sessions: session id
// to the time after which the revocation no longer matters. Reads are a
// lock-free map lookup, so checking every request costs nothing noticeable;
// the poller adds what identity reports and drops what has expired.
type revocations struct {
	sessions SessionLister
	store    *config.Store
	log      *slog.Logger
	m        *metrics
	now      func() time.Time
	// started is when the poller was made; failures before the first
	// success are expected for a moment while services start together.
	started time.Time

	set  sync.Map // session id → time.Time
	size atomic.Int64
	// synced is set by the first successful poll; until then nothing can be
	// said about any session.
	synced atomic.Bool

	// Owned by the polling goroutine.
	cursor    string
	failing   bool
	lastWarn  time.Time
	nextPrune time.Time
}

// revoked reports whether the session sid was revoked.
func (r *revocations) revoked(sid string) bool {
	_, ok := r.set.Load(sid)
	return ok
}

// poll asks identity for the revocations after the cursor, page by page,
// and drops the entries that no longer matter. On failure it keeps what it
// has: a verifier whose view of revocations is a little old still refuses
// every session it knew to be revoked.
func (r *revocations) poll(ctx context.Context) error {
	for range maxPagesPerPoll {
		resp, err := r.sessions.ListRevokedSessions(ctx, connect.NewRequest(&identityv1.ListRevokedSessionsRequest{Cursor: r.cursor}))
		if err != nil {
			if code := connect.CodeOf(err); r.cursor != "" && (code == connect.CodeInvalidArgument || code == connect.CodeOutOfRange) {
				// Identity no longer knows the cursor (its log was trimmed,
				// say): start again from everything that still matters.
				// Adding a revocation twice is harmless.
				r.log.Warn("revocation cursor refused; reloading every revocation", "err", err)
				r.cursor = ""
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err() // stopping, not failing
			}
			r.failed(err)
			return err
		}
		leeway := r.store.Get().Auth.Leeway
		for _, s := range resp.Msg.GetSessions() {
			if s.GetSessionId() == "" {
				continue
			}
			// A token is accepted until leeway after its exp, so its
			// revocation must be kept as long.
			until := s.GetExpiresAt().AsTime().Add(leeway)
			if _, loaded := r.set.Swap(s.GetSessionId(), until); !loaded {
				r.size.Add(1)
			}
		}
		r.m.revokedSessions.Set(float64(r.size.Load()))
		more := len(resp.Msg.GetSessions()) > 0 && resp.Msg.GetCursor() != r.cursor
		if c := resp.Msg.GetCursor(); c != "" {
			r.cursor = c
		}
		if !more {
			break
		}
	}
	r.succeeded()
	return nil
}

// succeeded records a good poll.
func (r *revocations) succeeded() {
	now := r.now()
	if !r.synced.Load() {
		r.log.Info("revoked sessions loaded", "sessions", r.size.Load())
	} else if r.failing {
		r.log.Info("revoked sessions reachable again")
	}
	r.failing = false
	r.synced.Store(true)
	r.m.revocationPolls.WithLabelValues("ok").Inc()
	r.m.revocationLastSync.Set(float64(now.UnixNano()) / 1e9)
	if now.After(r.nextPrune) {
		r.prune(now)
		r.nextPrune = now.Add(time.Second)
	}
	r.m.revokedSessions.Set(float64(r.size.Load()))
}

// failed records a failed poll, warning on the first failure and then at
// most every 30 seconds.
func (r *revocations) failed(err error) {
	r.m.revocationPolls.WithLabelValues("error").Inc()
	now := r.now()
	if !r.synced.Load() && now.Sub(r.started) < startupGrace {
		// Services start together; identity may simply not listen yet.
		r.log.Debug("waiting for identity's revoked sessions", "err", err)
		return
	}
	if !r.failing || now.Sub(r.lastWarn) >= 30*time.Second {
		r.lastWarn = now
		r.log.Warn("cannot poll revoked sessions; keeping the last known set", "err", err, "synced", r.synced.Load())
	}
	r.failing = true
}

// prune drops revocations whose sessions' tokens have all expired.
func (r *revocations) prune(now time.Time) {
	r.set.Range(func(key, value any) bool {
		if until, _ := value.(time.Time); now.After(until) {
			if r.set.CompareAndDelete(key, value) {
				r.size.Add(-1)
			}
		}
		return true
	})
}
