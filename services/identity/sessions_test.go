package identity

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/redisx"
)

// newTestSessions returns a session store in a fresh namespace on the test
// Redis, on the given clock.
func newTestSessions(t *testing.T, clock func() time.Time) *sessionStore {
	t.Helper()
	cfg := platformtest.Config(t)
	rdb := platformtest.Redis(t, cfg)
	return newSessionStore(rdb, redisx.NewKeys(cfg.Namespace, serviceName), sessionOptions{
		ttl: 30 * 24 * time.Hour, idle: 7 * 24 * time.Hour, tokenLife: 15*time.Minute + 30*time.Second, now: clock,
	}, platformtest.Logger(t))
}

func mustCreate(t *testing.T, s *sessionStore, in newSession) (*Session, string, string) {
	t.Helper()
	sess, cookie, refresh, err := s.create(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return sess, cookie, refresh
}

func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestSessions(t, time.Now)
	customer := id.New("cust")
	sess, cookie, refresh := mustCreate(t, s, newSession{customerID: customer, clientID: StorefrontClient, userAgent: "Firefox", ip: "192.0.2.1",
		refresh: &refreshGrant{clientID: StorefrontClient, scopes: []string{"openid", "email"}}})
	if cookie != "" || refresh == "" {
		t.Fatalf("cookie %q, refresh %q", cookie, refresh)
	}
	got, err := s.get(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CustomerID != customer || got.ClientID != StorefrontClient || got.UserAgent != "Firefox" || got.IP != "192.0.2.1" ||
		!got.ExpiresAt.After(time.Now().Add(29*24*time.Hour)) {
		t.Fatalf("session = %+v", got)
	}

	// The refresh token is stored only as a hash.
	vals, err := s.rdb.HGetAll(ctx, s.refreshKey(sess.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range vals {
		if strings.Contains(k, refresh) || strings.Contains(v, refresh) || k != hashSecret(refresh) {
			t.Fatalf("refresh token stored as %q = %q", k, v)
		}
	}

	// Rotation: the new token works, the old one is a replay that ends the
	// session and every token of it.
	g, next, err := s.rotateRefresh(ctx, refresh)
	if err != nil {
		t.Fatal(err)
	}
	if g.sessionID != sess.ID || g.clientID != StorefrontClient || strings.Join(g.scopes, " ") != "openid email" {
		t.Fatalf("grant = %+v", g)
	}
	if _, err := s.lookupRefresh(ctx, next); err != nil {
		t.Fatalf("the new token: %v", err)
	}
	if _, _, err := s.rotateRefresh(ctx, refresh); !errors.Is(err, errRefreshReplayed) {
		t.Fatalf("replay: %v, want errRefreshReplayed", err)
	}
	if _, err := s.get(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("session after replay: %v", err)
	}
	if _, _, err := s.rotateRefresh(ctx, next); !errors.Is(err, ErrInvalidRefreshToken) || errors.Is(err, errRefreshReplayed) {
		t.Fatalf("the successor after a replay: %v, want plain ErrInvalidRefreshToken", err)
	}
	revs, _, err := s.revocations(ctx, 0, 10)
	if err != nil || len(revs) != 1 || revs[0].sessionID != sess.ID {
		t.Fatalf("revocations %+v, %v", revs, err)
	}
	if n, _ := s.rdb.Exists(ctx, s.refreshKey(sess.ID), s.usedKey(sess.ID)).Result(); n != 0 {
		t.Fatalf("%d token keys outlived the session", n)
	}
}

func TestRefreshTokensThatAreNotRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestSessions(t, time.Now)
	sess, _, _ := mustCreate(t, s, newSession{customerID: id.New("cust"), clientID: StorefrontClient,
		refresh: &refreshGrant{clientID: StorefrontClient, scopes: []string{"openid"}}})
	forged, _ := newSecret(sess.ID)
	for name, tok := range map[string]string{"empty": "", "garbage": "not a token", "forged for a live session": forged, "unknown session": mustSecret(t, id.New("sess"))} {
		if _, _, err := s.rotateRefresh(ctx, tok); !errors.Is(err, ErrInvalidRefreshToken) || errors.Is(err, errRefreshReplayed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := s.get(ctx, sess.ID); err != nil {
		t.Fatalf("an unknown token ended the session: %v", err)
	}
}

func mustSecret(t *testing.T, sid string) string {
	t.Helper()
	s, err := newSecret(sid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Of concurrent refreshes with one token exactly one wins; the others are
// replays and end the session.
func TestConcurrentRefreshesRotateOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestSessions(t, time.Now)
	sess, _, refresh := mustCreate(t, s, newSession{customerID: id.New("cust"), clientID: StorefrontClient,
		refresh: &refreshGrant{clientID: StorefrontClient, scopes: []string{"openid"}}})
	var wg sync.WaitGroup
	results := make([]error, 8)
	for i := range results {
		wg.Go(func() { _, _, results[i] = s.rotateRefresh(ctx, refresh) })
	}
	wg.Wait()
	ok := 0
	for _, err := range results {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrInvalidRefreshToken):
			t.Fatalf("unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d refreshes succeeded, want 1", ok)
	}
	if _, err := s.get(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the session survived the replays: %v", err)
	}
}

func TestSessionsExpireWhenIdle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := newFakeClock()
	s := newTestSessions(t, clock.Now)
	s.opts.idle = time.Hour
	sess, _, refresh := mustCreate(t, s, newSession{customerID: id.New("cust"), clientID: StorefrontClient,
		refresh: &refreshGrant{clientID: StorefrontClient, scopes: []string{"openid"}}})
	ttl := s.rdb.PTTL(ctx, s.sessionKey(sess.ID)).Val()
	if ttl <= 0 || ttl > time.Hour {
		t.Fatalf("TTL of a new session %v, want the idle timeout", ttl)
	}
	if rt := s.rdb.PTTL(ctx, s.refreshKey(sess.ID)).Val(); rt <= 0 || rt > time.Hour {
		t.Fatalf("TTL of its refresh tokens %v", rt)
	}
	// Near the absolute end, the TTL is what is left of the session.
	clock.Advance(30*24*time.Hour - 10*time.Minute)
	if _, _, err := s.rotateRefresh(ctx, refresh); err != nil {
		t.Fatal(err)
	}
	if ttl := s.rdb.PTTL(ctx, s.sessionKey(sess.ID)).Val(); ttl > 10*time.Minute || ttl <= 0 {
		t.Fatalf("TTL near the absolute end %v, want at most 10m", ttl)
	}
}

func TestSessionListAndPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestSessions(t, time.Now)
	customer, other := id.New("cust"), id.New("cust")
	first, _, _ := mustCreate(t, s, newSession{customerID: customer, clientID: StorefrontClient})
	second, _, _ := mustCreate(t, s, newSession{customerID: customer, clientID: StorefrontClient})
	mustCreate(t, s, newSession{customerID: other, clientID: StorefrontClient})
	list, err := s.list(ctx, customer)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != second.ID || list[1].ID != first.ID {
		t.Fatalf("list = %v, want the two sessions newest first", ids(list))
	}
	// A session that expired is dropped from the index when listed.
	s.rdb.Del(ctx, s.sessionKey(first.ID))
	if list, _ = s.list(ctx, customer); len(list) != 1 || list[0].ID != second.ID {
		t.Fatalf("after expiry: %v", ids(list))
	}
	if n := s.rdb.ZCard(ctx, s.indexKey(customer)).Val(); n != 1 {
		t.Fatalf("index holds %d sessions after a lazy cleanup, want 1", n)
	}
}

func TestSessionsPerCustomerAreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestSessions(t, time.Now)
	customer := id.New("cust")
	oldest, _, _ := mustCreate(t, s, newSession{customerID: customer, clientID: StorefrontClient})
	for range maxSessionsPerCustomer {
		mustCreate(t, s, newSession{customerID: customer, clientID: StorefrontClient})
	}
	list, err := s.list(ctx, customer)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != maxSessionsPerCustomer {
		t.Fatalf("%d sessions, want %d", len(list), maxSessionsPerCustomer)
	}
	if _, err := s.get(ctx, oldest.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the oldest session survived: %v", err)
	}
}

func TestBrowserCookies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestSessions(t, time.Now)
	sess, cookie, _ := mustCreate(t, s, newSession{customerID: id.New("cust"), clientID: StorefrontClient, cookie: true})
	if got, err := s.byCookie(ctx, cookie); err != nil || got.ID != sess.ID {
		t.Fatalf("byCookie: %v, %v", got, err)
	}
	// The session id alone, or with another secret, is not the cookie.
	for _, bad := range []string{sess.ID, mustSecret(t, sess.ID), ""} {
		if _, err := s.byCookie(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("byCookie(%q): %v", bad, err)
		}
	}
	// A REST session has no cookie at all.
	rest, _, _ := mustCreate(t, s, newSession{customerID: id.New("cust"), clientID: StorefrontClient})
	if _, err := s.byCookie(ctx, mustSecret(t, rest.ID)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a REST session answered to a cookie: %v", err)
	}
}

