package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/natsbroker"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/idempotency"
	"github.com/mercato/mercato/platform/openapi"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/platformtest"
	identityv1 "github.com/mercato/mercato/proto/gen/mercato/identity/v1"
	"github.com/mercato/mercato/proto/gen/mercato/identity/v1/identityv1connect"
)

const password = "correct horse battery"

func TestRegistrationAndProfile(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))

	r := in.do(t, "POST", "/v1/customers", map[string]string{"email": "  Ada@Example.COM ", "password": password, "name": " Ada Lovelace "})
	if r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	var created map[string]any
	r.json(t, &created)
	keys := make([]string, 0, len(created))
	for k := range created {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !slices.Equal(keys, []string{"created_at", "email", "id", "name"}) {
		t.Fatalf("body fields %v, want id, email, name, created_at only", keys)
	}
	if created["email"] != "ada@example.com" || created["name"] != "Ada Lovelace" || !id.Valid("cust", created["id"].(string)) {
		t.Fatalf("created %v", created)
	}

	tests := []struct {
		name   string
		body   any
		status int
		fields []string
		slug   string
	}{
		{"email taken in another spelling", map[string]string{"email": "ADA@example.com", "password": password, "name": "Imposter"}, 409, []string{"email"}, "email-taken"},
		{"invalid email", map[string]string{"email": "Ada <ada2@example.com>", "password": password, "name": "Ada"}, 422, []string{"email"}, "validation-failed"},
		{"short password", map[string]string{"email": "bob@example.com", "password": "123456789", "name": "Bob"}, 422, []string{"password"}, "validation-failed"},
		{"too long password", map[string]string{"email": "bob@example.com", "password": strings.Repeat("p", 1025), "name": "Bob"}, 422, []string{"password"}, "validation-failed"},
		{"no name", map[string]string{"email": "bob@example.com", "password": password, "name": ""}, 422, []string{"name"}, "validation-failed"},
		{"unknown field", `{"email":"bob@example.com","password":"correct horse","name":"Bob","admin":true}`, 422, []string{"admin"}, "validation-failed"},
		{"malformed", `{"email":`, 400, nil, "bad-request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := in.do(t, "POST", "/v1/customers", tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if got := r.problemFields(t); tt.fields != nil && !slices.Equal(got, tt.fields) {
				t.Fatalf("fields %v, want %v", got, tt.fields)
			}
			if got := r.problemType(t); got != "/problems/"+tt.slug {
				t.Fatalf("type %q, want %s", got, tt.slug)
			}
		})
	}

	tok := in.login(t, "ADA@example.com ", password)
	me := in.as(t, tok.AccessToken, "GET", "/v1/me", nil)
	var got map[string]any
	me.json(t, &got)
	if me.status != 200 || got["id"] != created["id"] || got["email"] != "ada@example.com" {
		t.Fatalf("GET /v1/me: %d %s", me.status, me.body)
	}
	if r := in.as(t, tok.AccessToken, "PATCH", "/v1/me", map[string]string{"name": "Ada King"}); r.status != 200 || !strings.Contains(string(r.body), `"Ada King"`) {
		t.Fatalf("PATCH /v1/me: %d %s", r.status, r.body)
	}
	if r := in.as(t, tok.AccessToken, "PATCH", "/v1/me", map[string]string{"name": " "}); r.status != 422 || !slices.Equal(r.problemFields(t), []string{"name"}) {
		t.Fatalf("PATCH with a blank name: %d %s", r.status, r.body)
	}
	if r := in.as(t, tok.AccessToken, "GET", "/v1/me", nil); !strings.Contains(string(r.body), `"Ada King"`) {
		t.Fatalf("the name did not stick: %s", r.body)
	}
}

func TestRegistrationIsIdempotent(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	body := map[string]string{"email": "idem@example.com", "password": password, "name": "Idem"}
	first := in.do(t, "POST", "/v1/customers", body, idempotency.Header, "signup-1")
	again := in.do(t, "POST", "/v1/customers", body, idempotency.Header, "signup-1")
	if first.status != 201 || again.status != 201 || string(first.body) != string(again.body) || again.header.Get(idempotency.ReplayedHeader) != "true" {
		t.Fatalf("first %d %s, replay %d %s", first.status, first.body, again.status, again.body)
	}
	other := map[string]string{"email": "idem2@example.com", "password": password, "name": "Idem"}
	if r := in.do(t, "POST", "/v1/customers", other, idempotency.Header, "signup-1"); r.status != 422 {
		t.Fatalf("the key with another body: %d %s", r.status, r.body)
	}
}

