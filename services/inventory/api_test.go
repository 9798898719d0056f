package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/events"
	"github.com/mercato/mercato/platform/events/broker"
	"github.com/mercato/mercato/platform/events/eventstest"
	"github.com/mercato/mercato/platform/idempotency"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/rpc"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/services/inventory/domain"
)

// TestAdminSetsAndReadsStock covers PUT and GET of one variant's stock:
// the shape of a level, the fields a bad body is refused on, who may call,
// a count below what is held, and replays under an Idempotency-Key.
func TestAdminSetsAndReadsStock(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.start()
	loc := h.cfg.Inventory.Locations[0]
	v := newVariant()
	path := "/v1/admin/inventory/" + v
	admin := h.issuer.AdminToken(t)

	t.Run("a variant never counted has zeros", func(t *testing.T) {
		never := newVariant()
		r := send(t, in, http.MethodGet, "/v1/admin/inventory/"+never, admin, "", nil)
		r.wantStatus(t, http.StatusOK)
		r.wantJSON(t, level(never, nil, loc))
	})

	t.Run("PUT answers with the level and GET reads it back", func(t *testing.T) {
		want := level(v, map[string][3]int64{loc: {5, 0, 0}}, loc)
		put := send(t, in, http.MethodPut, path, admin, `{"on_hand": 5}`, nil)
		put.wantStatus(t, http.StatusOK)
		put.wantJSON(t, want)
		get := send(t, in, http.MethodGet, path, admin, "", nil)
		get.wantStatus(t, http.StatusOK)
		get.wantJSON(t, want)
		if cc := get.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", cc)
		}
	})

	t.Run("invalid bodies name the field", func(t *testing.T) {
		for _, tt := range []struct {
			name, body, field string
		}{
			{"missing on_hand", `{}`, "on_hand"},
			{"negative on_hand", `{"on_hand": -1}`, "on_hand"},
			{"on_hand as a string", `{"on_hand": "5"}`, "on_hand"},
			{"fractional on_hand", `{"on_hand": 1.5}`, "on_hand"},
			{"unknown field", `{"on_hand": 5, "colour": "red"}`, "colour"},
			{"unknown location", `{"on_hand": 5, "location": "nowhere"}`, "location"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				send(t, in, http.MethodPut, path, admin, tt.body, nil).
					wantProblem(t, http.StatusUnprocessableEntity, "validation-failed", tt.field)
			})
		}
		send(t, in, http.MethodGet, path, admin, "", nil).wantJSON(t, level(v, map[string][3]int64{loc: {5, 0, 0}}, loc))
	})

	t.Run("a malformed variant id is not found", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodPut} {
			send(t, in, method, "/v1/admin/inventory/sku-123", admin, `{"on_hand": 1}`, nil).
				wantProblem(t, http.StatusNotFound, "not-found")
		}
	})

	t.Run("only admins may call", func(t *testing.T) {
		customer := h.issuer.Token(t, "cus_x")
		for _, method := range []string{http.MethodGet, http.MethodPut} {
			send(t, in, method, path, "", `{"on_hand": 0}`, nil).wantProblem(t, http.StatusUnauthorized, "")
			send(t, in, method, path, customer, `{"on_hand": 0}`, nil).wantProblem(t, http.StatusForbidden, "forbidden")
		}
		send(t, in, http.MethodPost, "/v1/admin/inventory/import", customer,
			fmt.Sprintf(`{"items": [{"variant_id": %q, "on_hand": 0}]}`, v), nil).wantProblem(t, http.StatusForbidden, "forbidden")
		send(t, in, http.MethodGet, path, admin, "", nil).wantJSON(t, level(v, map[string][3]int64{loc: {5, 0, 0}}, loc))
	})

	t.Run("a count below the units held is refused and changes nothing", func(t *testing.T) {
		if _, err := reserve(context.Background(), in, v, 3, "conflict", ""); err != nil {
			t.Fatal(err)
		}
		send(t, in, http.MethodPut, path, admin, `{"on_hand": 2}`, nil).
			wantProblem(t, http.StatusConflict, "stock-conflict", "on_hand")
		send(t, in, http.MethodGet, path, admin, "", nil).wantJSON(t, level(v, map[string][3]int64{loc: {5, 3, 0}}, loc))
		if c := h.agree(v); c.OnHand != 5 || c.Reserved != 3 {
			t.Fatalf("after the refused count: %+v", c)
		}
	})

	t.Run("a replay under the same Idempotency-Key gets the first answer", func(t *testing.T) {
		key := map[string]string{idempotency.Header: "count-" + v}
		first := send(t, in, http.MethodPut, path, admin, `{"on_hand": 7}`, key)
		first.wantStatus(t, http.StatusOK)
		first.wantJSON(t, level(v, map[string][3]int64{loc: {7, 3, 0}}, loc))
		// A later count without a key; the replay must not undo it.
		send(t, in, http.MethodPut, path, admin, `{"on_hand": 9}`, nil).wantStatus(t, http.StatusOK)

		again := send(t, in, http.MethodPut, path, admin, `{"on_hand": 7}`, key)
		again.wantStatus(t, http.StatusOK)
		if !bytes.Equal(again.body, first.body) {
			t.Errorf("replay answered %s, want the first answer %s", again.body, first.body)
		}
		if again.header.Get(idempotency.ReplayedHeader) != "true" {
			t.Errorf("replay lacks %s: true", idempotency.ReplayedHeader)
		}
		send(t, in, http.MethodGet, path, admin, "", nil).wantJSON(t, level(v, map[string][3]int64{loc: {9, 3, 0}}, loc))

		send(t, in, http.MethodPut, path, admin, `{"on_hand": 8}`, key).
			wantProblem(t, http.StatusUnprocessableEntity, "idempotency-key-reused", idempotency.Header)
		if c := h.agree(v); c.OnHand != 9 {
			t.Fatalf("after the replays: %+v, want on_hand 9", c)
		}
	})
}