// Revocations come back in order, each once, with the cursor of the last;
// expires_at is when the last access token of the session expires.
func TestRevocationsPageByCursor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestSessions(t, time.Now)
	revs, cursor, err := s.revocations(ctx, 0, 10)
	if err != nil || len(revs) != 0 {
		t.Fatalf("before any revocation: %v %v", revs, err)
	}
	var want []string
	for range 5 {
		sess, _, _ := mustCreate(t, s, newSession{customerID: id.New("cust"), clientID: StorefrontClient})
		if ok, err := s.end(ctx, sess.ID); err != nil || !ok {
			t.Fatalf("end: %v %v", ok, err)
		}
		want = append(want, sess.ID)
	}
	var got []string
	for range 10 {
		page, next, err := s.revocations(ctx, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			got = append(got, r.sessionID)
			if d := r.expiresAt.Sub(r.revokedAt); d != s.opts.tokenLife {
				t.Fatalf("expires %v after revocation, want %v", d, s.opts.tokenLife)
			}
			if time.Since(r.revokedAt) > time.Minute || time.Until(r.revokedAt) > time.Minute {
				t.Fatalf("revoked_at %v is not now", r.revokedAt)
			}
		}
		if next <= cursor {
			t.Fatalf("cursor went from %d to %d", cursor, next)
		}
		cursor = next
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("paged revocations %v, want %v", got, want)
	}
	// A revocation never scores below an earlier one, even when the clock
	// behind it is slower (or the same microsecond), so a cursor skips none.
	ahead := time.Now().Add(10 * time.Second).UnixMicro()
	s.rdb.Set(ctx, s.revokedLastKey(), ahead, 0)
	late, _, _ := mustCreate(t, s, newSession{customerID: id.New("cust"), clientID: StorefrontClient})
	if _, err := s.end(ctx, late.ID); err != nil {
		t.Fatal(err)
	}
	if page, next, err := s.revocations(ctx, ahead, 10); err != nil || len(page) != 1 || page[0].sessionID != late.ID || next != ahead+1 {
		t.Fatalf("after a cursor from a faster clock: %v, next %d (want %d), %v", page, next, ahead+1, err)
	}
	cursor = ahead + 1
	// Ending a session twice, or one that never existed, records nothing new.
	if ok, err := s.end(ctx, want[0]); ok || err != nil {
		t.Fatalf("ending an ended session: %v %v", ok, err)
	}
	if page, _, _ := s.revocations(ctx, cursor, 10); len(page) != 0 {
		t.Fatalf("revocations after the last cursor: %v", page)
	}
}

func ids(list []*Session) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = s.ID
	}
	return out
}