// customer.registered goes through the outbox to the broker.
func TestRegistrationPublishesEvent(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	in := start(t, cfg)
	cid := in.register(t, "events@example.com", password)

	nc, err := nats.Connect(platformtest.NATSURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, natsbroker.StreamName(cfg.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	var env events.Envelope
	platformtest.Eventually(t, "customer.registered is published", func() bool {
		msg, err := stream.GetLastMsgForSubject(ctx, events.Topic(cfg.Namespace, serviceName, EventCustomerRegistered))
		if err != nil {
			return false
		}
		return json.Unmarshal(msg.Data, &env) == nil
	})
	var data CustomerRegistered
	if err := env.Decode(&data); err != nil {
		t.Fatal(err)
	}
	if env.Type != EventCustomerRegistered || env.Source != serviceName || env.Subject != cid || data.CustomerID != cid || data.Email != "events@example.com" {
		t.Fatalf("event %+v, data %+v", env, data)
	}
}

// jwks fetches the instance's key set.
func (in *instance) jwks(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	r := in.do(t, "GET", "/keys", nil)
	if r.status != 200 {
		t.Fatalf("GET /keys: %d %s", r.status, r.body)
	}
	var ks jose.JSONWebKeySet
	r.json(t, &ks)
	return ks
}

// verifyWith checks a JWT's RS256 signature against a key set and returns
// its claims.
func verifyWith(t *testing.T, ks jose.JSONWebKeySet, raw string) map[string]any {
	t.Helper()
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	keys := ks.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q is not in the JWKS", tok.Headers[0].KeyID)
	}
	var out map[string]any
	if err := tok.Claims(keys[0].Key, &out); err != nil {
		t.Fatalf("signature: %v", err)
	}
	return out
}

func audience(c map[string]any) []string {
	switch a := c["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			out = append(out, v.(string))
		}
		return out
	}
	return nil
}

// The access token follows the contract the verifiers rely on.
func TestLoginMintsTheContractedTokens(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	cid := in.register(t, "tokens@example.com", password)
	tok := in.login(t, "tokens@example.com", password)
	if tok.TokenType != "Bearer" || tok.ExpiresIn != 900 || tok.RefreshToken == "" || tok.IDToken == "" {
		t.Fatalf("token body %+v", tok)
	}
	ks := in.jwks(t)
	if len(ks.Keys) != 1 || ks.Keys[0].Algorithm != "RS256" || ks.Keys[0].Use != "sig" {
		t.Fatalf("JWKS %+v", ks.Keys)
	}
	if pub, ok := ks.Keys[0].Key.(*rsa.PublicKey); !ok || pub.N.BitLen() != 2048 {
		t.Fatalf("JWKS key %T", ks.Keys[0].Key)
	}
	if h := header(t, tok.AccessToken); h["alg"] != "RS256" || h["kid"] != ks.Keys[0].KeyID {
		t.Fatalf("header %v", h)
	}
	c := verifyWith(t, ks, tok.AccessToken)
	// exp is set when minting starts, iat when signing: a second boundary
	// may fall between them.
	exp, iat := c["exp"].(float64), c["iat"].(float64)
	if c["iss"] != in.cfg.PublicURL || !slices.Contains(audience(c), "mercato") || c["sub"] != cid ||
		c["scope"] != "openid profile email" || !id.Valid("sess", fmt.Sprint(c["sid"])) || exp-iat < 899 || exp-iat > 900 ||
		c["jti"] == nil || c["client_id"] != StorefrontClient {
		t.Fatalf("access token claims %v", c)
	}
	if d := time.Until(time.Unix(int64(exp), 0)); d < 14*time.Minute || d > 16*time.Minute {
		t.Fatalf("access token expires in %v", d)
	}
	idc := verifyWith(t, ks, tok.IDToken)
	if idc["iss"] != in.cfg.PublicURL || !slices.Equal(audience(idc), []string{StorefrontClient}) || idc["sub"] != cid ||
		idc["sid"] != c["sid"] || idc["email"] != "tokens@example.com" || idc["at_hash"] == nil {
		t.Fatalf("ID token claims %v", idc)
	}
	// An ID token is not an access token.
	if r := in.as(t, tok.IDToken, "GET", "/v1/me", nil); r.status != 401 {
		t.Fatalf("an ID token was accepted as an access token: %d", r.status)
	}
}

