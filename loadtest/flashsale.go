package loadtest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/rpc"
	inventoryv1 "github.com/mercato/mercato/proto/gen/mercato/inventory/v1"
	"github.com/mercato/mercato/proto/gen/mercato/inventory/v1/inventoryv1connect"
)

const (
	flashSaleName = "flash-sale"

	adminProductsPath  = "/v1/admin/products"
	adminInventoryPath = "/v1/admin/inventory/"

	// devAdminEmail is the admin that `mercato up` creates when no admin is
	// configured, with its password in the data directory's
	// adminPasswordFile.
	devAdminEmail     = "admin@mercato.localhost"
	adminPasswordFile = "admin-password"

	// reservationTTL is asked of every reservation: the service's default,
	// and far longer than a run, since a reservation that expired during
	// the run would give its unit to a later buyer and look like an
	// oversell.
	reservationTTL = 10 * time.Minute
	// flashSaleConns is how many HTTP/2 connections the buyers share. A
	// Go HTTP/2 server reads and writes each connection's frames on one
	// goroutine; with one connection the out-of-stock answers, most of a
	// sale's, came about a quarter slower, and four were no faster than
	// two (BenchmarkFlashSale).
	flashSaleConns = 2
	// stockPoll is how often setup asks whether the inventory RPC sees the
	// stock set through the gateway; it waits up to Options.Timeout.
	stockPoll = 20 * time.Millisecond
	// minRetryPause and maxRetryPause bound the pause before a buyer tries
	// again after an overload or a timeout, doubling with each try, so
	// that an inventory shedding load is not answered with a busy loop.
	minRetryPause = time.Millisecond
	maxRetryPause = 64 * time.Millisecond
)

var (
	// errNoInventoryURL is the answer to a flash sale without --inventory.
	errNoInventoryURL = errors.New("flash-sale needs --inventory: the inventory service's internal URL, " +
		"which `mercato up` lists under Services (such as --inventory http://127.0.0.1:41234); " +
		"reservations go there over the inventory RPC, not through the gateway")
	// errAdminRefused is a 401 from the admin's login.
	errAdminRefused = errors.New("status 401: the gateway refused the admin's email or password")
	// errNotAdmin is a 401 or 403 from an admin endpoint after a login.
	errNotAdmin = errors.New("the admin endpoints refused the login's token (does the account have the admin scope?)")
	// errNoCatalogAdmin and errNoInventoryAdmin are setup's answers to a
	// 404 from the gateway's admin endpoints.
	errNoCatalogAdmin = errors.New("status 404: the platform has no catalog admin endpoints " +
		"(is the catalog service running, and does the gateway route /v1/admin/products to it?)")
	errNoInventoryAdmin = errors.New("status 404: the platform has no inventory admin endpoints " +
		"(is the inventory service running, and does the gateway route /v1/admin/inventory to it?)")
	// errOversold is what a flash sale returns when it sold more than the
	// stock, by the buyers' count or by the inventory's own.
	errOversold = errors.New("OVERSOLD")
)

// FlashSaleResult holds what the flash-sale scenario adds to its Result.
// Its fields are printed among the Result's own; the Result's RPS,
// percentiles and Requests count Reserve calls, and a call answered out of
// stock is an answer, not an error.
type FlashSaleResult struct {
	// Buyers is how many buyers there were, each wanting one unit once.
	Buyers int `json:"buyers"`
	// Units is the stock the sale started with.
	Units int64 `json:"units"`
	// Successes counts buyers whose reservation succeeded.
	Successes int64 `json:"successes"`
	// OutOfStock counts buyers answered out of stock.
	OutOfStock int64 `json:"out_of_stock"`
	// Oversold is how many more buyers got a unit than there were units:
	// it must be 0.
	Oversold int64 `json:"oversold"`
	// Failed counts buyers whose last answer was an error that retrying
	// with the same key would not change, such as a purchase limit.
	Failed int64 `json:"failed"`
	// Unanswered counts buyers without an answer when the run ended at
	// Options.Duration or was cancelled.
	Unanswered int64 `json:"unanswered"`
	// Commit says whether each reservation was committed; Commits counts
	// those that were, CommitErrors the Commit calls that failed, by kind
	// in CommitErrorKinds.
	Commit           bool             `json:"commit"`
	Commits          int64            `json:"commits"`
	CommitErrors     int64            `json:"commit_errors"`
	CommitErrorKinds map[string]int64 `json:"commit_error_kinds,omitempty"`
	// VariantID and SKU name the hot variant setup created.
	VariantID string `json:"variant_id"`
	SKU       string `json:"sku"`
	// Stock is what GetStock reported after the run.
	Stock StockLevels `json:"stock"`
}