// TestAdminImportIsAllOrNothing sets several variants at once, refuses an
// empty or oversized import, and applies none of an import whose one row
// conflicts with what is held.
func TestAdminImportIsAllOrNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.start()
	loc := h.cfg.Inventory.Locations[0]
	admin := h.issuer.AdminToken(t)
	a, b, c := newVariant(), newVariant(), newVariant()
	const path = "/v1/admin/inventory/import"

	r := send(t, in, http.MethodPost, path, admin, importBody([]string{a, b, c}, map[string]int64{a: 4, b: 0, c: 10}), nil)
	r.wantStatus(t, http.StatusOK)
	r.wantJSON(t, map[string]any{"items": []any{
		level(a, map[string][3]int64{loc: {4, 0, 0}}, loc),
		level(b, map[string][3]int64{loc: {0, 0, 0}}, loc),
		level(c, map[string][3]int64{loc: {10, 0, 0}}, loc),
	}})
	for v, want := range map[string]int64{a: 4, b: 0, c: 10} {
		if got := h.redisStock(v).OnHand; got != want {
			t.Errorf("on_hand of %s = %d, want %d", v, got, want)
		}
	}

	t.Run("an empty or oversized import is refused on items", func(t *testing.T) {
		many := make([]string, maxImportItems+1)
		for i := range many {
			many[i] = fmt.Sprintf(`{"variant_id": %q, "on_hand": 1}`, newVariant())
		}
		for name, body := range map[string]string{
			"no items":       `{"items": []}`,
			"items left out": `{}`,
			"1001 items":     `{"items": [` + strings.Join(many, ",") + `]}`,
		} {
			t.Run(name, func(t *testing.T) {
				send(t, in, http.MethodPost, path, admin, body, nil).
					wantProblem(t, http.StatusUnprocessableEntity, "validation-failed", "items")
			})
		}
	})

	t.Run("invalid rows are named by index", func(t *testing.T) {
		body := fmt.Sprintf(`{"items": [{"variant_id": %q, "on_hand": 1}, {"variant_id": "nope", "on_hand": -1}]}`, a)
		send(t, in, http.MethodPost, path, admin, body, nil).
			wantProblem(t, http.StatusUnprocessableEntity, "validation-failed", "items[1].variant_id", "items[1].on_hand")
	})

	t.Run("one conflicting row refuses them all", func(t *testing.T) {
		if _, err := reserve(context.Background(), in, c, 3, "hold-c", ""); err != nil {
			t.Fatal(err)
		}
		body := importBody([]string{a, c, b}, map[string]int64{a: 1, c: 2, b: 5})
		send(t, in, http.MethodPost, path, admin, body, nil).
			wantProblem(t, http.StatusConflict, "stock-conflict", "items[1].on_hand")
		for v, want := range map[string]domain.Counters{a: {OnHand: 4}, b: {}, c: {OnHand: 10, Reserved: 3}} {
			if got := h.agree(v); got != want {
				t.Errorf("%s after the refused import: %+v, want %+v", v, got, want)
			}
		}
	})
}