func TestAdminScope(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	cfg.Identity.AdminEmail, cfg.Identity.AdminPassword = "Root@Example.com", "admin password 1"
	in := start(t, cfg)
	in.register(t, "shopper@example.com", password)
	if c := claims(t, in.login(t, "root@example.com", "admin password 1").AccessToken); c["scope"] != "openid profile email admin" {
		t.Fatalf("admin scope %q", c["scope"])
	}
	if c := claims(t, in.login(t, "shopper@example.com", password).AccessToken); c["scope"] != "openid profile email" {
		t.Fatalf("customer scope %q", c["scope"])
	}
}

// The admin account is created at the first start and updated by later
// ones, from replicas starting together too.
func TestAdminBootstrap(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	in := start(t, cfg)
	in.register(t, "owner@example.com", password)
	ctx := context.Background()
	hasher, err := NewHasher(cfg.Identity.Argon2)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pg.Open(ctx, cfg.Postgres, pg.DatabaseName(cfg.Namespace, serviceName))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := NewStore(pool, cfg.Namespace)

	// Concurrent replicas create one account.
	var wg sync.WaitGroup
	created := make([]bool, 4)
	for i := range created {
		wg.Go(func() {
			c, err := store.BootstrapAdmin(ctx, "admin@example.com", "first password", hasher, time.Now())
			if err != nil {
				t.Error(err)
			}
			created[i] = c
		})
	}
	wg.Wait()
	if n := countTrue(created); n != 1 {
		t.Fatalf("%d replicas created the admin, want 1", n)
	}
	admin := in.login(t, "admin@example.com", "first password")
	if !strings.Contains(claims(t, admin.AccessToken)["scope"].(string), "admin") {
		t.Fatal("the bootstrapped account has no admin scope")
	}
	// A restart with a new password updates it; an existing customer's
	// email makes that customer the admin.
	again := cfg
	again.Identity.AdminEmail, again.Identity.AdminPassword = "admin@example.com", "second password"
	restarted := start(t, again)
	if r := restarted.do(t, "POST", "/v1/auth/login", map[string]string{"email": "admin@example.com", "password": "first password"}); r.status != 401 {
		t.Fatalf("the old password still works: %d", r.status)
	}
	restarted.login(t, "admin@example.com", "second password")
	owner := cfg
	owner.Identity.AdminEmail, owner.Identity.AdminPassword = "OWNER@example.com", "owner admin password"
	promoted := start(t, owner)
	if c := claims(t, promoted.login(t, "owner@example.com", "owner admin password").AccessToken); !strings.Contains(c["scope"].(string), "admin") {
		t.Fatalf("the promoted customer's scope %q", c["scope"])
	}
	// Settings that could never sign in are refused.
	if _, err := store.BootstrapAdmin(ctx, "admin@example.com", "short", hasher, time.Now()); err == nil || !strings.Contains(err.Error(), "identity.admin_password") {
		t.Fatalf("a short admin password: %v", err)
	}
	// Unchanged settings write nothing.
	var before time.Time
	if err := pool.QueryRow(ctx, `SELECT updated_at FROM customers WHERE email = 'owner@example.com'`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := store.BootstrapAdmin(ctx, "owner@example.com", "owner admin password", hasher, time.Now()); err != nil {
		t.Fatal(err)
	}
	var after time.Time
	if err := pool.QueryRow(ctx, `SELECT updated_at FROM customers WHERE email = 'owner@example.com'`).Scan(&after); err != nil || !after.Equal(before) {
		t.Fatalf("an unchanged bootstrap rewrote the account (%v → %v, %v)", before, after, err)
	}
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// A hash made with other argon2id parameters is replaced at the next
// successful login, and only then.
func TestPasswordIsRehashedOnParameterChange(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	in := start(t, cfg)
	cid := in.register(t, "rehash@example.com", password)
	ctx := context.Background()
	pool, err := pg.Open(ctx, cfg.Postgres, pg.DatabaseName(cfg.Namespace, serviceName))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	stored := func() string {
		t.Helper()
		var h string
		if err := pool.QueryRow(ctx, `SELECT password_hash FROM customers WHERE id = $1`, cid).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if h := stored(); !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("stored hash has the form %q", h[:min(len(h), 30)])
	}
	stronger := cfg
	stronger.Identity.Argon2 = config.Argon2Config{MemoryKiB: 2048, Iterations: 2, Parallelism: 1}
	upgraded := start(t, stronger)
	upgraded.do(t, "POST", "/v1/auth/login", map[string]string{"email": "rehash@example.com", "password": "wrong password!"})
	if h := stored(); !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatal("a failed login rehashed the password")
	}
	upgraded.login(t, "rehash@example.com", password)
	if h := stored(); !strings.HasPrefix(h, "$argon2id$v=19$m=2048,t=2,p=1$") {
		t.Fatalf("after a login with new parameters the hash has the form %q", h[:min(len(h), 30)])
	}
	upgraded.login(t, "rehash@example.com", password)
}

// An unknown email and a wrong password are answered alike.
func TestLoginFailuresLookAlike(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "known@example.com", password)
	unknown := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "nobody@example.com", "password": password})
	wrong := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "known@example.com", "password": "wrong password!"})
	if unknown.status != 401 || wrong.status != 401 || string(unknown.body) != string(wrong.body) {
		t.Fatalf("unknown email %d %s\nwrong password %d %s", unknown.status, unknown.body, wrong.status, wrong.body)
	}
	if got := wrong.problemType(t); got != "/problems/invalid-credentials" {
		t.Fatalf("type %q", got)
	}
	if r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "", "password": ""}); r.status != 422 || !slices.Equal(r.problemFields(t), []string{"email", "password"}) {
		t.Fatalf("empty credentials: %d %s", r.status, r.body)
	}
}

