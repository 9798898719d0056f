package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/auth/authtest"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/redisx"
	"github.com/mercato/mercato/platform/service"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/proto/gen/mercato/inventory/v1/inventoryv1connect"
	"github.com/mercato/mercato/services/inventory/adapters/pgledger"
	"github.com/mercato/mercato/services/inventory/adapters/redisstock"
	"github.com/mercato/mercato/services/inventory/domain"
)

// harness is a test platform for the inventory: a fresh namespace, a
// stand-in identity, and direct access to the Redis state and the ledger
// for checking what the service did.
type harness struct {
	t      testing.TB
	cfg    config.Config
	issuer *authtest.Issuer
	pool   *pgxpool.Pool
	rdb    *redis.Client
	hot    *redisstock.Store
	ledger *pgledger.Store
	// store, when set before start, is the configuration instances run
	// on, so that a test can change live keys while they run; nil means
	// a fixed h.cfg.
	store *config.Store
}

// newHarness prepares a namespace; mutate adjusts its configuration.
func newHarness(t testing.TB, mutate func(*config.Config)) *harness {
	t.Helper()
	cfg := platformtest.Config(t)
	issuer := authtest.New(t)
	issuer.Config(&cfg)
	cfg.Inventory.SweepInterval = 20 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	platformtest.DropDatabasesAfter(t, cfg)
	platformtest.CleanBroker(t, cfg)
	h := &harness{t: t, cfg: cfg, issuer: issuer}
	rcfg := cfg
	h.rdb = platformtest.Redis(t, rcfg)
	hot, err := redisstock.New(h.rdb, redisx.NewKeys(cfg.Namespace, Name), cfg.Inventory.Locations)
	if err != nil {
		t.Fatal(err)
	}
	h.hot = hot
	return h
}

// instance is one running inventory service.
type instance struct {
	url    string
	client inventoryv1connect.InventoryServiceClient
	stop   func()
}

// start runs an inventory instance until stop or the end of the test; the
// first start also opens the ledger for the test's own checks.
func (h *harness) start() *instance {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	store := h.store
	if store == nil {
		store = config.Static(h.cfg)
	}
	go func() {
		done <- service.Run(ctx, Name, store, platformtest.Logger(t), Run,
			service.Options{Listen: "127.0.0.1:0", Ready: func(a string) { addr <- a }})
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("inventory stopped with %v", err)
		}
	}
	t.Cleanup(stop)
	var in *instance
	select {
	case a := <-addr:
		url := "http://" + a
		in = &instance{url: url, client: inventoryv1connect.NewInventoryServiceClient(http.DefaultClient, url), stop: stop}
	case err := <-done:
		t.Fatalf("inventory did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("inventory did not start in time")
	}
	h.openLedger()
	platformtest.Eventually(t, "the stock counters are ready", func() bool {
		_, err := in.client.GetStock(context.Background(), connect.NewRequest(&inventoryv1.GetStockRequest{VariantIds: []string{newVariant()}}))
		return err == nil
	})
	return in
}

// openLedger opens the service's database for the test's own checks,
// once; the service must have created it.
func (h *harness) openLedger() {
	h.t.Helper()
	if h.pool == nil {
		h.pool = platformtest.Postgres(h.t, h.cfg, Name)
		h.ledger = pgledger.New(h.pool, h.cfg.Namespace)
	}
}

func newVariant() string { return id.New("var") }

// admin sends an admin REST request and decodes a JSON answer into out.
func (h *harness) admin(in *instance, method, path string, body any, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, in.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+h.issuer.AdminToken(h.t))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			h.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

// setStock sets a variant's on_hand through the admin API.
func (h *harness) setStock(in *instance, variant string, onHand int64) {
	h.t.Helper()
	var out map[string]any
	if status := h.admin(in, http.MethodPut, "/v1/admin/inventory/"+variant, map[string]any{"on_hand": onHand}, &out); status != http.StatusOK {
		h.t.Fatalf("set stock of %s: %d %v", variant, status, out)
	}
}

// reserve asks for quantity units of variant under key.
func reserve(ctx context.Context, in *instance, variant string, quantity int64, key, customer string) (*inventoryv1.Reservation, error) {
	resp, err := in.client.Reserve(ctx, connect.NewRequest(&inventoryv1.ReserveRequest{
		Items: []*inventoryv1.Item{{VariantId: variant, Quantity: quantity}}, IdempotencyKey: key, CustomerId: customer,
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetReservation(), nil
}

// redisStock reads a variant's live counters straight from Redis.
func (h *harness) redisStock(variant string) domain.Counters {
	h.t.Helper()
	s, err := h.hot.Stock(context.Background(), time.Now(), []string{variant})
	if err != nil {
		h.t.Fatal(err)
	}
	return s[0].Total()
}

// ledgerStock reads a variant's counters as the ledger adds them up, and
// checks that the stock rows equal the sum of the ledger's rows.
func (h *harness) ledgerStock(variant string) domain.Counters {
	h.t.Helper()
	ctx := context.Background()
	rows, err := h.ledger.Stock(ctx, []string{variant})
	if err != nil {
		h.t.Fatal(err)
	}
	var c domain.Counters
	for _, r := range rows {
		c = c.Add(r.Counters)
	}
	var sum domain.Counters
	if err := h.pool.QueryRow(ctx, `SELECT coalesce(sum(on_hand_delta), 0), coalesce(sum(reserved_delta), 0), coalesce(sum(committed_delta), 0)
		FROM ledger WHERE variant_id = $1`, variant).Scan(&sum.OnHand, &sum.Reserved, &sum.Committed); err != nil {
		h.t.Fatal(err)
	}
	if sum != c {
		h.t.Fatalf("stock rows of %s say %+v but the ledger adds up to %+v", variant, c, sum)
	}
	return c
}

// caughtUp waits until the ledger writer recorded everything in the stream.
func (h *harness) caughtUp() {
	h.t.Helper()
	platformtest.EventuallyWithin(h.t, 30*time.Second, "the ledger caught up with the stream", func() bool {
		if _, err := h.hot.State(context.Background()); err != nil {
			return false
		}
		ok, err := h.hot.CaughtUp(context.Background())
		return err == nil && ok
	})
}

// agree waits for the ledger and checks that it and Redis agree on variant.
func (h *harness) agree(variant string) domain.Counters {
	h.t.Helper()
	h.caughtUp()
	r, l := h.redisStock(variant), h.ledgerStock(variant)
	if r != l {
		h.t.Fatalf("redis says %+v but the ledger says %+v for %s", r, l, variant)
	}
	if !r.Holds() {
		h.t.Fatalf("the invariant is broken for %s: %+v", variant, r)
	}
	return r
}

func key(prefix string, i int) string { return fmt.Sprintf("%s-%d", prefix, i) }
