package identity

import (
	"context"
	_ "embed"
	"fmt"
	"github.com/mercato/mercato/platform/cache"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/idempotency"
	"github.com/mercato/mercato/platform/service"
	"github.com/mercato/mercato/services/identity/migrations"
)

const serviceName = "identity"

// Name is the service's name in configuration, topics and databases.
const Name = serviceName

// Migrations is identity's schema, for `mercato migrate`.
func Migrations() fs.FS { return migrations.FS }

// OpenAPI is identity's part of the public API document: the REST
// endpoints, the OpenID provider's endpoints and the login page.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Run wires identity into env: its database and outbox relay, Redis for
// sessions, the signing keys, the OpenID provider with its login page, the
// REST API and the internal RPC API; and the admin account when configured.
func Run(ctx context.Context, env *service.Env) error {
	return run(ctx, env, options{})
}

// options let tests drive time.
type options struct {
	// now is the clock of key rotation and of sessions (default time.Now).
	now func() time.Time
	// keyReload is how often replicas reread the signing keys (default:
	// a tenth of the rotation period, at most a minute).
	keyReload time.Duration
}

func run(ctx context.Context, env *service.Env, opts options) error {
	cfg := env.Config.Get()
	if opts.now == nil {
		opts.now = time.Now
	}
	if cfg.Identity.KeyRotation <= 0 || cfg.Identity.AccessTokenTTL <= 0 {
		return fmt.Errorf("identity.key_rotation and identity.access_token_ttl must be positive")
	}
	if opts.keyReload <= 0 {
		opts.keyReload = max(min(cfg.Identity.KeyRotation/10, time.Minute), time.Second)
	}
	iss := auth.Issuer(cfg)
	pool, err := env.Postgres(ctx, migrations.FS)
	if err != nil {
		return err
	}
	rdb, err := env.Redis(ctx)
	if err != nil {
		return err
	}
	if err := env.Outbox(ctx, pool); err != nil {
		return err
	}
	hasher, err := NewHasher(cfg.Identity.Argon2)
	if err != nil {
		return err
	}
	store := NewStore(pool, env.Namespace())
	if cfg.Identity.AdminEmail != "" && cfg.Identity.AdminPassword != "" {
		created, err := store.BootstrapAdmin(ctx, NormalizeEmail(cfg.Identity.AdminEmail), cfg.Identity.AdminPassword, hasher, opts.now())
		if err != nil {
			return fmt.Errorf("admin account from identity.admin_email: %w", err)
		}
		env.Log.Info("admin account ready", "created", created)
	}

	signing := newKeyManager(pool, keyOptions{
		rotation:  cfg.Identity.KeyRotation,
		retention: cfg.Identity.AccessTokenTTL + cfg.Identity.IDTokenTTL,
		reload:    opts.keyReload,
		now:       opts.now,
	}, env.Log)
	if err := signing.sync(ctx); err != nil {
		return err
	}
	env.Go("signing-keys", signing.run)

	sessions := newSessionStore(rdb, env.Keys(), sessionOptions{
		ttl: cfg.Identity.SessionTTL, idle: cfg.Identity.SessionIdle,
		tokenLife: cfg.Identity.AccessTokenTTL + cfg.Auth.Leeway, now: opts.now,
	}, env.Log)
	sessions.replays = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "identity_refresh_token_replays_total",
		Help: "Used refresh tokens presented again; each revoked its session.",
	})
	env.Registry.MustRegister(sessions.replays)
	registered, err := newClients(cfg, iss)
	if err != nil {
		return err
	}
	st := &storage{rdb: rdb, keys: env.Keys(), store: store, sessions: sessions, signing: signing, clients: registered, accessTTL: cfg.Identity.AccessTokenTTL}
	provider, err := newProvider(st, iss)
	if err != nil {
		return fmt.Errorf("openid provider: %w", err)
	}
	mint := &tokens{issuer: iss, audience: cfg.Auth.Audience, accessTTL: cfg.Identity.AccessTokenTTL, storage: st}
	browserCookies := cookies{secure: strings.HasPrefix(iss, "https://")}
	tokenVerifier, err := env.Auth(ctx)
	if err != nil {
		return err
	}
	verify := &verifier{tokens: tokenVerifier, sessions: sessions}
	accts := &accounts{store: store, hasher: hasher, throttle: newThrottle(rdb, env.Keys(), env.Config), log: env.Log, logins: newLoginCounter(env.Registry)}

	mux := env.Server.Mux()
	(&openID{provider: provider, storage: st, sessions: sessions, tokens: mint, verifier: verify, cookies: browserCookies, issuer: iss, log: env.Log}).routes(mux)
	login, err := newLoginPage(loginPage{
		storage: st, sessions: sessions, accounts: accts, provider: provider, cookies: browserCookies, issuer: iss, log: env.Log, now: opts.now,
	})
	if err != nil {
		return err
	}
	login.routes(mux)

	idempotent, err := idempotency.New(rdb, env.Keys(), env.Registry, env.Log).Middleware(idempotency.Options{Scope: auth.CallerScope})
	if err != nil {
		return err
	}
	// Profiles live a second in process memory: replicas share no event
	// about profile changes, so this bounds how stale another replica's copy
	// can be; Redis holds them longer and is invalidated by the writer.
	profiles, err := cache.New[[]byte]("profile", cache.Options{LocalSize: 100_000, LocalTTL: time.Second, RemoteTTL: 10 * time.Minute},
		rdb, env.Keys(), cache.Raw{}, env.Registry, env.Log)
	if err != nil {
		return err
	}
	a := &api{store: store, sessions: sessions, accounts: accts, hasher: hasher, tokens: mint, storage: st, clients: registered,
		verifier: verify, profiles: profiles, log: env.Log, now: func() time.Time { return opts.now().UTC() }}
	a.public(mux, idempotent)
	a.me(mux, func(h http.Handler) http.Handler { return verify.requireToken(idempotent(h)) })
	if err := registerRPC(env, sessions); err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	return nil
}