// Logins of an unknown email cost as much as those with a wrong password.
// Compared loosely, with the default argon2id parameters, on medians: a
// login that skipped hashing would be many times faster.
func TestLoginTimingIsSimilar(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("timing comparison")
	}
	cfg := namespace(t)
	cfg.Identity.Argon2 = config.Defaults().Identity.Argon2
	cfg.Identity.LoginFailureBurst, cfg.Identity.LoginAttemptsPerMinute = 1000, 1000
	in := start(t, cfg)
	in.register(t, "timed@example.com", password)
	timed := func(email string) time.Duration {
		start := time.Now()
		if r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": email, "password": "wrong password!"}); r.status != 401 {
			t.Fatalf("login: %d %s", r.status, r.body)
		}
		return time.Since(start)
	}
	// Interleaved, so that a busy moment of the machine slows both alike.
	var known, unknowns []time.Duration
	for range 9 {
		known = append(known, timed("timed@example.com"))
		unknowns = append(unknowns, timed("untimed@example.com"))
	}
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	wrong, unknown := median(known), median(unknowns)
	if unknown*3 < wrong || wrong*3 < unknown {
		t.Fatalf("median login with an unknown email %v, with a wrong password %v", unknown, wrong)
	}
}

func TestLoginThrottling(t *testing.T) {
	t.Parallel()
	t.Run("per account, failures only", func(t *testing.T) {
		t.Parallel()
		cfg := namespace(t)
		cfg.Identity.LoginFailureBurst, cfg.Identity.LoginFailuresPerHour = 3, 100
		in := start(t, cfg)
		in.register(t, "target@example.com", password)
		in.register(t, "bystander@example.com", password)
		// Successes do not count.
		for range 5 {
			in.login(t, "target@example.com", password)
		}
		for i := range 3 {
			// From different addresses: the per-address limit is not what stops them.
			if r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "target@example.com", "password": "guess " + strconv.Itoa(i)},
				"X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i)); r.status != 401 {
				t.Fatalf("failure %d: %d %s", i, r.status, r.body)
			}
		}
		r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "Target@example.com", "password": password}, "X-Forwarded-For", "198.51.100.99")
		if r.status != 429 || r.problemType(t) != "/problems/rate-limited" {
			t.Fatalf("after the burst: %d %s", r.status, r.body)
		}
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 36 {
			t.Fatalf("Retry-After %q, want 1..36 s (one failure per 36 s refills)", r.header.Get("Retry-After"))
		}
		in.login(t, "bystander@example.com", password)
	})
	t.Run("per client address", func(t *testing.T) {
		t.Parallel()
		cfg := namespace(t)
		cfg.Identity.LoginAttemptsPerMinute = 4
		in := start(t, cfg)
		in.register(t, "ip@example.com", password)
		for range 4 {
			in.login(t, "ip@example.com", password, "X-Forwarded-For", "203.0.113.7")
		}
		r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "ip@example.com", "password": password}, "X-Forwarded-For", "203.0.113.7")
		if r.status != 429 || r.header.Get("Retry-After") == "" {
			t.Fatalf("fifth attempt a minute: %d %s", r.status, r.body)
		}
		in.login(t, "ip@example.com", password, "X-Forwarded-For", "203.0.113.8")
	})
	t.Run("per-address limit off for load tests", func(t *testing.T) {
		t.Parallel()
		cfg := namespace(t)
		cfg.Identity.LoginAttemptsPerMinute = 2
		cfg.Identity.LoginFailureBurst = 2
		cfg.Gateway.RateLimitPerIP = 0
		in := start(t, cfg)
		in.register(t, "load@example.com", password)
		for range 5 {
			in.login(t, "load@example.com", password, "X-Forwarded-For", "203.0.113.9")
		}
		for range 2 {
			in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "load@example.com", "password": "wrong password!"}, "X-Forwarded-For", "203.0.113.9")
		}
		if r := in.do(t, "POST", "/v1/auth/login", map[string]string{"email": "load@example.com", "password": password}); r.status != 429 {
			t.Fatalf("the per-account limit is off too: %d", r.status)
		}
	})
}