// TestLocationsEachHoldAWholeItem configures two locations: counts must
// name one, and every item of a reservation comes from a single location,
// the first in order that can take it whole.
func TestLocationsEachHoldAWholeItem(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Inventory.Locations = []string{"north", "south"} })
	in := h.start()
	admin := h.issuer.AdminToken(t)
	v := newVariant()
	path := "/v1/admin/inventory/" + v

	send(t, in, http.MethodPut, path, admin, `{"on_hand": 2}`, nil).
		wantProblem(t, http.StatusUnprocessableEntity, "validation-failed", "location")
	send(t, in, http.MethodPost, "/v1/admin/inventory/import", admin, fmt.Sprintf(`{"items": [{"variant_id": %q, "on_hand": 2}]}`, v), nil).
		wantProblem(t, http.StatusUnprocessableEntity, "validation-failed", "items[0].location")

	send(t, in, http.MethodPut, path, admin, `{"on_hand": 2, "location": "north"}`, nil).wantStatus(t, http.StatusOK)
	r := send(t, in, http.MethodPut, path, admin, `{"on_hand": 5, "location": "south"}`, nil)
	r.wantStatus(t, http.StatusOK)
	r.wantJSON(t, level(v, map[string][3]int64{"north": {2, 0, 0}, "south": {5, 0, 0}}, "north", "south"))

	// 6 of the 7 units exist, but no location holds 6: out of stock, with
	// what the best location could give.
	_, err := reserve(context.Background(), in, v, 6, "too-many", "")
	var oos inventoryv1.OutOfStock
	if !outOfStock(err, &oos) {
		t.Fatalf("reserving 6 answered %v, want out of stock", err)
	}
	if len(oos.Items) != 1 || oos.Items[0].GetVariantId() != v || oos.Items[0].GetRequested() != 6 || oos.Items[0].GetAvailable() != 5 {
		t.Fatalf("out-of-stock detail %v, want %s requested 6 available 5", oos.Items, v)
	}

	// North cannot take 3 whole, so south gives all of them.
	if _, err := reserve(context.Background(), in, v, 3, "three", ""); err != nil {
		t.Fatal(err)
	}
	send(t, in, http.MethodGet, path, admin, "", nil).
		wantJSON(t, level(v, map[string][3]int64{"north": {2, 0, 0}, "south": {5, 3, 0}}, "north", "south"))
	if c := h.agree(v); c != (domain.Counters{OnHand: 7, Reserved: 3}) {
		t.Fatalf("after the reservation: %+v", c)
	}
}

