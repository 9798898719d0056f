// Package config loads Mercato's layered configuration: built-in defaults, then
// mercato.yaml, then MERCATO_* environment variables, then a live overlay file.
// Keys tagged `live:"true"` take new values while the process runs; every other
// key keeps the value it had at start until the process restarts.
package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config is the whole configuration of a Mercato process. Each service reads
// only its own section plus the shared infrastructure sections.
type Config struct {
	// Namespace prefixes every name Mercato creates: databases, Redis keys,
	// broker streams and exchanges. Test platforms use their own namespace.
	Namespace string `koanf:"namespace"`
	// PublicURL is the address clients use to reach the gateway; it defaults to
	// http:// plus the gateway's listen address.
	PublicURL string `koanf:"public_url"`

	Log       LogConfig       `koanf:"log"`
	Telemetry TelemetryConfig `koanf:"telemetry"`
	HTTP      HTTPConfig      `koanf:"http"`
	Postgres  PostgresConfig  `koanf:"postgres"`
	Redis     RedisConfig     `koanf:"redis"`
	Broker    BrokerConfig    `koanf:"broker"`
	RPC       RPCConfig       `koanf:"rpc"`
	Auth      AuthConfig      `koanf:"auth"`
	Gateway   GatewayConfig   `koanf:"gateway"`
	Catalog   CatalogConfig   `koanf:"catalog"`
	Identity  IdentityConfig  `koanf:"identity"`
	Inventory InventoryConfig `koanf:"inventory"`
	// Services maps a service name to where it listens and where others reach it.
	Services map[string]ServiceConfig `koanf:"services"`
}

// LogConfig controls structured logging.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `koanf:"level" live:"true"`
	// Format is json (default) or text.
	Format string `koanf:"format"`
}

// TelemetryConfig controls tracing export.
type TelemetryConfig struct {
	// OTLPEndpoint, when set, exports traces over OTLP/HTTP to this URL
	// (for example http://otel-collector:4318).
	OTLPEndpoint string `koanf:"otlp_endpoint"`
	// SampleRatio is the fraction of new traces that are recorded and exported.
	SampleRatio float64 `koanf:"sample_ratio"`
	// Pprof serves Go's profiler under /debug/pprof/ on every process; off by
	// default because it must never face the internet.
	Pprof bool `koanf:"pprof"`
}

// HTTPConfig bounds every HTTP server Mercato runs.
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout"`
	ReadTimeout       time.Duration `koanf:"read_timeout"`
	WriteTimeout      time.Duration `koanf:"write_timeout"`
	IdleTimeout       time.Duration `koanf:"idle_timeout"`
	ShutdownTimeout   time.Duration `koanf:"shutdown_timeout"`
	// ShutdownDelay is how long a stopping server keeps serving with /readyz
	// answering 503 before it closes its listener; set it above the load
	// balancer's probe interval in a cluster (0 on one machine).
	ShutdownDelay time.Duration `koanf:"shutdown_delay"`
	// MaxBodyBytes is the largest request body accepted (413 above it).
	MaxBodyBytes int64 `koanf:"max_body_bytes"`
}

// PostgresConfig locates the PostgreSQL server; each service gets its own
// database on it, named <namespace>_<service>.
type PostgresConfig struct {
	URL             string        `koanf:"url"`
	MaxConns        int32         `koanf:"max_conns"`
	MinConns        int32         `koanf:"min_conns"`
	ConnectTimeout  time.Duration `koanf:"connect_timeout"`
	MaxConnLifetime time.Duration `koanf:"max_conn_lifetime"`
}

// RedisConfig locates the Redis server and sizes the pool.
type RedisConfig struct {
	URL          string        `koanf:"url"`
	PoolSize     int           `koanf:"pool_size"`
	MinIdleConns int           `koanf:"min_idle_conns"`
	DialTimeout  time.Duration `koanf:"dial_timeout"`
	ReadTimeout  time.Duration `koanf:"read_timeout"`
	WriteTimeout time.Duration `koanf:"write_timeout"`
}