// StockLevels are a variant's stock as the inventory RPC reports it.
type StockLevels struct {
	OnHand    int64 `json:"on_hand"`
	Reserved  int64 `json:"reserved"`
	Committed int64 `json:"committed"`
	Available int64 `json:"available"`
}

// flashSale reserves one hot variant for many buyers at once through the
// inventory RPC, and checks that no more units were sold than there were.
type flashSale struct{}

func (flashSale) Name() string { return flashSaleName }

func (flashSale) Run(ctx context.Context, opts Options) ([]Result, error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.FlashSale.InventoryURL == "" {
		return nil, errNoInventoryURL
	}
	creds, err := adminCredentials(opts.FlashSale)
	if err != nil {
		return nil, fmt.Errorf("flash-sale setup: %w", err)
	}
	inv := newInventoryClients(opts.FlashSale.InventoryURL, flashSaleConns, flashSaleClientOptions()...)
	defer inv.close()
	sale, err := setupFlashSale(ctx, opts, creds, inv)
	if err != nil {
		return nil, fmt.Errorf("flash-sale setup: %w", err)
	}
	res, err := sale.run(ctx)
	if err != nil {
		if res.Requests > 0 {
			return []Result{res}, err // interrupted: report what was measured
		}
		return nil, err
	}
	err = sale.verify(ctx, &res)
	return []Result{res}, err
}

// adminLogin is whom setup logs in as, and where the password came from,
// for the message when the gateway refuses it.
type adminLogin struct {
	email, password, source string
}

// adminCredentials resolves the admin: the flags, else MERCATO_ADMIN_EMAIL
// and MERCATO_ADMIN_PASSWORD as the platform reads them, else the admin a
// local `mercato up` made, with the password it keeps in its data
// directory. The environment is read here rather than into the flags'
// defaults so that --help cannot print the password.
func adminCredentials(o FlashSaleOptions) (adminLogin, error) {
	a := adminLogin{email: o.AdminEmail, password: o.AdminPassword, source: "--admin-password"}
	if a.email == "" {
		a.email = cmp.Or(os.Getenv(config.EnvPrefix+"ADMIN_EMAIL"), devAdminEmail)
	}
	if a.password == "" {
		a.password, a.source = os.Getenv(config.EnvPrefix+"ADMIN_PASSWORD"), config.EnvPrefix+"ADMIN_PASSWORD"
	}
	if a.password == "" {
		path := filepath.Join(o.DataDir, adminPasswordFile)
		b, err := os.ReadFile(path)
		if err != nil {
			return a, fmt.Errorf("no admin password: pass --admin-password, set %sADMIN_PASSWORD, "+
				"or run where `mercato up` keeps its data directory (--data-dir): %w", config.EnvPrefix, err)
		}
		a.password, a.source = strings.TrimSpace(string(b)), path
		if a.password == "" {
			return a, fmt.Errorf("no admin password: %s is empty", path)
		}
	}
	return a, nil
}

// inventoryClients are the buyers' clients of the inventory RPC, one per
// HTTP/2 connection.
type inventoryClients struct {
	url     string
	clients []inventoryv1connect.InventoryServiceClient
	https   []*http.Client
}

// newInventoryClients opens conns cleartext HTTP/2 connections (h2c, as
// platform/rpc's services serve) to the inventory at baseURL. They are
// plain Connect clients, not rpc.Client: a load generator must see every
// failure as it happens, not have it retried, shed by a breaker or
// traced.
func newInventoryClients(baseURL string, conns int, opts ...connect.ClientOption) *inventoryClients {
	c := &inventoryClients{url: strings.TrimSuffix(baseURL, "/")}
	for range conns {
		hc := rpc.NewHTTPClient()
		c.https = append(c.https, hc)
		c.clients = append(c.clients, inventoryv1connect.NewInventoryServiceClient(hc, c.url, opts...))
	}
	return c
}

