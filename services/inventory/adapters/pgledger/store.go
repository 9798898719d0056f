// Package pgledger keeps the inventory's source of truth in PostgreSQL: an
// append-only ledger of every stock change, the stock counters it adds up
// to, the reservations' current status, and the events that tell other
// services about stock, written to the outbox in the same transactions.
//
// Every transaction that depends on the Redis state it was handed (a
// commit, an adjustment, a batch of the ledger stream) holds a shared
// advisory lock and checks the epoch of that state; a rebuild holds the
// lock exclusively while it drains, snapshots and replaces Redis, so none of
// them can interleave with it.
package pgledger

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mercato/mercato/services/inventory/domain"
)

// lockTimeout bounds how long a commit or an adjustment waits for a lock
// (a rebuild in progress, a busy row) before the caller is told to retry.
const lockTimeout = "3s"

// epochLock is the advisory lock that orders rebuilds against every
// transaction that relies on the Redis state; each service has its own
// database, so one constant key is enough.
var epochLock = func() int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("mercato-inventory-redis-epoch"))
	return int64(h.Sum64() >> 1)
}()

// Store is the ledger. Its methods are safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	namespace string
}

// New returns the ledger in pool; namespace names the event topics.
func New(pool *pgxpool.Pool, namespace string) *Store {
	return &Store{pool: pool, namespace: namespace}
}

// Epoch returns the generation of the Redis state the ledger last loaded.
func (s *Store) Epoch(ctx context.Context) (int64, error) {
	var e int64
	err := s.pool.QueryRow(ctx, `SELECT epoch FROM redis_epoch`).Scan(&e)
	return e, classify(err)
}

// inEpoch runs fn in a transaction that holds the epoch lock shared and
// returns the ledger's epoch to fn. When fn fails after aborted is set, the
// caller learns that the transaction was rolled back; an error from COMMIT
// itself leaves the outcome unknown and is returned as it is.
func (s *Store) inEpoch(ctx context.Context, wait bool, fn func(tx pgx.Tx, epoch int64) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return classify(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if !wait {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+lockTimeout+`'`); err != nil {
			return classify(err)
		}
	}
	var epoch int64
	if err := tx.QueryRow(ctx, `SELECT pg_advisory_xact_lock_shared($1), (SELECT epoch FROM redis_epoch)`, epochLock).Scan(nil, &epoch); err != nil {
		return classify(err)
	}
	if err := fn(tx, epoch); err != nil {
		return classify(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return &CommitError{Err: classify(err)}
	}
	return nil
}

// CommitError is a failure of COMMIT itself: the transaction may or may not
// have been committed.
type CommitError struct{ Err error }

func (e *CommitError) Error() string { return "commit: " + e.Err.Error() }
func (e *CommitError) Unwrap() error { return e.Err }

// Exclusive runs fn while holding the epoch lock exclusively: no commit,
// adjustment or ledger batch runs meanwhile, and those that were running
// have finished. fn's own transactions must not take the lock.
func (s *Store) Exclusive(ctx context.Context, fn func(ctx context.Context) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return classify(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, epochLock); err != nil {
		return classify(err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, epochLock); err != nil {
			// Closing the session releases its locks for certain.
			_ = conn.Conn().Close(uctx)
		}
	}()
	return fn(ctx)
}

// classify turns database failures a retry may cure (unreachable server,
// lock timeouts, deadlocks, serialization failures) into
// domain.ErrUnavailable and a sale beyond on_hand into domain.ErrOversold.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23514":
			if pgErr.ConstraintName == "stock_never_oversold" {
				return fmt.Errorf("%w: %s", domain.ErrOversold, pgErr.Message)
			}
		case "55P03", "40P01", "40001", "57P01", "57P03", "53300":
			return fmt.Errorf("%w: postgres: %v", domain.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, domain.ErrUnavailable) || errors.Is(err, domain.ErrNotReady) || errors.Is(err, domain.ErrOversold) ||
		errors.Is(err, domain.ErrEpochChanged) || errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	var (
		ended    *domain.EndedError
		conflict *domain.StockConflictError
	)
	if errors.As(err, &ended) || errors.As(err, &conflict) {
		return err
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return fmt.Errorf("%w: postgres: %v", domain.ErrUnavailable, err)
	}
	return err
}