// TestReserveValidation checks that every invalid Reserve is refused with
// INVALID_ARGUMENT naming exactly the offending fields, and holds nothing.
func TestReserveValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.start()
	v, w := newVariant(), newVariant()
	h.setStock(in, v, 10)
	item := func(variant string, q int64) *inventoryv1.Item {
		return &inventoryv1.Item{VariantId: variant, Quantity: q}
	}

	for _, tt := range []struct {
		name   string
		req    *inventoryv1.ReserveRequest
		fields []string
	}{
		{"no items", &inventoryv1.ReserveRequest{IdempotencyKey: "k"}, []string{"items"}},
		{"bad variant id", &inventoryv1.ReserveRequest{Items: []*inventoryv1.Item{item("sku-1", 1)}, IdempotencyKey: "k"},
			[]string{"items[0].variant_id"}},
		{"quantity 0", &inventoryv1.ReserveRequest{Items: []*inventoryv1.Item{item(v, 1), item(w, 0)}, IdempotencyKey: "k"},
			[]string{"items[1].quantity"}},
		{"no idempotency key", &inventoryv1.ReserveRequest{Items: []*inventoryv1.Item{item(v, 1)}},
			[]string{"idempotency_key"}},
		{"a variant twice", &inventoryv1.ReserveRequest{Items: []*inventoryv1.Item{item(v, 1), item(v, 2)}, IdempotencyKey: "k"},
			[]string{"items[1].variant_id"}},
		{"ttl beyond the maximum", &inventoryv1.ReserveRequest{Items: []*inventoryv1.Item{item(v, 1)}, IdempotencyKey: "k", Ttl: durationpb.New(2 * time.Hour)},
			[]string{"ttl"}},
		{"several at once", &inventoryv1.ReserveRequest{Items: []*inventoryv1.Item{item("x", 0)}},
			[]string{"items[0].variant_id", "items[0].quantity", "idempotency_key"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := in.client.Reserve(context.Background(), connect.NewRequest(tt.req))
			wantInvalid(t, err, tt.fields...)
		})
	}
	if c := h.redisStock(v); c.Reserved != 0 {
		t.Fatalf("invalid requests held units: %+v", c)
	}

	t.Run("a retry under the same key gets the same reservation", func(t *testing.T) {
		first, err := reserve(context.Background(), in, v, 1, "retry", "")
		if err != nil {
			t.Fatal(err)
		}
		again, err := reserve(context.Background(), in, v, 1, "retry", "")
		if err != nil {
			t.Fatal(err)
		}
		if again.GetId() != first.GetId() {
			t.Fatalf("retry got reservation %s, want %s", again.GetId(), first.GetId())
		}
		_, err = reserve(context.Background(), in, v, 2, "retry", "")
		wantInvalid(t, err, "idempotency_key")
		if c := h.agree(v); c.Reserved != 1 {
			t.Fatalf("after the retries %+v, want 1 reserved", c)
		}
	})
}

// TestPurchaseLimitIsLive holds each customer to the configured number of
// units of a variant, gives units back to the limit on release, and takes
// a new limit while the service runs.
func TestPurchaseLimitIsLive(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *config.Config) { c.Inventory.PurchaseLimit = 2 })
	h.store = config.Static(h.cfg)
	in := h.start()
	v := newVariant()
	h.setStock(in, v, 100)
	ctx := context.Background()

	first, err := reserve(ctx, in, v, 1, "a1", "cus_a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(ctx, in, v, 1, "a2", "cus_a"); err != nil {
		t.Fatal(err)
	}
	_, err = reserve(ctx, in, v, 1, "a3", "cus_a")
	wantLimit(t, err, v, 2, 2)
	if _, err := reserve(ctx, in, v, 2, "b1", "cus_b"); err != nil {
		t.Fatalf("another customer was refused: %v", err)
	}
	if _, err := reserve(ctx, in, v, 5, "anon", ""); err != nil {
		t.Fatalf("a reservation without a customer was refused: %v", err)
	}

	if _, err := in.client.Release(ctx, connect.NewRequest(&inventoryv1.ReleaseRequest{ReservationId: first.GetId()})); err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(ctx, in, v, 1, "a4", "cus_a"); err != nil {
		t.Fatalf("after a release the customer was refused: %v", err)
	}
	_, err = reserve(ctx, in, v, 1, "a5", "cus_a")
	wantLimit(t, err, v, 2, 2)

	next := *h.store.Get()
	next.Inventory.PurchaseLimit = 3
	if changed := h.store.Set(next); !slices.Equal(changed, []string{"inventory.purchase_limit"}) {
		t.Fatalf("store.Set changed %v, want inventory.purchase_limit", changed)
	}
	if _, err := reserve(ctx, in, v, 1, "a6", "cus_a"); err != nil {
		t.Fatalf("under the raised limit a third unit was refused: %v", err)
	}
	_, err = reserve(ctx, in, v, 1, "a7", "cus_a")
	wantLimit(t, err, v, 3, 3)
	if c := h.agree(v); c.Reserved != 1+1+2+5+1 {
		t.Fatalf("after the reservations %+v, want 10 reserved", c)
	}
}