// flashSaleClientOptions choose the Connect protocol with binary protobuf,
// the cheaper of the two per call: a unary call is a plain POST whose body
// is the message, where gRPC adds a length prefix and answers in
// trailers, an HTTP/2 frame of their own. In BenchmarkFlashSale on the
// 2-core development machine, with the fake inventory in another process,
// a reservation cost the generator about 52 µs of CPU with Connect and 67
// with gRPC, and the server 72 and 95; an out-of-stock answer, whose error
// Connect sends as JSON, about 62 and 66, and 75 and 84. The buyers ask
// for uncompressed answers: connect-go accepts gzip by default, and its
// handlers then compress even a message of a few dozen bytes, which cost
// the server about 40% more per reservation and saved nothing.
func flashSaleClientOptions() []connect.ClientOption {
	return []connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}
}

// worker returns the client for worker w, spreading the workers over the
// connections.
func (c *inventoryClients) worker(w int) inventoryv1connect.InventoryServiceClient {
	return c.clients[w%len(c.clients)]
}

func (c *inventoryClients) close() {
	for _, hc := range c.https {
		hc.CloseIdleConnections()
	}
}

// getStock reads the stock of variant through the first connection.
func (c *inventoryClients) getStock(ctx context.Context, variant string, timeout time.Duration) (StockLevels, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.clients[0].GetStock(ctx, connect.NewRequest(&inventoryv1.GetStockRequest{VariantIds: []string{variant}}))
	if err != nil {
		return StockLevels{}, err
	}
	for _, s := range resp.Msg.GetStock() {
		if s.GetVariantId() == variant {
			return StockLevels{OnHand: s.GetOnHand(), Reserved: s.GetReserved(), Committed: s.GetCommitted(), Available: s.GetAvailable()}, nil
		}
	}
	return StockLevels{}, fmt.Errorf("GetStock answered without the stock of %s", variant)
}

// probe asks every connection for the stock of a variant that does not
// exist, so that a wrong --inventory fails before setup creates anything
// and the connections are open when the run starts.
func (c *inventoryClients) probe(ctx context.Context, timeout time.Duration) error {
	variant := id.New("var")
	for i := range c.clients {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := c.clients[i].GetStock(ctx, connect.NewRequest(&inventoryv1.GetStockRequest{VariantIds: []string{variant}}))
		cancel()
		switch code := connect.CodeOf(err); {
		case err == nil:
		case code == connect.CodeUnimplemented || code == connect.CodeNotFound || code == connect.CodeUnauthenticated:
			return fmt.Errorf("inventory RPC at %s: %w (is --inventory the inventory service's internal URL, not the gateway's?)", c.url, err)
		case code == connect.CodeUnavailable:
			return fmt.Errorf("inventory RPC at %s: %w (is the inventory service running there? `mercato up` lists its URL)", c.url, err)
		default:
			return fmt.Errorf("inventory RPC at %s: GetStock: %w", c.url, err)
		}
	}
	return nil
}

// saleRun is what flash-sale setup prepared: a new variant with Units in
// stock, and clients of the inventory that sees it.
type saleRun struct {
	opts      Options
	inv       *inventoryClients
	variantID string
	sku       string
	// keyPrefix starts every buyer's idempotency key; the buyer's number
	// ends it.
	keyPrefix string
}

