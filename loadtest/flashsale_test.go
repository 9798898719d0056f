package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/platformtest"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/proto/gen/mercato/inventory/v1/inventoryv1connect"
)

// fakeInventory is an InventoryService that sells the stock of each
// variant with an atomic counter, is idempotent by key as the contract
// says, and can be made faulty or flaky. It records what the load did.
type fakeInventory struct {
	inventoryv1connect.UnimplementedInventoryServiceHandler

	// Faults, set before the run.
	oversell         int64              // sells this many units more than there are
	phantom          int64              // GetStock reports this many more units reserved
	unavailableEvery int64              // every nth Reserve call answers Unavailable
	stall            func(n int64) bool // stalls the nth reservation's first answer past the timeout
	stallFor         time.Duration
	delay            time.Duration // every Reserve call takes this long

	mu    sync.Mutex
	stock map[string]*fakeStock

	calls        atomic.Int64 // Reserve calls
	reservations atomic.Int64 // reservations made (not repeated answers)
	notHTTP2     atomic.Int64 // requests not over HTTP/2
	protocols    sync.Map     // the RPC protocols callers used
	keys         sync.Map     // idempotency key → *fakeReservation
	byID         sync.Map     // reservation id → *fakeReservation
	customers    sync.Map     // customer id → the key it first came with
	sharedIDs    atomic.Int64 // customer ids that came with a second key
	invalid      atomic.Int64 // requests that break the contract
	gotTTL       atomic.Int64 // the last TTL asked for, in seconds
}

type fakeStock struct {
	onHand    atomic.Int64
	held      atomic.Int64 // reserved and committed
	committed atomic.Int64
}

type fakeReservation struct {
	id        string
	customer  string
	committed atomic.Bool
}

func newFakeInventory() *fakeInventory {
	return &fakeInventory{stock: map[string]*fakeStock{}}
}

func (f *fakeInventory) variant(id string) *fakeStock {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stock[id]
	if s == nil {
		s = &fakeStock{}
		f.stock[id] = s
	}
	return s
}

func (f *fakeInventory) setStock(variant string, onHand int64) {
	f.variant(variant).onHand.Store(onHand)
}

func (f *fakeInventory) Reserve(ctx context.Context, req *connect.Request[inventoryv1.ReserveRequest]) (*connect.Response[inventoryv1.ReserveResponse], error) {
	f.protocols.Store(req.Peer().Protocol, true)
	n := f.calls.Add(1)
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	m := req.Msg
	items := m.GetItems()
	if len(items) != 1 || items[0].GetQuantity() != 1 || m.GetIdempotencyKey() == "" || !id.Valid("cust", m.GetCustomerId()) {
		f.invalid.Add(1)
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("bad request %v", m))
	}
	f.gotTTL.Store(int64(m.GetTtl().AsDuration().Seconds()))
	if f.unavailableEvery > 0 && n%f.unavailableEvery == 0 {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("shedding load"))
	}
	if prev, ok := f.keys.Load(m.GetIdempotencyKey()); ok {
		// As the inventory does, refuse a key reused for another request.
		if r := prev.(*fakeReservation); r.customer == m.GetCustomerId() {
			return reserved(r, items), nil
		}
		f.invalid.Add(1)
		return nil, connect.NewError(connect.CodeAlreadyExists, errors.New("idempotency key reused for another request"))
	}
	if first, loaded := f.customers.LoadOrStore(m.GetCustomerId(), m.GetIdempotencyKey()); loaded && first != m.GetIdempotencyKey() {
		f.sharedIDs.Add(1)
	}
	s := f.variant(items[0].GetVariantId())
	for {
		held, limit := s.held.Load(), s.onHand.Load()+f.oversell
		if held >= limit {
			err := connect.NewError(connect.CodeFailedPrecondition, errors.New("out of stock"))
			d, _ := connect.NewErrorDetail(&inventoryv1.OutOfStock{Items: []*inventoryv1.Shortage{
				{VariantId: items[0].GetVariantId(), Requested: 1, Available: max(0, s.onHand.Load()-held)},
			}})
			err.AddDetail(d)
			return nil, err
		}
		if s.held.CompareAndSwap(held, held+1) {
			break
		}
	}
	r := &fakeReservation{id: id.New("res"), customer: m.GetCustomerId()}
	f.keys.Store(m.GetIdempotencyKey(), r)
	f.byID.Store(r.id, r)
	made := f.reservations.Add(1)
	if f.stall != nil && f.stall(made) {
		// The unit is reserved, but the answer comes too late: the buyer
		// must ask again with the same key.
		select {
		case <-time.After(f.stallFor):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return reserved(r, items), nil
}

func reserved(r *fakeReservation, items []*inventoryv1.Item) *connect.Response[inventoryv1.ReserveResponse] {
	return connect.NewResponse(&inventoryv1.ReserveResponse{Reservation: &inventoryv1.Reservation{Id: r.id, Items: items, Status: "held"}})
}

func (f *fakeInventory) Commit(_ context.Context, req *connect.Request[inventoryv1.CommitRequest]) (*connect.Response[inventoryv1.CommitResponse], error) {
	v, ok := f.byID.Load(req.Msg.GetReservationId())
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such reservation"))
	}
	r := v.(*fakeReservation)
	if r.committed.CompareAndSwap(false, true) {
		// The flash sale has one variant: count the commit there.
		f.mu.Lock()
		for _, s := range f.stock {
			if s.held.Load() > 0 {
				s.committed.Add(1)
			}
		}
		f.mu.Unlock()
	}
	return connect.NewResponse(&inventoryv1.CommitResponse{Reservation: &inventoryv1.Reservation{Id: r.id, Status: "committed"}}), nil
}