// TestAdmissionRefusesAHotVariantFast floods one variant past its
// in-flight bound: the excess is refused at once as UNAVAILABLE with a
// Retry-After, and another variant is served throughout.
func TestAdmissionRefusesAHotVariantFast(t *testing.T) {
	// Not parallel: it asserts how fast refusals come back.
	h := newHarness(t, func(c *config.Config) {
		c.Inventory.MaxInFlight = 10_000
		c.Inventory.MaxInFlightPerVariant = 1
	})
	in := h.start()
	hot, cold := newVariant(), newVariant()
	h.setStock(in, hot, 1000)
	h.setStock(in, cold, 1000)

	// 200 callers, each reserving a few times in a row, keep the variant
	// hot long enough for the other one to be served during the flood.
	const callers, rounds = 200, 3
	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, callers*rounds)
	start := make(chan struct{})
	hotDone := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for j := range rounds {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				began := time.Now()
				_, err := reserve(ctx, in, hot, 1, key("hot", i*rounds+j), "")
				results <- result{err, time.Since(began)}
				cancel()
			}
		}()
	}
	var coldErrs []error
	coldCalls, coldDuringFlood := 0, 0
	coldDone := make(chan struct{})
	go func() {
		defer close(coldDone)
		<-start
		for i := 0; ; i++ {
			flooding := true
			select {
			case <-hotDone:
				flooding = false
			default:
			}
			if !flooding && i >= 10 {
				return
			}
			coldCalls++
			_, err := reserve(context.Background(), in, cold, 1, key("cold", i), "")
			if err != nil {
				coldErrs = append(coldErrs, err)
			}
			select {
			case <-hotDone:
			default:
				coldDuringFlood++
			}
		}
	}()
	close(start)
	wg.Wait()
	close(hotDone)
	close(results)
	<-coldDone

	held, refused := 0, 0
	for r := range results {
		var cerr *connect.Error
		switch {
		case r.err == nil:
			held++
		case errors.As(r.err, &cerr) && cerr.Code() == connect.CodeUnavailable:
			refused++
			if got := cerr.Meta().Get("Retry-After"); got != retryAfter {
				t.Errorf("refusal carries Retry-After %q, want %q", got, retryAfter)
			}
			if r.took >= time.Second {
				t.Errorf("a refusal took %v, want well under 1s", r.took)
			}
		default:
			t.Errorf("hot reserve answered %v, want a hold or UNAVAILABLE", r.err)
		}
	}
	if refused == 0 {
		t.Fatalf("all %d concurrent reserves of one variant were admitted under a per-variant bound of 1", callers*rounds)
	}
	for _, err := range coldErrs {
		t.Errorf("a reserve of the other variant failed: %v", err)
	}
	if coldDuringFlood == 0 {
		t.Fatal("no reserve of the other variant was answered during the flood")
	}
	t.Logf("%d held, %d refused; %d reserves of the other variant, %d during the flood", held, refused, coldCalls, coldDuringFlood)
	if c := h.agree(hot); c.Reserved != int64(held) {
		t.Fatalf("hot variant %+v, want %d reserved", c, held)
	}
	if c := h.agree(cold); c.Reserved != int64(coldCalls) {
		t.Fatalf("cold variant %+v, want %d reserved", c, coldCalls)
	}
}

// TestAdmissionBounds checks the in-flight bounds in all and per variant;
// 0 means no bound.
func TestAdmissionBounds(t *testing.T) {
	t.Parallel()
	t.Run("in all", func(t *testing.T) {
		a := newAdmission()
		d1 := mustEnter(t, a, []string{"a"}, 2, 0)
		mustEnter(t, a, []string{"b"}, 2, 0)
		if _, ok := a.enter([]string{"c"}, 2, 0); ok {
			t.Fatal("a third reservation was admitted under a bound of 2")
		}
		d1()
		mustEnter(t, a, []string{"c"}, 2, 0)
	})
	t.Run("per variant", func(t *testing.T) {
		a := newAdmission()
		da := mustEnter(t, a, []string{"a"}, 0, 1)
		if _, ok := a.enter([]string{"a"}, 0, 1); ok {
			t.Fatal("a second reservation of a was admitted under a bound of 1")
		}
		if _, ok := a.enter([]string{"b", "a"}, 0, 1); ok {
			t.Fatal("a reservation of b and a was admitted while a is at its bound")
		}
		// The refused reservation must not have counted b.
		db := mustEnter(t, a, []string{"b"}, 0, 1)
		da()
		mustEnter(t, a, []string{"a"}, 0, 1)
		db()
	})
	t.Run("0 is no bound", func(t *testing.T) {
		a := newAdmission()
		var leave []func()
		for range 1000 {
			leave = append(leave, mustEnter(t, a, []string{"a", "b"}, 0, 0))
		}
		for _, done := range leave {
			done()
		}
		if a.total != 0 || len(a.perVariant) != 0 {
			t.Fatalf("after every reservation left: total %d, per variant %v", a.total, a.perVariant)
		}
	})
}