// revoked lists the sessions ListRevokedSessions reports from the start.
func (in *instance) revoked(t *testing.T) []string {
	t.Helper()
	c := identityv1connect.NewSessionServiceClient(http.DefaultClient, in.url)
	resp, err := c.ListRevokedSessions(context.Background(), connect.NewRequest(&identityv1.ListRevokedSessionsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range resp.Msg.GetSessions() {
		out = append(out, s.GetSessionId())
	}
	return out
}

func TestRefreshRotatesAndReplayRevokes(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "refresh@example.com", password)
	first := in.login(t, "refresh@example.com", password)
	sid := claims(t, first.AccessToken)["sid"]

	r := in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": first.RefreshToken})
	if r.status != 200 {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	var second tokenBody
	r.json(t, &second)
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken || claims(t, second.AccessToken)["sid"] != sid || second.IDToken == "" {
		t.Fatalf("refreshed tokens %+v", second)
	}
	if r := in.as(t, second.AccessToken, "GET", "/v1/me", nil); r.status != 200 {
		t.Fatalf("the refreshed access token: %d", r.status)
	}

	// The used token again: 401, and the session is gone with all its tokens.
	replay := in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": first.RefreshToken})
	if replay.status != 401 || replay.problemType(t) != "/problems/invalid-refresh-token" {
		t.Fatalf("replay: %d %s", replay.status, replay.body)
	}
	if r := in.as(t, second.AccessToken, "GET", "/v1/me", nil); r.status != 401 {
		t.Fatalf("an access token of the replayed session: %d", r.status)
	}
	if r := in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": second.RefreshToken}); r.status != 401 {
		t.Fatalf("the latest refresh token of the replayed session: %d", r.status)
	}
	if got := in.revoked(t); !slices.Contains(got, sid.(string)) {
		t.Fatalf("revoked sessions %v lack %s", got, sid)
	}
	for _, bad := range []string{"", "garbage", first.AccessToken} {
		if r := in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": bad}); r.status/100 != 4 {
			t.Fatalf("refresh with %q: %d", bad, r.status)
		}
	}
}

func TestLogoutRevokes(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "logout@example.com", password)

	tok := in.login(t, "logout@example.com", password)
	if r := in.as(t, tok.AccessToken, "POST", "/v1/auth/logout", nil); r.status != 204 {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := in.as(t, tok.AccessToken, "GET", "/v1/me", nil); r.status != 401 || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("after logout: %d %v", r.status, r.header)
	}
	if r := in.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": tok.RefreshToken}); r.status != 401 {
		t.Fatalf("refresh after logout: %d", r.status)
	}
	if got := in.revoked(t); !slices.Contains(got, claims(t, tok.AccessToken)["sid"].(string)) {
		t.Fatalf("revoked %v", got)
	}

	// A refresh token alone signs out too.
	tok = in.login(t, "logout@example.com", password)
	if r := in.do(t, "POST", "/v1/auth/logout", map[string]string{"refresh_token": tok.RefreshToken}); r.status != 204 {
		t.Fatalf("logout with a refresh token: %d %s", r.status, r.body)
	}
	if r := in.as(t, tok.AccessToken, "GET", "/v1/me", nil); r.status != 401 {
		t.Fatalf("after logout by refresh token: %d", r.status)
	}
	if r := in.do(t, "POST", "/v1/auth/logout", nil); r.status != 401 {
		t.Fatalf("logout without credentials: %d", r.status)
	}
}

