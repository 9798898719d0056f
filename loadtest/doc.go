// Package loadtest is the load generator behind `mercato load SCENARIO`: it
// drives the running platform through the gateway with closed-loop workers and
// reports throughput, latency percentiles and errors as one JSON line per case.
//
// # Usage
//
// The command wiring registers the flags and hands over:
//
//	fs := flag.NewFlagSet("load", flag.ContinueOnError)
//	opts := loadtest.Flags(fs) // --url --concurrency --duration --warmup --timeout, and each scenario's own
//	if err := fs.Parse(args); err != nil { ... }
//	opts.Out, opts.Log = os.Stdout, logger
//	_, err := loadtest.Run(ctx, fs.Arg(0), *opts)
//
// `mercato load browse` discovers product ids, categories and search words
// (unmeasured), then runs browse/product_detail, browse/list and browse/search
// for --duration each and prints lines such as
//
//	{"scenario":"browse/product_detail","rps":10412.5,"p50_ms":4.1,"p95_ms":9.8,"p99_ms":14.2,"errors":0,"requests":208250,"duration_s":20,"concurrency":64,"error_kinds":{}}
//
// `mercato load auth` creates --accounts customers (default and minimum:
// one per worker) named load+<run id>-<n>@example.com with one fixed
// password, or finds them from an earlier run given its --run-id, and logs
// each in once (unmeasured); then it runs auth/login (POST /v1/auth/login,
// each worker taking turns with its customers), auth/refresh (POST
// /v1/auth/refresh, each worker spending the refresh token of its own
// previous answer, as tokens rotate and a replay would revoke the session)
// and auth/me (GET /v1/me with the worker's access token). Login hashes a
// password on the server, so its rps is low by design: it is the figure to
// report with the argon2id parameters. A worker that loses its session,
// because a refresh failed or a case ended with a refresh unanswered, logs
// in again unmeasured (Request.Unmeasured) rather than risk a replay. The
// platform must run with MERCATO_RATE_LIMIT_PER_IP=0, since the load comes
// from one address; setup says so when it meets a 429. The customers are
// real accounts with a password that is in this source: load a platform
// that serves no one else.
//
// `mercato load flash-sale --buyers N --units U --inventory URL` sells one
// hot variant to N buyers at once and checks that no more than U units were
// sold. Setup, through the gateway's admin API and unmeasured, logs in as
// the admin (--admin-email and --admin-password; else MERCATO_ADMIN_EMAIL
// and MERCATO_ADMIN_PASSWORD; else the admin of a local `mercato up`, whose
// password is the file admin-password in --data-dir), creates a product
// with one variant of a new SKU and sets its stock to U. Then --concurrency
// workers take the buyers in turn, each buyer calling InventoryService.Reserve
// for one unit, with a customer id and an idempotency key of its own, at the
// inventory's internal URL (--inventory, which `mercato up` lists) until it
// is answered with a reservation or out of stock; after an overload or a
// timeout it asks again with the same key, after a short pause. The run
// ends when every buyer has an answer, or at --duration, which here is an
// upper bound; --warmup does not apply, as setup has opened the
// connections. With --commit each reservation is committed too. Then
// GetStock reads the variant's stock, and the scenario prints
//
//	{"scenario":"flash-sale","rps":12500.3,"p50_ms":4.2,"p95_ms":9.1,"p99_ms":13.5,"errors":0,"requests":50000,"duration_s":4,"concurrency":64,"error_kinds":{},"buyers":50000,"units":1000,"successes":1000,"out_of_stock":49000,"oversold":0,"failed":0,"unanswered":0,"commit":false,"commits":0,"commit_errors":0,"variant_id":"var_…","sku":"FLASH-…","stock":{"on_hand":1000,"reserved":1000,"committed":0,"available":0}}
//
// where rps is Reserve calls answered (reserved or out of stock) per second
// of the whole run, the percentiles are theirs, and errors counts the other
// calls, by kind (timeout, or the Connect code's name) in error_kinds. oversold is successes above U; the
// scenario fails loudly when it is not 0 or when the inventory reports more
// units reserved and committed than on hand.
//
// # What the numbers mean
//
// Each of Concurrency workers sends its next request as soon as the previous
// one is answered. The first Warmup of a case (default the smaller of 2s and
// 10% of Duration) is not measured, so connections are open and caches warm
// when the window starts. A request belongs to the window when it starts
// inside it. rps and the percentiles describe successful requests only, so a
// burst of fast 429s or 503s cannot flatter them; every failed request is in
// errors and, by kind, in error_kinds (status_NNN for an unexpected status,
// timeout, connect, closed, protocol, transport). Percentiles are exact
// (nearest rank over all samples).
//
// # How the generator sends requests
//
// The generator shares the machine's cores with the system it measures, so
// each request must cost it as little as possible. The flash sale speaks
// Connect over cleartext HTTP/2 to the inventory, as the checkout does
// (flashSaleClientOptions says why Connect rather than gRPC); the
// other scenarios send HTTP/1.1 through
// github.com/valyala/fasthttp: the workers of a case share one HostClient
// with a keep-alive connection each (one multiplexed HTTP/2 connection would
// serialise the workers), and each worker reuses its request and response,
// so a request allocates nothing. With the server in another process
// (BenchmarkDriverOverhead with LOADTEST_BENCH_URL), a request costs the
// generator about 11 µs of CPU; net/http's Transport costs about 22 µs and
// fifty allocations, as it hands each request between three goroutines. A
// hand-written client, which the package had first, cost 10-20% less than
// fasthttp: too little to pay for keeping an HTTP parser of our own.
package loadtest