func mustEnter(t *testing.T, a *admission, variants []string, maxTotal, maxPerVariant int) func() {
	t.Helper()
	done, ok := a.enter(variants, maxTotal, maxPerVariant)
	if !ok {
		t.Fatalf("%v refused (in all %d/%d, per variant %v/%d)", variants, a.total, maxTotal, a.perVariant, maxPerVariant)
	}
	return done
}

// TestStockEventsArePublished watches the inventory's topics: every change
// of a variant's stock is told with a growing version, and reaching 0
// available is also told as stock.depleted.
func TestStockEventsArePublished(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	in := h.start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, &h.cfg, platformtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	changedTopic := events.Topic(h.cfg.Namespace, Name, domain.EventStockChanged)
	depletedTopic := events.Topic(h.cfg.Namespace, Name, domain.EventStockDepleted)
	changed := eventstest.Subscribe(t, b, events.Subscription{Topics: []string{changedTopic}}, nil)
	depleted := eventstest.Subscribe(t, b, events.Subscription{Topics: []string{depletedTopic}}, nil)
	eventstest.WaitReady(t, b, changedTopic, changed)
	eventstest.WaitReady(t, b, depletedTopic, depleted)

	v := newVariant()
	// latest returns the newest event of v on sub that matches, if any.
	latest := func(sub *eventstest.Subscriber, match func(domain.StockEvent) bool) (domain.StockEvent, bool) {
		t.Helper()
		var found domain.StockEvent
		ok := false
		for _, r := range sub.Received() {
			var env events.Envelope
			if err := json.Unmarshal(r.Msg.Body, &env); err != nil {
				t.Fatalf("undecodable event on %s: %v", r.Msg.Topic, err)
			}
			var e domain.StockEvent
			if err := env.Decode(&e); err != nil {
				t.Fatal(err)
			}
			if env.Source != Name || env.Subject != v || e.VariantID != v {
				continue
			}
			if match(e) && (!ok || e.Version > found.Version) {
				found, ok = e, true
			}
		}
		return found, ok
	}
	await := func(sub *eventstest.Subscriber, what string, match func(domain.StockEvent) bool) domain.StockEvent {
		t.Helper()
		var e domain.StockEvent
		took := platformtest.EventuallyWithin(t, 30*time.Second, what, func() bool {
			var ok bool
			e, ok = latest(sub, match)
			return ok
		})
		t.Logf("%s after %v", what, took)
		return e
	}

	h.setStock(in, v, 2)
	counted := await(changed, "stock.changed with 2 available", func(e domain.StockEvent) bool {
		return e.OnHand == 2 && e.Available == 2 && e.InStock
	})

	one, err := reserve(ctx, in, v, 1, "first", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(ctx, in, v, 1, "second", ""); err != nil {
		t.Fatal(err)
	}
	gone := await(changed, "stock.changed after the reservations", func(e domain.StockEvent) bool {
		return e.Version > counted.Version && e.Reserved == 2
	})
	if gone.Available != 0 || gone.InStock || gone.OnHand != 2 {
		t.Fatalf("stock.changed after the reservations: %+v, want 0 available and not in stock", gone)
	}
	await(depleted, "stock.depleted", func(e domain.StockEvent) bool {
		return e.Version == gone.Version && e.Available == 0 && !e.InStock
	})

	if _, err := in.client.Release(ctx, connect.NewRequest(&inventoryv1.ReleaseRequest{ReservationId: one.GetId()})); err != nil {
		t.Fatal(err)
	}
	back := await(changed, "stock.changed after the release", func(e domain.StockEvent) bool { return e.Version > gone.Version })
	if back.Available != 1 || !back.InStock || back.Reserved != 1 {
		t.Fatalf("stock.changed after the release: %+v, want 1 available and in stock", back)
	}
	ids := map[string]bool{}
	for _, r := range depleted.Received() {
		ids[r.Msg.ID] = true
	}
	if len(ids) != 1 {
		t.Fatalf("%d stock.depleted events, want 1", len(ids))
	}
}

// reply is an admin REST answer as the client saw it.
type reply struct {
	method, path string
	status       int
	header       http.Header
	body         []byte
}

// send sends body (none when empty) with token as bearer (none when empty)
// and the extra headers.
func send(t *testing.T, in *instance, method, path, token, body string, header map[string]string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, in.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{method: method, path: path, status: resp.StatusCode, header: resp.Header, body: raw}
}

func (r reply) wantStatus(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s %s: %d %s, want %d", r.method, r.path, r.status, r.body, status)
	}
}