// signingKeyOf reads the key an instance signs with from its database, so
// that a test can mint tokens that are correctly signed but wrong
// otherwise.
func signingKeyOf(t *testing.T, cfg config.Config) *signingKey {
	t.Helper()
	ctx := context.Background()
	pool, err := pg.Open(ctx, cfg.Postgres, pg.DatabaseName(cfg.Namespace, serviceName))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	m := newKeyManager(pool, keyOptions{rotation: 24 * time.Hour, retention: time.Hour, reload: time.Minute, now: time.Now}, platformtest.Logger(t))
	keys, err := m.load(ctx, time.Now())
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys %v, %v", keys, err)
	}
	return keys[0]
}

func signJWT(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// identity's own verifier refuses every token the contract refuses.
func TestAccessTokenRefusals(t *testing.T) {
	t.Parallel()
	cfg := namespace(t)
	in := start(t, cfg)
	cid := in.register(t, "verify@example.com", password)
	tok := in.login(t, "verify@example.com", password)
	key := signingKeyOf(t, in.cfg)
	good := claims(t, tok.AccessToken)
	with := func(change map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range good {
			c[k] = v
		}
		for k, v := range change {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok.AccessToken, ".")
	tampered := parts[0] + "." + jwtPart(t, with(map[string]any{"scope": "openid profile email admin"})) + "." + parts[2]
	noneToken := jwtPart(t, map[string]any{"alg": "none", "typ": "JWT", "kid": key.kid}) + "." + jwtPart(t, good) + "."
	hmacKey := []byte(fmt.Sprint(key.private.PublicKey.N))

	tests := map[string]string{
		"no token":            "",
		"garbage":             "not.a.jwt",
		"tampered payload":    tampered,
		"alg none":            noneToken,
		"HMAC with a public":  signJWT(t, jose.HS256, hmacKey, key.kid, good),
		"another key":         signJWT(t, jose.RS256, other, key.kid, good),
		"unknown kid":         signJWT(t, jose.RS256, key.private, "key_unknown", good),
		"wrong issuer":        signJWT(t, jose.RS256, key.private, key.kid, with(map[string]any{"iss": "https://evil.example"})),
		"wrong audience":      signJWT(t, jose.RS256, key.private, key.kid, with(map[string]any{"aud": []string{"storefront"}})),
		"expired":             signJWT(t, jose.RS256, key.private, key.kid, with(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})),
		"no expiry":           signJWT(t, jose.RS256, key.private, key.kid, with(map[string]any{"exp": nil})),
		"unknown session":     signJWT(t, jose.RS256, key.private, key.kid, with(map[string]any{"sid": id.New("sess")})),
		"other customer":      signJWT(t, jose.RS256, key.private, key.kid, with(map[string]any{"sub": id.New("cust")})),
		"RS384 with this key": signJWT(t, jose.RS384, key.private, key.kid, good),
	}
	// The untouched token passes, so each refusal is for its one reason.
	if r := in.as(t, signJWT(t, jose.RS256, key.private, key.kid, good), "GET", "/v1/me", nil); r.status != 200 || !strings.Contains(string(r.body), cid) {
		t.Fatalf("a well-formed token: %d %s", r.status, r.body)
	}
	for name, raw := range tests {
		t.Run(name, func(t *testing.T) {
			var r response
			if raw == "" {
				r = in.do(t, "GET", "/v1/me", nil)
			} else {
				r = in.as(t, raw, "GET", "/v1/me", nil)
			}
			if r.status != 401 || r.header.Get("Content-Type") != "application/problem+json" || r.header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%d %v %s", r.status, r.header, r.body)
			}
		})
	}
}