// setupFlashSale checks the inventory RPC, logs the admin in through the
// gateway, creates a product with one variant of a new SKU, sets its stock
// to Units and waits until the inventory RPC reports it.
func setupFlashSale(ctx context.Context, opts Options, creds adminLogin, inv *inventoryClients) (*saleRun, error) {
	if err := inv.probe(ctx, opts.Timeout); err != nil {
		return nil, err
	}
	t, err := parseTarget(opts.BaseURL)
	if err != nil {
		return nil, err
	}
	tr := newTransport(ctx, t, 1, opts.Timeout)
	defer tr.close()
	run := strings.ToUpper(strings.TrimPrefix(id.New("sale"), "sale_"))
	g := &gatewayAdmin{opts: opts, c: newClient(tr), creds: creds, run: run}
	if err := g.logIn(); err != nil {
		return nil, err
	}
	s := &saleRun{opts: opts, inv: inv, sku: "FLASH-" + run, keyPrefix: "flash-" + strings.ToLower(run) + "-"}
	if s.variantID, err = g.createProduct(s.sku); err != nil {
		return nil, err
	}
	if err := g.setStock(s.variantID, opts.FlashSale.Units); err != nil {
		return nil, err
	}
	if err := s.waitForStock(ctx); err != nil {
		return nil, err
	}
	opts.Log.Info("flash-sale setup done", "sku", s.sku, "variant_id", s.variantID, "units", opts.FlashSale.Units,
		"buyers", opts.FlashSale.Buyers, "inventory", inv.url)
	return s, nil
}

// waitForStock waits until GetStock reports the stock that setup set
// through the gateway, which also shows that --inventory and --url are
// the same platform.
func (s *saleRun) waitForStock(ctx context.Context) error {
	want := s.opts.FlashSale.Units
	deadline := time.Now().Add(s.opts.Timeout)
	for {
		st, err := s.inv.getStock(ctx, s.variantID, s.opts.Timeout)
		if err != nil {
			return fmt.Errorf("inventory RPC at %s: GetStock of %s: %w", s.inv.url, s.variantID, err)
		}
		if st.OnHand == want && st.Reserved == 0 && st.Committed == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s, the inventory RPC at %s reports %+v for %s, not the %d units set through the gateway at %s "+
				"(do --inventory and --url belong to the same platform?)", s.opts.Timeout, s.inv.url, st, s.variantID, want, s.opts.BaseURL)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(stockPoll):
		}
	}
}

// gatewayAdmin sends setup's admin requests to the gateway, unmeasured.
type gatewayAdmin struct {
	opts  Options
	c     *client
	creds adminLogin
	run   string
	auth  [1]Header
}

// send sends req and names the failures common to every setup request.
func (g *gatewayAdmin) send(req Request) (Response, error) {
	resp, err := g.c.do(&req, time.Now().Add(g.opts.Timeout))
	switch {
	case err != nil && errorKind(err) == KindConnect:
		return resp, fmt.Errorf("%s: %w (is the platform running there?)", g.where(req), err)
	case err != nil:
		return resp, fmt.Errorf("%s: %w", g.where(req), err)
	case resp.Status == 429:
		return resp, fmt.Errorf("%s: %w", g.where(req), errRateLimited)
	}
	return resp, nil
}

func (g *gatewayAdmin) where(req Request) string {
	return cmp.Or(req.Method, "GET") + " " + g.opts.BaseURL + req.Path
}

// refused describes an admin endpoint's answer other than success.
func (g *gatewayAdmin) refused(req Request, resp Response, on404 error) error {
	switch resp.Status {
	case 401, 403:
		return fmt.Errorf("%s as %s: status %d: %w: %s", g.where(req), g.creds.email, resp.Status, errNotAdmin, snippet(resp.Body))
	case 404:
		return fmt.Errorf("%s: %w: %s", g.where(req), on404, snippet(resp.Body))
	}
	return fmt.Errorf("%s: status %d: %s", g.where(req), resp.Status, snippet(resp.Body))
}

// logIn logs the admin in and keeps the access token.
func (g *gatewayAdmin) logIn() error {
	body, err := json.Marshal(map[string]string{"email": g.creds.email, "password": g.creds.password})
	if err != nil {
		return err
	}
	req := Request{Method: "POST", Path: loginPath, Body: body}
	resp, err := g.send(req)
	switch {
	case err != nil:
		return err
	case resp.Status == 401:
		return fmt.Errorf("%s as %s, password from %s: %w; pass the platform's admin with --admin-email and --admin-password "+
			"or %sADMIN_EMAIL and %sADMIN_PASSWORD", g.where(req), g.creds.email, g.creds.source, errAdminRefused, config.EnvPrefix, config.EnvPrefix)
	case resp.Status == 404:
		return fmt.Errorf("%s: %w", g.where(req), errNoIdentity)
	case resp.Status != 200:
		return fmt.Errorf("%s as %s: status %d: %s", g.where(req), g.creds.email, resp.Status, snippet(resp.Body))
	}
	token := tokenField(resp.Body, `"access_token"`)
	if token == "" {
		return fmt.Errorf("%s: the answer has no access_token: %s", g.where(req), snippet(resp.Body))
	}
	g.auth[0] = Header{Name: "Authorization", Value: "Bearer " + token}
	return nil
}