// BrokerConfig selects the event broker. URL picks the adapter by scheme
// (nats:// or amqp://); NATSURL names an external NATS server. When neither is
// set, `mercato up` embeds a NATS JetStream server.
type BrokerConfig struct {
	URL     string `koanf:"url"`
	NATSURL string `koanf:"nats_url"`
	// Replicas is the JetStream stream replica count (1 on one machine).
	Replicas int `koanf:"replicas"`
	// MaxAttempts is how many deliveries a consumer gets before a message is
	// parked in the dead-letter stream.
	MaxAttempts int `koanf:"max_attempts" live:"true"`
	// RetryBackoff is the first redelivery delay; it doubles per attempt up to
	// RetryBackoffMax.
	RetryBackoff    time.Duration `koanf:"retry_backoff" live:"true"`
	RetryBackoffMax time.Duration `koanf:"retry_backoff_max" live:"true"`
	// RelayInterval is how often the outbox relay polls when no notification
	// woke it.
	RelayInterval time.Duration `koanf:"relay_interval"`
	RelayBatch    int           `koanf:"relay_batch"`
}

// RPCConfig governs internal calls between services.
type RPCConfig struct {
	// Timeout is the deadline of a call that has none from its caller.
	Timeout time.Duration `koanf:"timeout" live:"true"`
	// Retries is how often an idempotent call is retried after a failure.
	Retries int `koanf:"retries" live:"true"`
	// BreakerFailureRatio opens a dependency's breaker when this share of the
	// last BreakerWindow calls failed.
	BreakerFailureRatio float64 `koanf:"breaker_failure_ratio" live:"true"`
	BreakerWindow       int     `koanf:"breaker_window" live:"true"`
	// BreakerDelay is how long an open breaker waits before a trial call.
	BreakerDelay time.Duration `koanf:"breaker_delay" live:"true"`
	// MaxConcurrent bounds the in-flight calls to one dependency (bulkhead).
	MaxConcurrent int `koanf:"max_concurrent" live:"true"`
}

// AuthConfig tells every verifier of access tokens (the gateway and the
// services) what to accept.
type AuthConfig struct {
	// Audience is the aud every access token must carry.
	Audience string `koanf:"audience"`
	// Leeway tolerates clock skew when checking exp, nbf and iat.
	Leeway time.Duration `koanf:"leeway"`
	// RevocationPoll is how often a verifier asks identity for newly revoked
	// sessions; a revoked session's tokens stop working within about this
	// long everywhere.
	RevocationPoll time.Duration `koanf:"revocation_poll" live:"true"`
	// JWKSRefresh is how often verifiers refetch identity's public keys even
	// when no unknown key id forces it.
	JWKSRefresh time.Duration `koanf:"jwks_refresh"`
}

// IdentityConfig configures accounts, sessions and the OpenID provider.
type IdentityConfig struct {
	// AccessTokenTTL is the life of an access token (short: revocation is
	// checked, but a stolen token is still useful until it expires).
	AccessTokenTTL time.Duration `koanf:"access_token_ttl"`
	// IDTokenTTL is the life of an ID token.
	IDTokenTTL time.Duration `koanf:"id_token_ttl"`
	// SessionTTL is the absolute life of a session (and its refresh tokens).
	SessionTTL time.Duration `koanf:"session_ttl"`
	// SessionIdle ends a session that has not been refreshed for this long.
	SessionIdle time.Duration `koanf:"session_idle"`
	// KeyRotation is how often a new signing key replaces the current one;
	// the old key stays published until every token it signed has expired.
	KeyRotation time.Duration `koanf:"key_rotation"`
	// Argon2 are the password hashing parameters; a stored hash made with
	// other parameters is rehashed at the next successful login.
	Argon2 Argon2Config `koanf:"argon2"`
	// LoginFailuresPerHour bounds failed logins per account; LoginFailureBurst
	// is how many may come at once.
	LoginFailuresPerHour int `koanf:"login_failures_per_hour" live:"true"`
	LoginFailureBurst    int `koanf:"login_failure_burst" live:"true"`
	// LoginAttemptsPerMinute bounds login attempts per client address.
	LoginAttemptsPerMinute int `koanf:"login_attempts_per_minute" live:"true"`
	// Clients are OpenID clients besides the built-in public storefront.
	Clients []ClientConfig `koanf:"clients"`
	// AdminEmail and AdminPassword, when both set, create or update an admin
	// account at start.
	AdminEmail    string `koanf:"admin_email"`
	AdminPassword string `koanf:"admin_password"`
}