func jwtPart(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

func TestAddresses(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "home@example.com", password)
	in.register(t, "neighbour@example.com", password)
	me := in.login(t, "home@example.com", password).AccessToken
	neighbour := in.login(t, "neighbour@example.com", password).AccessToken
	addr := map[string]string{"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "gb", "phone": "+44 20 7946 0958"}

	r := in.as(t, me, "POST", "/v1/me/addresses", addr, idempotency.Header, "addr-1")
	if r.status != 201 {
		t.Fatalf("add: %d %s", r.status, r.body)
	}
	var a Address
	r.json(t, &a)
	if a.Country != "GB" || r.header.Get("Location") != "/v1/me/addresses/"+a.ID {
		t.Fatalf("address %+v, Location %q", a, r.header.Get("Location"))
	}
	if again := in.as(t, me, "POST", "/v1/me/addresses", addr, idempotency.Header, "addr-1"); again.status != 201 || string(again.body) != string(r.body) {
		t.Fatalf("replayed add: %d %s", again.status, again.body)
	}
	var page struct{ Items []Address }
	in.as(t, me, "GET", "/v1/me/addresses", nil).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].ID != a.ID {
		t.Fatalf("list after a replayed add: %+v", page.Items)
	}
	if r := in.as(t, me, "GET", "/v1/me/addresses/"+a.ID, nil); r.status != 200 {
		t.Fatalf("get: %d", r.status)
	}

	// Another customer's address does not exist for the neighbour.
	for _, method := range []string{"GET", "DELETE"} {
		if r := in.as(t, neighbour, method, "/v1/me/addresses/"+a.ID, nil); r.status != 404 {
			t.Fatalf("%s another customer's address: %d", method, r.status)
		}
	}
	in.as(t, neighbour, "GET", "/v1/me/addresses", nil).json(t, &page)
	if len(page.Items) != 0 {
		t.Fatalf("the neighbour sees %+v", page.Items)
	}
	if r := in.as(t, me, "POST", "/v1/me/addresses", map[string]string{"name": "x", "line1": "y", "city": "z", "postal_code": "1", "country": "XX"}); r.status != 422 || !slices.Equal(r.problemFields(t), []string{"country"}) {
		t.Fatalf("bad country: %d %s", r.status, r.body)
	}
	if r := in.do(t, "GET", "/v1/me/addresses", nil); r.status != 401 {
		t.Fatalf("without a token: %d", r.status)
	}

	// At most 20.
	for i := 1; i < maxAddresses; i++ {
		if r := in.as(t, me, "POST", "/v1/me/addresses", addr); r.status != 201 {
			t.Fatalf("address %d: %d %s", i+1, r.status, r.body)
		}
	}
	if r := in.as(t, me, "POST", "/v1/me/addresses", addr); r.status != 409 || r.problemType(t) != "/problems/address-limit-reached" {
		t.Fatalf("address 21: %d %s", r.status, r.body)
	}
	if r := in.as(t, me, "DELETE", "/v1/me/addresses/"+a.ID, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := in.as(t, me, "GET", "/v1/me/addresses/"+a.ID, nil); r.status != 404 {
		t.Fatalf("get after delete: %d", r.status)
	}
	if r := in.as(t, me, "POST", "/v1/me/addresses", addr); r.status != 201 {
		t.Fatalf("add after a delete: %d", r.status)
	}
}

func TestSessionsOfTheCustomer(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "devices@example.com", password)
	in.register(t, "stranger@example.com", password)
	phone := in.login(t, "devices@example.com", password, "User-Agent", "Phone/1.0", "X-Forwarded-For", "192.0.2.10")
	laptop := in.login(t, "devices@example.com", password, "User-Agent", "Laptop/2.0", "X-Forwarded-For", "192.0.2.20")
	stranger := in.login(t, "stranger@example.com", password)

	var page struct {
		Items []struct {
			ID         string    `json:"id"`
			CreatedAt  time.Time `json:"created_at"`
			LastSeenAt time.Time `json:"last_seen_at"`
			UserAgent  string    `json:"user_agent"`
			IP         string    `json:"ip"`
			Current    bool      `json:"current"`
		}
	}
	in.as(t, laptop.AccessToken, "GET", "/v1/me/sessions", nil).json(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("sessions %+v", page.Items)
	}
	newest, oldest := page.Items[0], page.Items[1]
	if newest.UserAgent != "Laptop/2.0" || newest.IP != "192.0.2.20" || !newest.Current ||
		oldest.UserAgent != "Phone/1.0" || oldest.IP != "192.0.2.10" || oldest.Current || newest.CreatedAt.IsZero() || newest.LastSeenAt.IsZero() {
		t.Fatalf("sessions %+v", page.Items)
	}
	phoneSID := claims(t, phone.AccessToken)["sid"].(string)
	if oldest.ID != phoneSID {
		t.Fatalf("the phone's session is %s, listed %s", phoneSID, oldest.ID)
	}

	// Someone else's session, or a malformed id, does not exist.
	for _, sid := range []string{phoneSID, "sess_nope", "../../etc"} {
		if r := in.as(t, stranger.AccessToken, "DELETE", "/v1/me/sessions/"+sid, nil); r.status != 404 {
			t.Fatalf("a stranger deleting %s: %d", sid, r.status)
		}
	}
	if r := in.as(t, phone.AccessToken, "GET", "/v1/me", nil); r.status != 200 {
		t.Fatalf("the phone after a stranger's attempt: %d", r.status)
	}
	// Signing the phone out from the laptop.
	if r := in.as(t, laptop.AccessToken, "DELETE", "/v1/me/sessions/"+phoneSID, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := in.as(t, phone.AccessToken, "GET", "/v1/me", nil); r.status != 401 {
		t.Fatalf("the phone after being signed out: %d", r.status)
	}
	if got := in.revoked(t); !slices.Contains(got, phoneSID) {
		t.Fatalf("revoked %v", got)
	}
	in.as(t, laptop.AccessToken, "GET", "/v1/me/sessions", nil).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].UserAgent != "Laptop/2.0" {
		t.Fatalf("sessions after the delete: %+v", page.Items)
	}
}