func (f *fakeInventory) GetStock(_ context.Context, req *connect.Request[inventoryv1.GetStockRequest]) (*connect.Response[inventoryv1.GetStockResponse], error) {
	var out []*inventoryv1.Stock
	for _, v := range req.Msg.GetVariantIds() {
		s := f.variant(v)
		held, committed, onHand := s.held.Load(), s.committed.Load(), s.onHand.Load()
		reserved := held - committed
		if held > 0 {
			reserved += f.phantom
		}
		out = append(out, &inventoryv1.Stock{VariantId: v, OnHand: onHand, Reserved: reserved, Committed: committed,
			Available: max(0, onHand-reserved-committed)})
	}
	return connect.NewResponse(&inventoryv1.GetStockResponse{Stock: out}), nil
}

// serve serves f over cleartext HTTP/2 as platform/server does.
func (f *fakeInventory) serve(t testing.TB) string {
	t.Helper()
	path, h := inventoryv1connect.NewInventoryServiceHandler(f)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	return serveH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			f.notHTTP2.Add(1)
		}
		mux.ServeHTTP(w, r)
	}))
}

func serveH2C(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// fakeAdmin serves the gateway's login and the catalog and inventory
// admin endpoints the flash sale's setup uses, setting the stock in inv.
type fakeAdmin struct {
	inv             *fakeInventory
	email, password string

	mu   sync.Mutex
	fail map[string]int // "METHOD /path/prefix" → a status to answer instead
	skus []string       // of the products created
	puts int            // stock updates
}

const fakeAdminToken = "admin-token"

func (f *fakeAdmin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/auth/login", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Email, Password string }
		if !decodeBody(w, r, &in) {
			return
		}
		if in.Email != f.email || in.Password != f.password {
			problem(w, http.StatusUnauthorized)
			return
		}
		writeJSON(w, map[string]any{"access_token": fakeAdminToken, "token_type": "Bearer", "expires_in": 900, "refresh_token": "rt"})
	})
	mux.HandleFunc("POST /v1/admin/products", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Title    string `json:"title"`
			Variants []struct {
				SKU   string `json:"sku"`
				Price struct {
					Amount   int64  `json:"amount"`
					Currency string `json:"currency"`
				} `json:"price"`
			} `json:"variants"`
		}
		if !f.admin(w, r) || !decodeBody(w, r, &in) {
			return
		}
		if in.Title == "" || len(in.Variants) != 1 || in.Variants[0].SKU == "" || in.Variants[0].Price.Currency == "" {
			problem(w, http.StatusUnprocessableEntity)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if slices.Contains(f.skus, in.Variants[0].SKU) {
			problem(w, http.StatusConflict)
			return
		}
		f.skus = append(f.skus, in.Variants[0].SKU)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"id": id.New("prod"), "title": in.Title, "variants": []map[string]any{
			{"id": id.New("var"), "sku": in.Variants[0].SKU, "title": in.Title, "price": in.Variants[0].Price, "in_stock": true},
		}})
	})
	mux.HandleFunc("PUT /v1/admin/inventory/{variant_id}", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			OnHand *int64 `json:"on_hand"`
		}
		if !f.admin(w, r) || !decodeBody(w, r, &in) {
			return
		}
		if in.OnHand == nil || *in.OnHand < 0 {
			problem(w, http.StatusUnprocessableEntity)
			return
		}
		variant := r.PathValue("variant_id")
		f.inv.setStock(variant, *in.OnHand)
		f.mu.Lock()
		f.puts++
		f.mu.Unlock()
		writeJSON(w, map[string]any{"variant_id": variant, "on_hand": *in.OnHand, "reserved": 0, "available": *in.OnHand})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		status := 0
		for prefix, s := range f.fail {
			if strings.HasPrefix(r.Method+" "+r.URL.Path, prefix) {
				status = s
			}
		}
		f.mu.Unlock()
		if status != 0 {
			problem(w, status)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// admin answers 401 unless the request carries the admin's token.
func (f *fakeAdmin) admin(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+fakeAdminToken {
		problem(w, http.StatusUnauthorized)
		return false
	}
	return true
}

// startFlashSale serves a fake inventory and a fake gateway in front of
// it, and returns options for a small sale against them.
func startFlashSale(t *testing.T, buyers int, units int64) (*fakeInventory, *fakeAdmin, Options) {
	t.Helper()
	inv := newFakeInventory()
	gw := &fakeAdmin{inv: inv, email: "ops@example.com", password: "correct horse battery"}
	// Like the real gateway, which platform/server serves, the fake
	// speaks HTTP/1.1 and h2c.
	opts := testOptions(t, serveH2C(t, gw.handler()))
	opts.Concurrency = 8
	opts.Duration = time.Minute // a bound the tests never reach
	opts.FlashSale = FlashSaleOptions{
		Buyers: buyers, Units: units, InventoryURL: inv.serve(t),
		AdminEmail: gw.email, AdminPassword: gw.password, DataDir: t.TempDir(),
	}
	return inv, gw, opts
}

// flashSaleLine reads the one JSON line a flash sale printed.
func flashSaleLine(t *testing.T, out *bytes.Buffer) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(out)
	var lines []map[string]any
	for sc.Scan() {
		var fields map[string]any
		if err := json.Unmarshal(sc.Bytes(), &fields); err != nil {
			t.Fatalf("not JSON: %v: %s", err, sc.Bytes())
		}
		lines = append(lines, fields)
	}
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1: %v", len(lines), lines)
	}
	return lines[0]
}

