//go:build unix

package loadtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/mercato/mercato/platform/id"
)

// benchConcurrency matches the default --concurrency.
const benchConcurrency = 64

// BenchmarkDriverOverhead measures what one request costs the generator.
// Every sub-benchmark shares the process with its server, so ns/op (the
// inverse of throughput) and cpu-µs/req include the server's share:
//
//   - httptest: the standard library server answering 1 KiB of JSON.
//   - canned: a server that writes a prepared response and allocates
//     nothing, so allocs/op is the generator's own and cpu-µs/req is
//     mostly the generator's.
//   - net_http_baseline: the same closed loop through net/http's Transport
//     against the canned server, for comparison with canned.
//
// With LOADTEST_BENCH_URL set to a server in another process (any server
// answering GET /v1/products/{id} with 200), external and
// external_net_http_baseline also drive it, so that their cpu-µs/req is the
// generator's alone.
func BenchmarkDriverOverhead(b *testing.B) {
	body := benchBody()
	b.Run("httptest", func(b *testing.B) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}))
		b.Cleanup(srv.Close)
		benchDrive(b, srv.URL)
	})
	b.Run("canned", func(b *testing.B) {
		benchDrive(b, "http://"+cannedServer(b, body))
	})
	b.Run("net_http_baseline", func(b *testing.B) {
		benchNetHTTP(b, "http://"+cannedServer(b, body))
	})
	if url := os.Getenv("LOADTEST_BENCH_URL"); url != "" {
		b.Run("external", func(b *testing.B) { benchDrive(b, url) })
		b.Run("external_net_http_baseline", func(b *testing.B) { benchNetHTTP(b, url) })
	}
}

func benchDrive(b *testing.B, url string) {
	b.Helper()
	opts := Options{
		BaseURL:     url,
		Concurrency: benchConcurrency,
		Duration:    time.Hour, // the request budget ends the run
		Warmup:      -1,
		Timeout:     5 * time.Second,
		Log:         slog.New(slog.DiscardHandler),
	}
	paths := make([]string, 1000)
	for i := range paths {
		paths[i] = "/v1/products/prod_" + strconv.Itoa(i)
	}
	next := func(_ int, rng *rand.Rand, _ Response) Request {
		return Request{Path: paths[rng.IntN(len(paths))]}
	}
	b.ReportAllocs()
	cpu := cpuTime(b)
	start := time.Now()
	b.ResetTimer()
	res, err := drive(b.Context(), opts, "bench", next, int64(b.N))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Errors > 0 || res.Requests != int64(b.N) {
		b.Fatalf("%d requests, %d errors: %v", res.Requests, res.Errors, res.ErrorKinds)
	}
	reportRate(b, res.Requests, time.Since(start), cpuTime(b)-cpu)
}

// benchNetHTTP is the closed loop of Drive written with net/http's client
// as the brief first suggested: one tuned Transport, HTTP/1.1, bodies read
// to the end into a reused buffer.
func benchNetHTTP(b *testing.B, url string) {
	b.Helper()
	tr := &http.Transport{
		MaxIdleConns:        benchConcurrency,
		MaxIdleConnsPerHost: benchConcurrency,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var budget atomic.Int64
	budget.Store(int64(b.N))
	var failures atomic.Int64
	b.ReportAllocs()
	cpu := cpuTime(b)
	start := time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range benchConcurrency {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for budget.Add(-1) >= 0 {
				resp, err := client.Get(url + "/v1/products/prod_1")
				if err != nil {
					failures.Add(1)
					continue
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						break
					}
				}
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d failures", n)
	}
	reportRate(b, int64(b.N), time.Since(start), cpuTime(b)-cpu)
}

func reportRate(b *testing.B, requests int64, elapsed, cpu time.Duration) {
	b.Helper()
	if elapsed > 0 {
		b.ReportMetric(float64(requests)/elapsed.Seconds(), "req/s")
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(requests), "cpu-µs/req")
}

// cpuTime is the user and system CPU time of the whole process.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchBody is 1 KiB of product-like JSON.
func benchBody() []byte {
	body := []byte(`{"id":"prod_01j9zq7m3k2x","title":"Rustic lamp","description":"`)
	tail := []byte(`","category_ids":["cat_home"],"variants":[]}`)
	return append(append(body, bytes.Repeat([]byte("x"), 1024-len(body)-len(tail))...), tail...)
}

// cannedServer answers every request with a prepared response, without
// parsing it or allocating, so that what is measured is the client.
func cannedServer(b *testing.B, body []byte) string {
	b.Helper()
	response := append([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"), body...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var conns sync.WaitGroup
	b.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer conn.Close()
				br := bufio.NewReaderSize(conn, 16<<10)
				for {
					if err := skipRequest(br); err != nil {
						return
					}
					if _, err := conn.Write(response); err != nil {
						return
					}
				}
			})
		}
	}()
	return ln.Addr().String()
}