func TestListRevokedSessionsByCursor(t *testing.T) {
	t.Parallel()
	in := start(t, namespace(t))
	in.register(t, "rpc@example.com", password)
	c := identityv1connect.NewSessionServiceClient(http.DefaultClient, in.url)
	ctx := context.Background()
	list := func(cursor string) *identityv1.ListRevokedSessionsResponse {
		t.Helper()
		resp, err := c.ListRevokedSessions(ctx, connect.NewRequest(&identityv1.ListRevokedSessionsRequest{Cursor: cursor}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	first := list("")
	if len(first.GetSessions()) != 0 {
		t.Fatalf("before any logout: %v", first.GetSessions())
	}
	var sids []string
	for range 3 {
		tok := in.login(t, "rpc@example.com", password)
		in.as(t, tok.AccessToken, "POST", "/v1/auth/logout", nil)
		sids = append(sids, claims(t, tok.AccessToken)["sid"].(string))
	}
	page := list(first.GetCursor())
	var got []string
	for _, s := range page.GetSessions() {
		got = append(got, s.GetSessionId())
		if d := s.GetExpiresAt().AsTime().Sub(s.GetRevokedAt().AsTime()); d != in.cfg.Identity.AccessTokenTTL+in.cfg.Auth.Leeway {
			t.Fatalf("expires_at - revoked_at = %v", d)
		}
	}
	if !slices.Equal(got, sids) {
		t.Fatalf("revocations %v, want %v in order", got, sids)
	}
	if rest := list(page.GetCursor()); len(rest.GetSessions()) != 0 || rest.GetCursor() != page.GetCursor() {
		t.Fatalf("after the last cursor: %v, cursor %q", rest.GetSessions(), rest.GetCursor())
	}
	if _, err := c.ListRevokedSessions(ctx, connect.NewRequest(&identityv1.ListRevokedSessionsRequest{Cursor: "yesterday"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a bad cursor: %v", err)
	}
}

// routeRecorder collects registered patterns.
type routeRecorder []string

func (r *routeRecorder) Handle(pattern string, _ http.Handler) { *r = append(*r, pattern) }

// The OpenAPI fragment and the routes must describe the same operations:
// the gateway routes exactly what the fragment lists.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var routes routeRecorder
	pass := func(h http.Handler) http.Handler { return h }
	a := &api{}
	a.public(&routes, pass)
	a.me(&routes, pass)
	(&openID{}).routes(&routes)
	(&loginPage{}).routes(&routes)
	f, err := openapi.ParseFragment(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, op := range f.Operations() {
		documented = append(documented, op.Pattern())
	}
	sort.Strings(routes)
	if !slices.Equal(routes, documented) {
		t.Fatalf("routes and OpenAPI differ\nroutes:     %v\ndocumented: %v", routes, documented)
	}
	// The fragment assembles with the shared components and names no
	// component it does not define.
	base, err := openapi.ParseFragment(openapi.Common)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi.Assemble("http://127.0.0.1:8080", base, map[string]*openapi.Fragment{serviceName: f})
	if err != nil {
		t.Fatal(err)
	}
	var assembled struct {
		Components map[string]map[string]any
	}
	if err := json.Unmarshal(doc, &assembled); err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs(string(doc)) {
		parts := strings.Split(strings.TrimPrefix(ref, "#/components/"), "/")
		if len(parts) != 2 || assembled.Components[parts[0]][parts[1]] == nil {
			t.Errorf("dangling reference %s", ref)
		}
	}
}

// refs lists the $ref targets in a JSON document.
func refs(doc string) []string {
	var out []string
	for _, part := range strings.Split(doc, `"$ref": "`)[1:] {
		out = append(out, part[:strings.IndexByte(part, '"')])
	}
	return out
}