// createProduct creates a product whose one variant has sku and returns
// the variant's id.
func (g *gatewayAdmin) createProduct(sku string) (string, error) {
	title := "Flash sale " + g.run
	body, err := json.Marshal(map[string]any{
		"title":       title,
		"description": "Created by `mercato load flash-sale`.",
		"variants": []map[string]any{{
			"sku":   sku,
			"title": title,
			"price": map[string]any{"amount": 1999, "currency": "EUR"},
		}},
	})
	if err != nil {
		return "", err
	}
	req := Request{Method: "POST", Path: adminProductsPath, Body: body, Header: []Header{
		g.auth[0], {Name: "Idempotency-Key", Value: "flash-sale-product-" + g.run},
	}}
	resp, err := g.send(req)
	if err != nil {
		return "", err
	}
	if resp.Status != 201 {
		return "", g.refused(req, resp, errNoCatalogAdmin)
	}
	var product struct {
		Variants []struct {
			ID  string `json:"id"`
			SKU string `json:"sku"`
		} `json:"variants"`
	}
	if err := json.Unmarshal(resp.Body, &product); err != nil {
		return "", fmt.Errorf("%s: decode: %w", g.where(req), err)
	}
	for _, v := range product.Variants {
		if v.SKU == sku && v.ID != "" {
			return v.ID, nil
		}
	}
	return "", fmt.Errorf("%s: the product created has no variant %s: %s", g.where(req), sku, snippet(resp.Body))
}

// setStock sets the variant's stock on hand to units.
func (g *gatewayAdmin) setStock(variant string, units int64) error {
	req := Request{Method: "PUT", Path: adminInventoryPath + url.PathEscape(variant),
		Body: fmt.Appendf(nil, `{"on_hand":%d}`, units), Header: []Header{
			g.auth[0], {Name: "Idempotency-Key", Value: "flash-sale-stock-" + g.run},
		}}
	resp, err := g.send(req)
	if err != nil {
		return err
	}
	if resp.Status != 200 {
		return g.refused(req, resp, errNoInventoryAdmin)
	}
	var stock struct {
		OnHand *int64 `json:"on_hand"`
	}
	if err := json.Unmarshal(resp.Body, &stock); err != nil || stock.OnHand == nil || *stock.OnHand != units {
		return fmt.Errorf("%s: want on_hand %d in the answer: %s", g.where(req), units, snippet(resp.Body))
	}
	return nil
}

// answer is how a Reserve or Commit call ended for its buyer.
type answer uint8

const (
	answerOK         answer = iota // reserved, or committed
	answerOutOfStock               // the stock is gone: the buyer is done
	answerRetry                    // overload, a timeout or a lost connection: try again with the same key
	answerFailed                   // an error that trying again would not change
)

// classifyCall reads an RPC's outcome and, for a failure, its kind for
// Result.ErrorKinds: the Connect code's name, "timeout" for a deadline as
// the other scenarios have it, or "purchase_limit_exceeded".
func classifyCall(err error) (answer, string) {
	if err == nil {
		return answerOK, ""
	}
	code := connect.CodeOf(err)
	switch code {
	case connect.CodeFailedPrecondition:
		if cerr, ok := errors.AsType[*connect.Error](err); ok {
			for _, d := range cerr.Details() {
				switch d.Type() {
				case string((*inventoryv1.OutOfStock)(nil).ProtoReflect().Descriptor().FullName()):
					return answerOutOfStock, ""
				case string((*inventoryv1.PurchaseLimitExceeded)(nil).ProtoReflect().Descriptor().FullName()):
					return answerFailed, "purchase_limit_exceeded"
				}
			}
		}
	case connect.CodeDeadlineExceeded:
		return answerRetry, KindTimeout
	case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeAborted:
		return answerRetry, code.String()
	}
	return answerFailed, code.String()
}

