//go:build unix

package loadtest

import (
	"bufio"
	"bytes"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
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