func TestFlashSale(t *testing.T) {
	const buyers, units = 300, 40
	for _, commit := range []bool{false, true} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			inv, gw, opts := startFlashSale(t, buyers, units)
			opts.FlashSale.Commit = commit
			var out bytes.Buffer
			opts.Out = &out
			results, err := Run(t.Context(), "flash-sale", opts)
			if err != nil {
				t.Fatal(err)
			}
			line := flashSaleLine(t, &out)

			t.Run("the line has the documented fields", func(t *testing.T) {
				want := []string{"buyers", "commit", "commit_errors", "commits", "concurrency", "duration_s", "error_kinds", "errors",
					"failed", "out_of_stock", "oversold", "p50_ms", "p95_ms", "p99_ms", "requests", "rps", "scenario", "sku",
					"stock", "successes", "unanswered", "units", "variant_id"}
				if got := slices.Sorted(maps.Keys(line)); !slices.Equal(got, want) {
					t.Errorf("fields %v, want %v", got, want)
				}
				if line["scenario"] != "flash-sale" || line["rps"].(float64) <= 0 || line["p99_ms"].(float64) <= 0 {
					t.Errorf("line %v", line)
				}
			})

			t.Run("exactly the units were sold and every other buyer was told out of stock", func(t *testing.T) {
				want := map[string]any{"buyers": float64(buyers), "units": float64(units), "successes": float64(units),
					"out_of_stock": float64(buyers - units), "oversold": 0.0, "failed": 0.0, "unanswered": 0.0,
					"errors": 0.0, "requests": float64(buyers), "commit": commit}
				for k, v := range want {
					if line[k] != v {
						t.Errorf("%s = %v, want %v", k, line[k], v)
					}
				}
				if len(results) != 1 || results[0].Successes != units || results[0].Requests != buyers {
					t.Errorf("results %+v", results)
				}
			})

			t.Run("the stock after the sale is in the line", func(t *testing.T) {
				committed := 0.0
				if commit {
					committed = units
				}
				want := map[string]any{"on_hand": float64(units), "reserved": units - committed, "committed": committed, "available": 0.0}
				if !maps.Equal(line["stock"].(map[string]any), want) {
					t.Errorf("stock %v, want %v", line["stock"], want)
				}
				if commit && (line["commits"] != float64(units) || line["commit_errors"] != 0.0) {
					t.Errorf("commits %v, commit_errors %v, want %d and 0", line["commits"], line["commit_errors"], units)
				}
				if !commit && line["commits"] != 0.0 {
					t.Errorf("commits %v without --commit", line["commits"])
				}
			})

			t.Run("each buyer came once, with a key and a customer of its own, over h2c", func(t *testing.T) {
				if n := inv.calls.Load(); n != buyers {
					t.Errorf("%d Reserve calls for %d buyers", n, buyers)
				}
				if inv.invalid.Load() != 0 || inv.sharedIDs.Load() != 0 {
					t.Errorf("%d invalid requests, %d customer ids shared between buyers", inv.invalid.Load(), inv.sharedIDs.Load())
				}
				if inv.notHTTP2.Load() != 0 {
					t.Errorf("%d requests not over HTTP/2", inv.notHTTP2.Load())
				}
				if _, ok := inv.protocols.Load(connect.ProtocolConnect); !ok {
					t.Error("no call used the Connect protocol")
				}
				if ttl := time.Duration(inv.gotTTL.Load()) * time.Second; ttl != reservationTTL {
					t.Errorf("asked for a TTL of %s, want %s", ttl, reservationTTL)
				}
			})

			t.Run("setup created one product and set its stock through the gateway", func(t *testing.T) {
				gw.mu.Lock()
				defer gw.mu.Unlock()
				if len(gw.skus) != 1 || gw.puts != 1 || line["sku"] != gw.skus[0] {
					t.Errorf("skus %v, %d stock updates; the line has %v", gw.skus, gw.puts, line["sku"])
				}
			})
		})
	}
}