// skipRequest reads one bodiless request, up to its empty line.
func skipRequest(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}

// BenchmarkFlashSale measures what one Reserve call of the flash sale
// costs, with the fake inventory in a child process so that the two sides
// are apart: cpu-µs/call is the generator's, server-cpu-µs/call the
// fake's, which does little but speak the protocol. Each case runs b.N
// buyers through saleRun.run at the default concurrency, all answered
// with a reservation (reserved) or all out of stock (out_of_stock, what
// most buyers of a sale get). It compares the scenario's choice (connect,
// two connections, no compression) with the gRPC protocol, with one and
// four connections, and with connect-go's default of accepting gzip.
func BenchmarkFlashSale(b *testing.B) {
	chosen := flashSaleClientOptions()
	cases := []struct {
		name  string
		conns int
		opts  []connect.ClientOption
	}{
		{"connect/conns=2", flashSaleConns, chosen},
		{"grpc/conns=2", flashSaleConns, append(slices.Clone(chosen), connect.WithGRPC())},
		{"connect/conns=1", 1, chosen},
		{"connect/conns=4", 4, chosen},
		{"connect_gzip/conns=2", flashSaleConns, nil},
	}
	for _, answer := range []string{"reserved", "out_of_stock"} {
		for _, c := range cases {
			b.Run(answer+"/"+c.name, func(b *testing.B) {
				units := int64(b.N)
				if answer == "out_of_stock" {
					units = 0
				}
				benchFlashSale(b, units, c.conns, c.opts)
			})
		}
	}
}

func benchFlashSale(b *testing.B, units int64, conns int, opts []connect.ClientOption) {
	b.Helper()
	variant := id.New("var")
	child := startFakeInventoryProcess(b, variant, units)
	inv := newInventoryClients(child.url, conns, opts...)
	b.Cleanup(inv.close)
	if err := inv.probe(b.Context(), 5*time.Second); err != nil {
		b.Fatal(err)
	}
	s := &saleRun{
		opts: Options{
			Concurrency: benchConcurrency, Duration: time.Hour, Timeout: 5 * time.Second,
			Log:       slog.New(slog.DiscardHandler),
			FlashSale: FlashSaleOptions{Buyers: b.N, Units: units},
		},
		inv: inv, variantID: variant, keyPrefix: "bench-",
	}
	b.ReportAllocs()
	cpu, serverCPU := cpuTime(b), child.cpu(b)
	start := time.Now()
	b.ResetTimer()
	res, err := s.run(b.Context())
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Errors > 0 || res.Successes+res.OutOfStock != int64(b.N) {
		b.Fatalf("%+v %+v", res, *res.FlashSaleResult)
	}
	reportRate(b, res.Requests, time.Since(start), cpuTime(b)-cpu)
	b.ReportMetric(float64((child.cpu(b)-serverCPU).Microseconds())/float64(res.Requests), "server-cpu-µs/call")
}

// fakeInventoryProcess is a fake inventory served by a child process,
// which answers each line on its standard input with its CPU time.
type fakeInventoryProcess struct {
	url string
	in  io.Writer
	out *bufio.Reader
}

func startFakeInventoryProcess(b *testing.B, variant string, units int64) *fakeInventoryProcess {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFakeInventoryProcess$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("LOADTEST_FAKE_INVENTORY=%s=%d", variant, units))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	p := &fakeInventoryProcess{in: in, out: bufio.NewReader(out)}
	line, err := p.out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "http://") {
		b.Fatalf("the fake inventory process said %q: %v", line, err)
	}
	p.url = strings.TrimSpace(line)
	return p
}

// cpu is the child's CPU time so far.
func (p *fakeInventoryProcess) cpu(b *testing.B) time.Duration {
	b.Helper()
	if _, err := io.WriteString(p.in, "cpu\n"); err != nil {
		b.Fatal(err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		b.Fatalf("the fake inventory process said %q", line)
	}
	return time.Duration(ns)
}

// TestFakeInventoryProcess is the child process of BenchmarkFlashSale,
// skipped in any other run.
func TestFakeInventoryProcess(t *testing.T) {
	spec := os.Getenv("LOADTEST_FAKE_INVENTORY")
	if spec == "" {
		t.Skip("the child process of BenchmarkFlashSale")
	}
	variant, units, _ := strings.Cut(spec, "=")
	n, err := strconv.ParseInt(units, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeInventory()
	f.setStock(variant, n)
	fmt.Println(f.serve(t))
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		fmt.Println(ru.Utime.Nano() + ru.Stime.Nano())
	}
}