// retryPause is the pause before a buyer's try after the given number of
// failed ones.
func retryPause(failed int) time.Duration {
	return min(minRetryPause<<min(failed-1, 10), maxRetryPause)
}

// saleTally is what one worker counted beyond its tally; each worker owns
// one, so counting needs no lock.
type saleTally struct {
	successes, outOfStock, failed int64
	commits, commitErrors         int64
	commitKinds                   map[string]int64
}

// run is the measured part: Concurrency workers take buyers in turn, each
// buyer reserving one unit with its own customer id and idempotency key
// until it is answered with a reservation or out of stock. It ends when
// every buyer has an answer, at Options.Duration, or when ctx ends.
func (s *saleRun) run(ctx context.Context) (Result, error) {
	o := s.opts
	workers := min(o.Concurrency, o.FlashSale.Buyers)
	o.Log.Info("load case started", "case", flashSaleName, "concurrency", workers, "buyers", o.FlashSale.Buyers,
		"units", o.FlashSale.Units, "commit", o.FlashSale.Commit, "max_duration", o.Duration)
	runCtx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	var next atomic.Int64
	tallies := make([]*tally, workers)
	sales := make([]saleTally, workers)
	progress := &caseRun{start: time.Now(), counters: make([]counter, workers)}
	progress.from = progress.start
	var wg sync.WaitGroup
	for w := range workers {
		tallies[w] = newTally()
		sales[w].commitKinds = map[string]int64{}
		wg.Go(func() {
			s.work(runCtx, s.inv.worker(w), &next, tallies[w], &sales[w], &progress.counters[w].n)
		})
	}
	stop, reported := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reported)
		progress.report(o.Log, flashSaleName, stop)
	}()
	wg.Wait()
	wall := time.Since(progress.start)
	close(stop)
	<-reported

	res := summarize(flashSaleName, workers, wall, tallies)
	fs := &FlashSaleResult{
		Buyers: o.FlashSale.Buyers, Units: o.FlashSale.Units, Commit: o.FlashSale.Commit,
		VariantID: s.variantID, SKU: s.sku, CommitErrorKinds: map[string]int64{},
	}
	for _, t := range sales {
		fs.Successes += t.successes
		fs.OutOfStock += t.outOfStock
		fs.Failed += t.failed
		fs.Commits += t.commits
		fs.CommitErrors += t.commitErrors
		for k, v := range t.commitKinds {
			fs.CommitErrorKinds[k] += v
		}
	}
	// Buyers no worker took are unanswered too.
	fs.Unanswered = int64(o.FlashSale.Buyers) - fs.Successes - fs.OutOfStock - fs.Failed
	fs.Oversold = max(0, fs.Successes-fs.Units)
	res.FlashSaleResult = fs
	o.Log.Info("load case finished", "case", flashSaleName, "rps", res.RPS, "p50_ms", res.P50ms, "p99_ms", res.P99ms,
		"successes", fs.Successes, "out_of_stock", fs.OutOfStock, "errors", res.Errors, "unanswered", fs.Unanswered)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if fs.Unanswered > 0 {
		o.Log.Warn("the run reached --duration before every buyer had an answer; raise it to let the sale finish",
			"duration", o.Duration, "unanswered", fs.Unanswered)
	}
	return res, nil
}

// work is one worker: it takes the next buyer until none is left.
func (s *saleRun) work(ctx context.Context, inv inventoryv1connect.InventoryServiceClient, next *atomic.Int64, t *tally, st *saleTally, done *atomic.Int64) {
	buyers := int64(s.opts.FlashSale.Buyers)
	msg := &inventoryv1.ReserveRequest{
		Items: []*inventoryv1.Item{{VariantId: s.variantID, Quantity: 1}},
		Ttl:   durationpb.New(reservationTTL),
	}
	key := []byte(s.keyPrefix)
	for ctx.Err() == nil {
		n := next.Add(1) - 1
		if n >= buyers {
			return
		}
		key = strconv.AppendInt(key[:len(s.keyPrefix)], n, 10)
		msg.IdempotencyKey = string(key)
		msg.CustomerId = id.New("cust")
		reservation, ok := s.reserve(ctx, inv, msg, t, st, done)
		if ok && s.opts.FlashSale.Commit {
			s.commit(ctx, inv, reservation, st)
		}
	}
}

