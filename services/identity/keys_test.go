package identity

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/services/identity/migrations"
)

// testDatabase is identity's database in a fresh namespace, migrated.
func testDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	cfg := platformtest.Config(t)
	pool := platformtest.Postgres(t, cfg, serviceName)
	if err := pg.Migrate(context.Background(), pool, migrations.FS, "goose_db_version", platformtest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	return pool
}

// Key rotation on an injected clock, with the periods of production: a
// key signs for a day, its successor is published two reload periods
// before it takes over, and a retired key stays published until every
// token it signed has expired.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testDatabase(t)
	clock := newFakeClock()
	opts := keyOptions{rotation: 24 * time.Hour, retention: 15*time.Minute + time.Hour, reload: time.Minute, now: clock.Now}
	m := newKeyManager(pool, opts, platformtest.Logger(t))
	lead := m.lead()
	if lead != 2*time.Minute {
		t.Fatalf("lead %v, want two reload periods", lead)
	}

	sync := func() *keySet {
		t.Helper()
		if err := m.sync(ctx); err != nil {
			t.Fatal(err)
		}
		return m.keys()
	}
	kids := func(ks *keySet) []string {
		var out []string
		for _, k := range ks.published {
			out = append(out, k.kid)
		}
		return out
	}

	first := sync()
	if len(first.published) != 1 || first.signer != first.published[0] {
		t.Fatalf("first start: published %v", kids(first))
	}
	k1 := first.signer.kid
	if first.signer.private.N.BitLen() != rsaBits {
		t.Fatalf("key of %d bits", first.signer.private.N.BitLen())
	}

	// Nothing changes before the successor is due.
	clock.Advance(24*time.Hour - lead - time.Second)
	if ks := sync(); len(ks.published) != 1 || ks.signer.kid != k1 {
		t.Fatalf("before rotation: published %v, signer %s", kids(ks), ks.signer.kid)
	}

	// The successor is published at once, but the old key signs on until
	// every replica has loaded the new one.
	clock.Advance(time.Second)
	ks := sync()
	if len(ks.published) != 2 || ks.signer.kid != k1 {
		t.Fatalf("at rotation: published %v, signer %s (want both keys, %s signing)", kids(ks), ks.signer.kid, k1)
	}
	k2 := ks.published[0].kid

	clock.Advance(lead)
	ks = sync()
	if len(ks.published) != 2 || ks.signer.kid != k2 {
		t.Fatalf("after the lead: published %v, signer %s, want both keys and %s signing", kids(ks), ks.signer.kid, k2)
	}

	// The old key stays published while a token it signed may live.
	clock.Advance(opts.retention - time.Second)
	if ks = sync(); len(ks.published) != 2 {
		t.Fatalf("within retention: published %v", kids(ks))
	}
	clock.Advance(2 * time.Second)
	if ks = sync(); len(ks.published) != 1 || ks.published[0].kid != k2 {
		t.Fatalf("after retention: published %v, want only %s", kids(ks), k2)
	}

	// The next rotation deletes keys no live token can need.
	clock.Advance(24 * time.Hour)
	sync()
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE kid = $1`, k1).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the expired key is still stored (%d, %v)", n, err)
	}
}

// Replicas starting or rotating together agree on one new key.
func TestReplicasAgreeOnKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testDatabase(t)
	clock := newFakeClock()
	opts := keyOptions{rotation: time.Hour, retention: 30 * time.Minute, reload: time.Minute, now: clock.Now}
	replicas := make([]*keyManager, 4)
	for i := range replicas {
		replicas[i] = newKeyManager(pool, opts, platformtest.Logger(t))
	}
	syncAll := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, len(replicas))
		for i, m := range replicas {
			wg.Go(func() { errs[i] = m.sync(ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for round := range 3 {
		syncAll()
		var created, current int
		if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE created_at = $1), count(*) FILTER (WHERE retired_at IS NULL) FROM signing_keys`,
			clock.Now()).Scan(&created, &current); err != nil {
			t.Fatal(err)
		}
		if created != 1 || current != 1 {
			t.Fatalf("round %d: %d keys created, %d not retired; want one of each", round, created, current)
		}
		// Sync again once the newest key signs, so every replica chooses it.
		clock.Advance(replicas[0].lead())
		syncAll()
		signer := replicas[0].keys().signer.kid
		for i, m := range replicas {
			if m.keys().signer.kid != signer {
				t.Fatalf("round %d: replica %d signs with %s, replica 0 with %s", round, i, m.keys().signer.kid, signer)
			}
		}
		clock.Advance(opts.rotation)
	}
}