func TestFlashSaleUsesANewSKUEachRun(t *testing.T) {
	_, gw, opts := startFlashSale(t, 10, 5)
	opts.Out = new(bytes.Buffer)
	for range 2 {
		if _, err := Run(t.Context(), "flash-sale", opts); err != nil {
			t.Fatal(err)
		}
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if len(gw.skus) != 2 || gw.skus[0] == gw.skus[1] {
		t.Errorf("two runs created %v", gw.skus)
	}
}

// TestFlashSaleOversold checks that a faulty inventory cannot pass: one
// that sells more than its stock, and one whose stock shows more units
// held than on hand although the buyers got no more than the units.
func TestFlashSaleOversold(t *testing.T) {
	const buyers, units = 100, 20
	tests := []struct {
		name              string
		oversell, phantom int64
		wantOversold      float64
		want              string
	}{
		{"sells three units too many", 3, 0, 3, "3 units oversold"},
		{"holds more units than on hand", 0, 2, 0, "reserved + committed must never exceed on_hand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, _, opts := startFlashSale(t, buyers, units)
			inv.oversell, inv.phantom = tt.oversell, tt.phantom
			var out bytes.Buffer
			opts.Out = &out
			_, err := Run(t.Context(), "flash-sale", opts)
			if !errors.Is(err, errOversold) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %v mentioning %q", err, errOversold, tt.want)
			}
			line := flashSaleLine(t, &out)
			if line["oversold"] != tt.wantOversold || line["successes"] != float64(units)+tt.wantOversold ||
				line["out_of_stock"] != float64(buyers-units)-tt.wantOversold {
				t.Errorf("oversold %v, successes %v, out_of_stock %v; want %v oversold", line["oversold"], line["successes"], line["out_of_stock"], tt.wantOversold)
			}
		})
	}
}