// Argon2Config holds argon2id parameters.
type Argon2Config struct {
	// MemoryKiB is the memory cost in KiB.
	MemoryKiB uint32 `koanf:"memory_kib"`
	// Iterations is the time cost.
	Iterations uint32 `koanf:"iterations"`
	// Parallelism is the number of lanes.
	Parallelism uint8 `koanf:"parallelism"`
}

// InventoryConfig tunes stock keeping and flash-sale behaviour.
type InventoryConfig struct {
	// Locations are the stock locations in the order reservations draw from
	// them; one location ("default") means stock is per variant only.
	Locations []string `koanf:"locations"`
	// ReservationTTL is how long a reservation holds units when the caller
	// asks for no other time; MaxReservationTTL bounds what callers may ask.
	ReservationTTL    time.Duration `koanf:"reservation_ttl"`
	MaxReservationTTL time.Duration `koanf:"max_reservation_ttl"`
	// PurchaseLimit is how many units of one variant one customer may hold
	// and buy; 0 means no limit.
	PurchaseLimit int64 `koanf:"purchase_limit" live:"true"`
	// MaxInFlight bounds reservations being worked on at once in one process;
	// beyond it callers get an immediate "try again" rather than a queue.
	MaxInFlight int `koanf:"max_in_flight" live:"true"`
	// MaxInFlightPerVariant bounds them per variant, so that one hot variant
	// cannot take every slot and slow the others.
	MaxInFlightPerVariant int `koanf:"max_in_flight_per_variant" live:"true"`
	// SweepInterval is how often expired reservations are returned.
	SweepInterval time.Duration `koanf:"sweep_interval"`
	// LedgerBatch is how many Redis stream entries the ledger writer moves to
	// PostgreSQL in one transaction.
	LedgerBatch int `koanf:"ledger_batch"`
}

// ClientConfig registers an OpenID client.
type ClientConfig struct {
	ID string `koanf:"id"`
	// Secret makes a confidential client; empty means a public client, which
	// must use PKCE.
	Secret                 string   `koanf:"secret"`
	RedirectURIs           []string `koanf:"redirect_uris"`
	PostLogoutRedirectURIs []string `koanf:"post_logout_redirect_uris"`
}

// GatewayConfig configures the edge.
type GatewayConfig struct {
	// RateLimitPerIP is the sustained requests per second one client address
	// may make; 0 turns the per-IP limit off.
	RateLimitPerIP int `koanf:"rate_limit_per_ip" live:"true"`
	// RateLimitBurst is how many requests above the sustained rate a client may
	// make at once.
	RateLimitBurst int `koanf:"rate_limit_burst" live:"true"`
	// CORSOrigins lists the browser origins allowed to call the API; "*" allows
	// any origin (without credentials).
	CORSOrigins []string `koanf:"cors_origins" live:"true"`
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed when finding a
	// client's address.
	TrustedProxies []string `koanf:"trusted_proxies"`
	// UpstreamTimeout bounds one proxied request.
	UpstreamTimeout time.Duration `koanf:"upstream_timeout" live:"true"`
}

// CatalogConfig tunes the catalog's read path.
type CatalogConfig struct {
	// CacheTTL bounds how long a product stays in Redis without an event.
	CacheTTL time.Duration `koanf:"cache_ttl"`
	// LocalCacheSize is how many entries the in-process cache holds.
	LocalCacheSize int `koanf:"local_cache_size"`
	// LocalCacheTTL bounds how long an entry stays in process memory.
	LocalCacheTTL time.Duration `koanf:"local_cache_ttl"`
	// MaxAge is the Cache-Control max-age sent with product detail.
	MaxAge time.Duration `koanf:"max_age" live:"true"`
	// SeedDemo seeds a demo catalog when the catalog is empty at start.
	SeedDemo bool `koanf:"seed_demo"`
}