// reserve asks for one buyer's unit until it has an answer, and returns
// the reservation's id when it got one.
func (s *saleRun) reserve(ctx context.Context, inv inventoryv1connect.InventoryServiceClient, msg *inventoryv1.ReserveRequest,
	t *tally, st *saleTally, done *atomic.Int64) (string, bool) {
	for failed := 0; ; {
		start := time.Now()
		callCtx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		resp, err := inv.Reserve(callCtx, connect.NewRequest(msg))
		cancel()
		elapsed := time.Since(start)
		done.Add(1)
		if err != nil && ctx.Err() != nil {
			return "", false // cut short by the run's end, not failed by the server
		}
		a, kind := classifyCall(err)
		switch a {
		case answerOK:
			t.success(elapsed)
			st.successes++
			return resp.Msg.GetReservation().GetId(), true
		case answerOutOfStock:
			t.success(elapsed)
			st.outOfStock++
			return "", false
		case answerFailed:
			t.failure(kind)
			st.failed++
			return "", false
		}
		t.failure(kind)
		failed++
		if !sleep(ctx, retryPause(failed)) {
			return "", false
		}
	}
}

// commit commits a buyer's reservation, trying again after an overload or
// a timeout, since Commit is idempotent.
func (s *saleRun) commit(ctx context.Context, inv inventoryv1connect.InventoryServiceClient, reservation string, st *saleTally) {
	msg := &inventoryv1.CommitRequest{ReservationId: reservation}
	for failed := 0; ; {
		callCtx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		_, err := inv.Commit(callCtx, connect.NewRequest(msg))
		cancel()
		if err != nil && ctx.Err() != nil {
			return
		}
		a, kind := classifyCall(err)
		switch a {
		case answerOK:
			st.commits++
			return
		case answerRetry:
			st.commitErrors++
			st.commitKinds[kind]++
			failed++
			if !sleep(ctx, retryPause(failed)) {
				return
			}
		default:
			st.commitErrors++
			st.commitKinds[kind]++
			return
		}
	}
}

// sleep waits d unless ctx ends first, reporting whether it waited.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// verify reads the variant's stock after the run into res and fails
// loudly when more was sold than there was: by the buyers' count
// (successes above the units), or by the inventory's own (reserved and
// committed units above the units on hand, the invariant the inventory
// must keep).
func (s *saleRun) verify(ctx context.Context, res *Result) error {
	fs := res.FlashSaleResult
	st, err := s.inv.getStock(ctx, s.variantID, s.opts.Timeout)
	if err != nil {
		return fmt.Errorf("read the stock after the sale: inventory RPC at %s: GetStock of %s: %w", s.inv.url, s.variantID, err)
	}
	fs.Stock = st
	var errs []error
	if fs.Oversold > 0 {
		errs = append(errs, fmt.Errorf("%w: %d buyers got a reservation for %d units: %d units oversold", errOversold, fs.Successes, fs.Units, fs.Oversold))
	}
	if st.Reserved+st.Committed > st.OnHand {
		errs = append(errs, fmt.Errorf("%w: the inventory holds %d reserved and %d committed units of %s with %d on hand; reserved + committed must never exceed on_hand",
			errOversold, st.Reserved, st.Committed, s.variantID, st.OnHand))
	}
	if err := errors.Join(errs...); err != nil {
		s.opts.Log.Error("FLASH SALE OVERSOLD", "error", err, "variant_id", s.variantID, "successes", fs.Successes,
			"units", fs.Units, "on_hand", st.OnHand, "reserved", st.Reserved, "committed", st.Committed)
		return err
	}
	if held := st.Reserved + st.Committed; held != fs.Successes {
		s.opts.Log.Warn("the inventory holds another number of units than the buyers were answered with",
			"held", held, "successes", fs.Successes, "unanswered", fs.Unanswered)
	}
	return nil
}
