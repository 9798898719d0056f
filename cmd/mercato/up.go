package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events/natsbroker"
	"github.com/mercato/mercato/platform/pg"
	"github.com/mercato/mercato/platform/redisx"
	"github.com/mercato/mercato/platform/service"
	"github.com/mercato/mercato/platform/supervisor"
	"github.com/mercato/mercato/services/catalog"
	"github.com/mercato/mercato/services/gateway"
)

// demoProducts is the size of the catalog seeded on first start.
const demoProducts = 240

func cmdUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("up", stderr)
	httpAddr := fs.String("http", "127.0.0.1:8080", "address of the gateway (the public API)")
	dataDir := fs.String("data", ".mercato", "directory for the platform's local state")
	single := fs.Bool("single-process", false, "run every service in this one process (same network clients)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		return fmt.Errorf("data directory %s: %w", *dataDir, err)
	}
	data, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if os.Getenv(config.EnvPrefix+"LIVE_CONFIG") == "" {
		// The live overlay of a local platform lives with its state; every
		// child inherits the variable.
		_ = os.Setenv(config.EnvPrefix+"LIVE_CONFIG", filepath.Join(data, "live.yaml"))
	}

	mods := modules()
	env := map[string]string{}
	overrides := map[string]any{}
	set := func(key, envName, value string) {
		overrides[key] = value
		env[envName] = value
	}
	if err := checkFree(*httpAddr); err != nil {
		return err
	}
	for _, m := range mods {
		addr := *httpAddr
		if m.name != gateway.Name {
			if addr, err = freeLoopbackAddr(); err != nil {
				return err
			}
		}
		upper := strings.ToUpper(m.name)
		set("services."+m.name+".listen", config.EnvPrefix+"SERVICES__"+upper+"__LISTEN", addr)
		set("services."+m.name+".url", config.EnvPrefix+"SERVICES__"+upper+"__URL", "http://"+addr)
	}
	store, err := loadConfig(overrides, stderr)
	if err != nil {
		return err
	}
	cfg := store.Get()
	log := newLogger(stderr, store, "up")

	if err := preflight(ctx, cfg); err != nil {
		return err
	}
	if !store.Explicit("public_url") {
		set("public_url", config.EnvPrefix+"PUBLIC_URL", "http://"+*httpAddr)
	}
	if !store.Explicit("identity.admin_email") && !store.Explicit("identity.admin_password") {
		password, err := adminPassword(data)
		if err != nil {
			return err
		}
		set("identity.admin_email", config.EnvPrefix+"ADMIN_EMAIL", devAdminEmail)
		set("identity.admin_password", config.EnvPrefix+"ADMIN_PASSWORD", password)
	}
	if !store.Explicit("broker.url") && !store.Explicit("broker.nats_url") {
		url, shutdown, err := natsbroker.StartEmbedded(filepath.Join(data, "nats"), log)
		if err != nil {
			return fmt.Errorf("embedded NATS: %w", err)
		}
		defer shutdown()
		set("broker.nats_url", config.EnvPrefix+"NATS_URL", url)
	}
	// Reload with everything decided above so this process and its
	// children agree.
	if store, err = loadConfig(overrides, stderr); err != nil {
		return err
	}
	cfg = store.Get()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	var waitReady func(context.Context) error
	if *single {
		ready := newReadySet(mods)
		go func() { errc <- serveModules(ctx, store, newLogger(stdout, store, ""), mods, ready.mark) }()
		waitReady = ready.wait
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		childEnv := os.Environ()
		for k, v := range env {
			childEnv = append(childEnv, k+"="+v)
		}
		var procs []supervisor.Process
		for _, m := range mods {
			procs = append(procs, supervisor.Process{
				Name: m.name, Path: exe, Args: []string{"serve", m.name}, Env: childEnv,
				Ready: httpReady(cfg.Service(m.name).URL + "/readyz"),
			})
		}
		sup := supervisor.New(supervisor.Options{Out: stdout, Log: log, StopTimeout: cfg.HTTP.ShutdownTimeout + 5*time.Second}, procs...)
		go func() { errc <- sup.Run(ctx) }()
		waitReady = sup.WaitReady
	}

	started := time.Now()
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	err = waitReady(rctx)
	rcancel()
	if err != nil {
		cancel()
		<-errc
		return fmt.Errorf("the platform did not become ready: %w", err)
	}
	if err := seedDemo(ctx, cfg, log); err != nil {
		log.Warn("demo catalog not seeded", "err", err)
	}
	printBanner(stdout, cfg, mods, *single, time.Since(started))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		log.Info("stopping")
		return <-errc
	}
}