// ServiceConfig says where one service listens and how others reach it.
type ServiceConfig struct {
	// Listen is the address the service's HTTP server binds.
	Listen string `koanf:"listen"`
	// URL is the base URL other processes use to call it.
	URL string `koanf:"url"`
}

// Defaults returns the built-in configuration, the bottom layer.
func Defaults() Config {
	return Config{
		Namespace: "mercato",
		Log:       LogConfig{Level: "info", Format: "json"},
		Telemetry: TelemetryConfig{SampleRatio: 1},
		HTTP: HTTPConfig{
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			ShutdownTimeout:   15 * time.Second,
			MaxBodyBytes:      1 << 20,
		},
		Postgres: PostgresConfig{
			URL:             "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
			MaxConns:        20,
			MinConns:        2,
			ConnectTimeout:  5 * time.Second,
			MaxConnLifetime: time.Hour,
		},
		Redis: RedisConfig{
			URL:          "redis://127.0.0.1:6379/0",
			PoolSize:     64,
			MinIdleConns: 4,
			DialTimeout:  2 * time.Second,
			ReadTimeout:  time.Second,
			WriteTimeout: time.Second,
		},
		Broker: BrokerConfig{
			Replicas:        1,
			MaxAttempts:     8,
			RetryBackoff:    200 * time.Millisecond,
			RetryBackoffMax: 30 * time.Second,
			RelayInterval:   time.Second,
			RelayBatch:      256,
		},
		RPC: RPCConfig{
			Timeout:             2 * time.Second,
			Retries:             2,
			BreakerFailureRatio: 0.5,
			BreakerWindow:       20,
			BreakerDelay:        5 * time.Second,
			MaxConcurrent:       512,
		},
		Gateway: GatewayConfig{
			RateLimitPerIP:  100,
			RateLimitBurst:  200,
			CORSOrigins:     []string{"*"},
			UpstreamTimeout: 10 * time.Second,
		},
		Auth: AuthConfig{
			Audience:       "mercato",
			Leeway:         30 * time.Second,
			RevocationPoll: 500 * time.Millisecond,
			JWKSRefresh:    time.Hour,
		},
		Identity: IdentityConfig{
			AccessTokenTTL: 15 * time.Minute,
			IDTokenTTL:     time.Hour,
			SessionTTL:     30 * 24 * time.Hour,
			SessionIdle:    7 * 24 * time.Hour,
			KeyRotation:    24 * time.Hour,
			// OWASP's first recommended argon2id setting: 19 MiB, 2 passes,
			// 1 lane.
			Argon2:                 Argon2Config{MemoryKiB: 19 * 1024, Iterations: 2, Parallelism: 1},
			LoginFailuresPerHour:   100,
			LoginFailureBurst:      10,
			LoginAttemptsPerMinute: 60,
		},
		Inventory: InventoryConfig{
			Locations:             []string{"default"},
			ReservationTTL:        10 * time.Minute,
			MaxReservationTTL:     time.Hour,
			PurchaseLimit:         0,
			MaxInFlight:           2048,
			MaxInFlightPerVariant: 512,
			SweepInterval:         250 * time.Millisecond,
			LedgerBatch:           1000,
		},
		Catalog: CatalogConfig{
			CacheTTL:       10 * time.Minute,
			LocalCacheSize: 200_000,
			LocalCacheTTL:  time.Minute,
			MaxAge:         30 * time.Second,
			SeedDemo:       true,
		},
		Services: map[string]ServiceConfig{},
	}
}