// wantJSON compares the body with want as JSON values, so that a field
// renamed, added or left out fails.
func (r reply) wantJSON(t *testing.T, want any) {
	t.Helper()
	raw, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var w, got any
	_ = json.Unmarshal(raw, &w)
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("%s %s: %d %s: %v", r.method, r.path, r.status, r.body, err)
	}
	if !reflect.DeepEqual(got, w) {
		t.Fatalf("%s %s answered\n%s\nwant\n%s", r.method, r.path, r.body, raw)
	}
}

// wantProblem checks a problem+json answer: its status, its type (slug;
// "" for any) and exactly the fields it names.
func (r reply) wantProblem(t *testing.T, status int, slug string, fields ...string) {
	t.Helper()
	r.wantStatus(t, status)
	if ct := r.header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("%s %s: Content-Type %q, want %s", r.method, r.path, ct, problem.ContentType)
	}
	var p problem.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("%s %s: %s: %v", r.method, r.path, r.body, err)
	}
	if p.Status != status || (slug != "" && p.Type != problem.TypeURI(slug)) {
		t.Fatalf("%s %s: problem %s, want status %d type %s", r.method, r.path, r.body, status, problem.TypeURI(slug))
	}
	named := make([]string, len(p.Errors))
	for i, e := range p.Errors {
		named[i] = e.Field
	}
	if !slices.Equal(named, fields) && !(len(named) == 0 && len(fields) == 0) {
		t.Fatalf("%s %s: problem names %v, want %v: %s", r.method, r.path, named, fields, r.body)
	}
}

// level is the expected admin view of variant: counts per location as
// {on_hand, reserved, committed}, shown for locations in order.
func level(variant string, at map[string][3]int64, locations ...string) map[string]any {
	var total [3]int64
	locs := make([]any, len(locations))
	for i, l := range locations {
		c := at[l]
		for j := range total {
			total[j] += c[j]
		}
		locs[i] = map[string]any{"location": l, "on_hand": c[0], "reserved": c[1], "committed": c[2], "available": c[0] - c[1] - c[2]}
	}
	available := total[0] - total[1] - total[2]
	return map[string]any{
		"variant_id": variant, "on_hand": total[0], "reserved": total[1], "committed": total[2],
		"available": available, "in_stock": available > 0, "locations": locs,
	}
}

// importBody is an import of the variants in order, each at its count.
func importBody(order []string, counts map[string]int64) string {
	items := make([]string, len(order))
	for i, v := range order {
		items[i] = fmt.Sprintf(`{"variant_id": %q, "on_hand": %d}`, v, counts[v])
	}
	return `{"items": [` + strings.Join(items, ", ") + `]}`
}

// wantInvalid checks that err is INVALID_ARGUMENT with a BadRequest detail
// naming exactly fields, in order.
func wantInvalid(t *testing.T, err error, fields ...string) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("answered %v, want INVALID_ARGUMENT on %v", err, fields)
	}
	var named []string
	for _, f := range rpc.FieldViolations(err) {
		named = append(named, f.GetField())
	}
	if !slices.Equal(named, fields) {
		t.Fatalf("the BadRequest detail names %v, want %v (%v)", named, fields, err)
	}
}

// wantLimit checks that err is FAILED_PRECONDITION with a
// PurchaseLimitExceeded detail for variant.
func wantLimit(t *testing.T, err error, variant string, limit, held int64) {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeFailedPrecondition {
		t.Fatalf("answered %v, want FAILED_PRECONDITION for the purchase limit", err)
	}
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if l, ok := v.(*inventoryv1.PurchaseLimitExceeded); derr == nil && ok {
			if l.GetVariantId() != variant || l.GetLimit() != limit || l.GetAlreadyHeld() != held {
				t.Fatalf("purchase limit detail %v, want %s limit %d already held %d", l, variant, limit, held)
			}
			return
		}
	}
	t.Fatalf("FAILED_PRECONDITION without a PurchaseLimitExceeded detail: %v", err)
}