// TestFlashSaleRetries checks that a buyer answered with an overload or
// too late asks again with the same key, so that the count stays exact
// and every failed call is an error of its kind.
func TestFlashSaleRetries(t *testing.T) {
	const buyers, units = 200, 30
	inv, _, opts := startFlashSale(t, buyers, units)
	inv.unavailableEvery = 7
	inv.stall = func(n int64) bool { return n == 5 || n == 17 }
	inv.stallFor = 5 * time.Second // cut short by the handler's context
	opts.Timeout = 300 * time.Millisecond
	var out bytes.Buffer
	opts.Out = &out
	results, err := Run(t.Context(), "flash-sale", opts)
	if err != nil {
		t.Fatal(err)
	}
	r := results[0]
	if r.Successes != units || r.OutOfStock != buyers-units || r.Failed != 0 || r.Unanswered != 0 || r.Oversold != 0 {
		t.Errorf("%+v", *r.FlashSaleResult)
	}
	if n := inv.invalid.Load(); n != 0 {
		t.Errorf("%d requests broke the contract, such as a retry with another customer id", n)
	}
	if n := inv.reservations.Load(); n != units {
		t.Errorf("the inventory made %d reservations for %d units: a retry did not reuse its key", n, units)
	}
	calls := inv.calls.Load()
	if r.Requests != calls || r.Requests-r.Errors != buyers {
		t.Errorf("%d requests and %d errors counted; the inventory answered %d calls of %d buyers", r.Requests, r.Errors, calls, buyers)
	}
	if r.ErrorKinds["unavailable"] != calls/7 || r.ErrorKinds[KindTimeout] < 2 {
		t.Errorf("error kinds %v, want %d unavailable and at least 2 timeouts", r.ErrorKinds, calls/7)
	}
}

// TestFlashSaleDurationBound checks that --duration ends a sale that
// cannot finish in time, reporting the buyers without an answer.
func TestFlashSaleDurationBound(t *testing.T) {
	const buyers = 10_000
	inv, _, opts := startFlashSale(t, buyers, 100)
	inv.delay = 5 * time.Millisecond
	opts.Concurrency = 2
	opts.Duration = 200 * time.Millisecond
	var out bytes.Buffer
	opts.Out = &out
	start := time.Now()
	results, err := Run(t.Context(), "flash-sale", opts)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s with a bound of %s", took, opts.Duration)
	}
	fs := results[0].FlashSaleResult
	if fs.Unanswered == 0 || fs.Successes+fs.OutOfStock+fs.Failed+fs.Unanswered != buyers || results[0].Errors != 0 {
		t.Errorf("%+v, errors %d", *fs, results[0].Errors)
	}
	if d := results[0].DurationS; d < 0.2 || d > 1 {
		t.Errorf("duration_s %v for a bound of 0.2s", d)
	}
}

func TestFlashSaleSetupFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, inv *fakeInventory, gw *fakeAdmin, opts *Options)
		is    error
		want  string
	}{
		{"bad admin credentials", func(t *testing.T, _ *fakeInventory, _ *fakeAdmin, o *Options) {
			o.FlashSale.AdminPassword = "wrong"
		}, errAdminRefused, "--admin-password"},
		{"no inventory endpoints", func(t *testing.T, _ *fakeInventory, gw *fakeAdmin, _ *Options) {
			gw.fail = map[string]int{"PUT /v1/admin/inventory/": 404}
		}, errNoInventoryAdmin, "PUT http://"},
		{"no catalog admin endpoints", func(t *testing.T, _ *fakeInventory, gw *fakeAdmin, _ *Options) {
			gw.fail = map[string]int{"POST /v1/admin/products": 404}
		}, errNoCatalogAdmin, "/v1/admin/products"},
		{"not an admin", func(t *testing.T, _ *fakeInventory, gw *fakeAdmin, _ *Options) {
			gw.fail = map[string]int{"POST /v1/admin/products": 403}
		}, errNotAdmin, "status 403"},
		{"login limited per address", func(t *testing.T, _ *fakeInventory, gw *fakeAdmin, _ *Options) {
			gw.fail = map[string]int{"POST /v1/auth/login": 429}
		}, errRateLimited, "MERCATO_RATE_LIMIT_PER_IP=0"},
		{"missing --inventory", func(t *testing.T, _ *fakeInventory, _ *fakeAdmin, o *Options) {
			o.FlashSale.InventoryURL = ""
		}, errNoInventoryURL, "mercato up"},
		{"--inventory is the gateway", func(t *testing.T, _ *fakeInventory, _ *fakeAdmin, o *Options) {
			o.FlashSale.InventoryURL = o.BaseURL
		}, nil, "not the gateway's"},
		{"inventory unreachable", func(t *testing.T, _ *fakeInventory, _ *fakeAdmin, o *Options) {
			o.FlashSale.InventoryURL = "http://" + platformtest.ClosedAddr(t)
		}, nil, "is the inventory service running there?"},
		{"inventory of another platform", func(t *testing.T, _ *fakeInventory, _ *fakeAdmin, o *Options) {
			o.FlashSale.InventoryURL = newFakeInventory().serve(t)
			o.Timeout = 200 * time.Millisecond
		}, nil, "same platform"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, gw, opts := startFlashSale(t, 50, 10)
			tt.setup(t, inv, gw, &opts)
			var out bytes.Buffer
			opts.Out = &out
			results, err := Run(t.Context(), "flash-sale", opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v mentioning %q", err, tt.is, tt.want)
			}
			if len(results) != 0 || out.Len() != 0 {
				t.Errorf("printed %q after a failed setup", out.String())
			}
			if n := inv.calls.Load(); n != 0 {
				t.Errorf("%d reservations after a failed setup", n)
			}
		})
	}
}