// Validate reports the first setting that cannot work, naming its key.
func (c *Config) Validate() error {
	var errs []string
	if !validNamespace(c.Namespace) {
		errs = append(errs, fmt.Sprintf("namespace %q: use 1-40 lowercase letters, digits or _ starting with a letter", c.Namespace))
	}
	for key, raw := range map[string]string{"postgres.url": c.Postgres.URL, "redis.url": c.Redis.URL} {
		if _, err := url.Parse(raw); err != nil || raw == "" {
			errs = append(errs, fmt.Sprintf("%s %q is not a URL", key, raw))
		}
	}
	if c.Broker.URL != "" && !strings.HasPrefix(c.Broker.URL, "nats://") && !strings.HasPrefix(c.Broker.URL, "amqp://") && !strings.HasPrefix(c.Broker.URL, "amqps://") {
		errs = append(errs, fmt.Sprintf("broker.url %q: scheme must be nats://, amqp:// or amqps://", c.Broker.URL))
	}
	if c.HTTP.MaxBodyBytes <= 0 {
		errs = append(errs, "http.max_body_bytes must be positive")
	}
	if c.Gateway.RateLimitPerIP < 0 || c.Gateway.RateLimitBurst < 0 {
		errs = append(errs, "gateway.rate_limit_per_ip and gateway.rate_limit_burst must not be negative")
	}
	if c.Postgres.MaxConns < 1 {
		errs = append(errs, "postgres.max_conns must be at least 1")
	}
	if c.Redis.PoolSize < 1 {
		errs = append(errs, "redis.pool_size must be at least 1")
	}
	if c.Broker.MaxAttempts < 1 {
		errs = append(errs, "broker.max_attempts must be at least 1")
	}
	if a := c.Identity.Argon2; a.MemoryKiB < 8*1024 || a.Iterations < 1 || a.Parallelism < 1 {
		errs = append(errs, "identity.argon2 needs memory_kib >= 8192, iterations >= 1 and parallelism >= 1")
	}
	if c.Identity.AccessTokenTTL < time.Minute || c.Identity.AccessTokenTTL > 24*time.Hour {
		errs = append(errs, "identity.access_token_ttl must be between 1m and 24h")
	}
	if c.Identity.KeyRotation <= c.Identity.AccessTokenTTL {
		errs = append(errs, "identity.key_rotation must be longer than identity.access_token_ttl")
	}
	if (c.Identity.AdminEmail == "") != (c.Identity.AdminPassword == "") {
		errs = append(errs, "identity.admin_email and identity.admin_password (MERCATO_ADMIN_EMAIL, MERCATO_ADMIN_PASSWORD) must be set together")
	}
	if len(c.Inventory.Locations) == 0 {
		errs = append(errs, "inventory.locations must name at least one location")
	}
	if c.Inventory.ReservationTTL <= 0 || c.Inventory.MaxReservationTTL < c.Inventory.ReservationTTL {
		errs = append(errs, "inventory.reservation_ttl must be positive and at most inventory.max_reservation_ttl")
	}
	if c.Inventory.PurchaseLimit < 0 {
		errs = append(errs, "inventory.purchase_limit must not be negative")
	}
	if c.RPC.BreakerFailureRatio <= 0 || c.RPC.BreakerFailureRatio > 1 {
		errs = append(errs, "rpc.breaker_failure_ratio must be in (0, 1]")
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(errs, "; "))
	}
	return nil
}

// BrokerURL is the broker the process connects to: broker.url when set,
// otherwise broker.nats_url, otherwise the local NATS server.
func (c *Config) BrokerURL() string {
	switch {
	case c.Broker.URL != "":
		return c.Broker.URL
	case c.Broker.NATSURL != "":
		return c.Broker.NATSURL
	default:
		return "nats://127.0.0.1:4222"
	}
}

// Service returns where the named service listens and is reached. Unset
// values fall back to the in-cluster convention: listen on :8080, reached at
// http://<name>:8080.
func (c *Config) Service(name string) ServiceConfig {
	s := c.Services[name]
	if s.Listen == "" {
		s.Listen = ":8080"
	}
	if s.URL == "" {
		s.URL = "http://" + name + ":8080"
	}
	return s
}

func validNamespace(ns string) bool {
	if len(ns) == 0 || len(ns) > 40 || ns[0] < 'a' || ns[0] > 'z' {
		return false
	}
	for _, r := range ns {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}