// preflight checks the infrastructure the platform cannot start without and
// says exactly what is missing and how to start it.
func preflight(ctx context.Context, cfg *config.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var problems []string
	conn, err := pgx.Connect(ctx, cfg.Postgres.URL)
	if err != nil {
		problems = append(problems, fmt.Sprintf(`PostgreSQL is not reachable at %s
  (%s)
  Start it:  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
  or point MERCATO_POSTGRES_URL at a running server.`, pg.Redacted(cfg.Postgres.URL), rootCause(err)))
	} else {
		_ = conn.Close(ctx)
	}
	rdb, err := redisx.Open(ctx, cfg.Redis)
	if err != nil {
		problems = append(problems, fmt.Sprintf(`Redis is not reachable at %s
  (%s)
  Start it:  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  or point MERCATO_REDIS_URL at a running server.`, redisx.Redacted(cfg.Redis.URL), rootCause(err)))
	} else {
		_ = rdb.Close()
	}
	if len(problems) > 0 {
		return errors.New("cannot start:\n" + strings.Join(problems, "\n"))
	}
	return nil
}

// rootCause strips wrapping down to the innermost message, keeping its first
// line (a driver that tried several ways to connect lists each).
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			msg, _, _ := strings.Cut(err.Error(), "\n")
			return msg
		}
		err = next
	}
}

func checkFree(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot serve the gateway on %s: %w (is another platform running? choose another address with --http)", addr, err)
	}
	return ln.Close()
}

// freeLoopbackAddr finds an unused loopback port for an internal service.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// devAdminEmail is the admin account a local platform gets when no admin
// is configured.
const devAdminEmail = "admin@mercato.localhost"

// adminPassword returns the local platform's admin password, made on first
// start and kept in the data directory (readable by its owner only), so the
// admin account identity bootstraps keeps working across restarts.
func adminPassword(dir string) (string, error) {
	path := filepath.Join(dir, "admin-password")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 20 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 18)
	_, _ = rand.Read(buf)
	password := base64.RawURLEncoding.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin password: %w", err)
	}
	return password, nil
}

func httpReady(url string) func(context.Context) error {
	client := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %d", url, resp.StatusCode)
		}
		return nil
	}
}

// readySet tracks which in-process modules listen and answer /readyz.
type readySet struct {
	mu    sync.Mutex
	addrs map[string]string
	names []string
}

func newReadySet(mods []module) *readySet {
	r := &readySet{addrs: map[string]string{}}
	for _, m := range mods {
		r.names = append(r.names, m.name)
	}
	return r
}

func (r *readySet) mark(name, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs[name] = addr
}

func (r *readySet) wait(ctx context.Context) error {
	for _, name := range r.names {
		for {
			r.mu.Lock()
			addr := r.addrs[name]
			r.mu.Unlock()
			if addr != "" && httpReady("http://"+addr+"/readyz")(ctx) == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", name, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// seedDemo fills an empty catalog with demo products so a new platform has
// something to show.
func seedDemo(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if !cfg.Catalog.SeedDemo {
		return nil
	}
	pool, err := service.OpenDatabase(ctx, cfg, catalog.Name, catalog.Migrations(), log)
	if err != nil {
		return err
	}
	defer pool.Close()
	n, err := catalog.NewStore(pool, cfg.Namespace).Count(ctx)
	if err != nil || n > 0 {
		return err
	}
	log.Info("empty catalog: seeding demo products", "products", demoProducts)
	return catalog.Seed(ctx, pool, cfg.Namespace, catalog.SeedOptions{Products: demoProducts, Seed: 42})
}

func printBanner(w io.Writer, cfg *config.Config, mods []module, single bool, took time.Duration) {
	mode := "one process per service"
	if single {
		mode = "single process"
	}
	pub := strings.TrimSuffix(cfg.PublicURL, "/")
	fmt.Fprintf(w, "\nMercato is up (%s, ready in %s, namespace %q)\n\n", mode, took.Round(10*time.Millisecond), cfg.Namespace)
	fmt.Fprintf(w, "  Storefront API   %s/v1/products\n", pub)
	fmt.Fprintf(w, "  OpenAPI          %s/openapi.json\n", pub)
	fmt.Fprintf(w, "  Admin login      %s   (password: MERCATO_ADMIN_PASSWORD, or the file admin-password in the data directory)\n", cfg.Identity.AdminEmail)
	fmt.Fprintf(w, "  OpenID issuer    %s/.well-known/openid-configuration\n", pub)
	fmt.Fprintf(w, "  Event broker     %s\n", cfg.BrokerURL())
	if live := os.Getenv(config.EnvPrefix + "LIVE_CONFIG"); live != "" {
		fmt.Fprintf(w, "  Live config      %s\n", live)
	}
	fmt.Fprintln(w, "\n  Services (each serves /livez, /readyz, /metrics):")
	for _, m := range mods {
		fmt.Fprintf(w, "    %-10s %s\n", m.name, cfg.Service(m.name).URL)
	}
	fmt.Fprintln(w, "\nPress Ctrl-C to stop.")
}