func TestAdminCredentials(t *testing.T) {
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, adminPasswordFile), []byte("from-the-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                    string
		opts                    FlashSaleOptions
		envEmail, envPassword   string
		wantEmail, wantPassword string
		wantErr                 string
	}{
		{"flags first", FlashSaleOptions{AdminEmail: "a@example.com", AdminPassword: "flag-pw", DataDir: dataDir},
			"env@example.com", "env-pw", "a@example.com", "flag-pw", ""},
		{"then the environment", FlashSaleOptions{DataDir: dataDir},
			"env@example.com", "env-pw", "env@example.com", "env-pw", ""},
		{"then the local platform's admin", FlashSaleOptions{DataDir: dataDir},
			"", "", devAdminEmail, "from-the-file", ""},
		{"no password anywhere", FlashSaleOptions{DataDir: filepath.Join(dataDir, "absent")},
			"", "", "", "", "pass --admin-password, set MERCATO_ADMIN_PASSWORD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("MERCATO_ADMIN_EMAIL", tt.envEmail)
			t.Setenv("MERCATO_ADMIN_PASSWORD", tt.envPassword)
			got, err := adminCredentials(tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.email != tt.wantEmail || got.password != tt.wantPassword {
				t.Errorf("got %q %q, %v; want %q %q", got.email, got.password, err, tt.wantEmail, tt.wantPassword)
			}
		})
	}
}

func TestClassifyCall(t *testing.T) {
	outOfStock := connect.NewError(connect.CodeFailedPrecondition, errors.New("out of stock"))
	d, _ := connect.NewErrorDetail(&inventoryv1.OutOfStock{})
	outOfStock.AddDetail(d)
	limit := connect.NewError(connect.CodeFailedPrecondition, errors.New("limit"))
	d, _ = connect.NewErrorDetail(&inventoryv1.PurchaseLimitExceeded{Limit: 1})
	limit.AddDetail(d)
	tests := []struct {
		name string
		err  error
		want answer
		kind string
	}{
		{"success", nil, answerOK, ""},
		{"out of stock", fmt.Errorf("wrapped: %w", outOfStock), answerOutOfStock, ""},
		{"purchase limit", limit, answerFailed, "purchase_limit_exceeded"},
		{"failed precondition without detail", connect.NewError(connect.CodeFailedPrecondition, errors.New("expired")), answerFailed, "failed_precondition"},
		{"overload", connect.NewError(connect.CodeResourceExhausted, errors.New("busy")), answerRetry, "resource_exhausted"},
		{"unavailable", connect.NewError(connect.CodeUnavailable, errors.New("down")), answerRetry, "unavailable"},
		{"timeout", connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded), answerRetry, KindTimeout},
		{"invalid", connect.NewError(connect.CodeInvalidArgument, errors.New("bad")), answerFailed, "invalid_argument"},
		{"internal", connect.NewError(connect.CodeInternal, errors.New("bug")), answerFailed, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, kind := classifyCall(tt.err); got != tt.want || kind != tt.kind {
				t.Errorf("classifyCall(%v) = %v, %q; want %v, %q", tt.err, got, kind, tt.want, tt.kind)
			}
		})
	}
}
