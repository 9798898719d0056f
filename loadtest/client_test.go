package loadtest

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestRequestCheck(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		ok   bool
	}{
		{"plain", Request{Path: "/v1/products"}, true},
		{"no leading slash", Request{Path: "v1/products"}, false},
		{"space in path", Request{Path: "/v1/products?q=a b"}, false},
		{"newline in header value", Request{Path: "/", Header: []Header{{"X-A", "b\r\nEvil: 1"}}}, false},
		{"colon in header name", Request{Path: "/", Header: []Header{{"X:A", "b"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.check()
			if (err == nil) != tt.ok {
				t.Fatalf("check() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && errorKind(err) != KindInvalid {
				t.Errorf("errorKind = %q, want %q", errorKind(err), KindInvalid)
			}
		})
	}
}

// TestClassify covers the fasthttp errors that the tests against servers
// below cannot provoke reliably.
func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"fasthttp timeout", fasthttp.ErrTimeout, KindTimeout},
		{"read deadline", fmt.Errorf("error when reading response headers: %w", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}), KindTimeout},
		{"closed before the first byte", fasthttp.ErrConnectionClosed, KindClosed},
		{"closed mid-body", io.ErrUnexpectedEOF, KindClosed},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, KindClosed},
		{"broken pipe", &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, KindClosed},
		{"dial", &requestError{kind: KindConnect, err: syscall.ECONNREFUSED}, KindConnect},
		{"invalid URI", fasthttp.ErrorInvalidURI, KindInvalid},
		{"no free connection", fasthttp.ErrNoFreeConns, KindTransport},
		{"other network failure", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.EHOSTUNREACH)}, KindTransport},
		{"unparsable response", errors.New("error when reading response headers: cannot find whitespace"), KindProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errorKind(classify(tt.err)); got != tt.want {
				t.Errorf("errorKind(classify(%v)) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// TestClientAgainstNetHTTP checks the client against the standard library's
// server, sending each request twice so that a connection left in a bad
// state shows.
func TestClientAgainstNetHTTP(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: chunked, many reads
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"ok":true}`) })
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(big); i += 10000 {
			io.WriteString(w, big[i:min(i+10000, len(big))])
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/not-modified", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc("/no-content", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/early-hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		fmt.Fprint(w, "after hints")
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "bye")
	})
	mux.HandleFunc("/head", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		if r.Method != "HEAD" {
			fmt.Fprint(w, "hello")
		}
	})
	mux.HandleFunc("/problem", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusTeapot)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		name   string
		req    Request
		status int
		body   string
	}{
		{"content length", Request{Path: "/small"}, 200, `{"ok":true}`},
		{"chunked", Request{Path: "/chunked"}, 200, big},
		{"304 has no body", Request{Path: "/not-modified"}, 304, ""},
		{"204 has no body", Request{Path: "/no-content"}, 204, ""},
		{"informational responses are skipped", Request{Path: "/early-hints"}, 200, "after hints"},
		{"Connection: close", Request{Path: "/close"}, 200, "bye"},
		{"HEAD reads no body", Request{Method: "HEAD", Path: "/head"}, 200, ""},
		{"error status", Request{Path: "/problem"}, 418, "nope\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testClient(t, mustTarget(t, srv.URL))
			for i := range 2 {
				resp, err := c.do(&tt.req, time.Now().Add(5*time.Second))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if resp.Status != tt.status || string(resp.Body) != tt.body {
					t.Fatalf("request %d: status %d body %.60q…, want %d %.60q…", i, resp.Status, resp.Body, tt.status, tt.body)
				}
			}
		})
	}
}

// TestClientSends checks what a server receives for each kind of Request.
func TestClientSends(t *testing.T) {
	type received struct {
		method, uri, host, userAgent, accept, contentType, contentLength, test, body string
	}
	got := make(chan received, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{r.Method, r.RequestURI, r.Host, r.UserAgent(), r.Header.Get("Accept"), r.Header.Get("Content-Type"),
			r.Header.Get("Content-Length"), r.Header.Get("X-Test"), string(b)}
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	tests := []struct {
		name string
		base string // appended to the server's URL
		req  Request
		want received
	}{
		{"GET is the default", "", Request{Path: "/v1/products/p1"},
			received{method: "GET", uri: "/v1/products/p1"}},
		{"the base path prefixes the path", "/api/", Request{Path: "/v1/products?q=lamp&page_size=20"},
			received{method: "GET", uri: "/api/v1/products?q=lamp&page_size=20"}},
		{"the path goes as written", "", Request{Path: "/v1/products/a%2Fb//c?q=%C3%A9"},
			received{method: "GET", uri: "/v1/products/a%2Fb//c?q=%C3%A9"}},
		{"headers are sent", "", Request{Path: "/v1/me", Header: []Header{{"x-test", "yes"}}},
			received{method: "GET", uri: "/v1/me", test: "yes"}},
		{"a body is JSON by default", "", Request{Method: "POST", Path: "/v1/carts", Body: []byte(`{"a":1}`)},
			received{method: "POST", uri: "/v1/carts", contentType: "application/json", contentLength: "7", body: `{"a":1}`}},
		{"a given Content-Type wins", "", Request{Method: "PUT", Path: "/x", Header: []Header{{"content-type", "text/plain"}}, Body: []byte("hi")},
			received{method: "PUT", uri: "/x", contentType: "text/plain", contentLength: "2", body: "hi"}},
		{"an empty POST says so", "", Request{Method: "POST", Path: "/v1/auth/logout"},
			received{method: "POST", uri: "/v1/auth/logout", contentLength: "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testClient(t, mustTarget(t, srv.URL+tt.base))
			if _, err := c.do(&tt.req, time.Now().Add(5*time.Second)); err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.host, want.userAgent, want.accept = host, userAgent, "application/json"
			if r := <-got; r != want {
				t.Errorf("server received\n%+v\nwant\n%+v", r, want)
			}
		})
	}
}

func TestClientTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(srv.Close)
	c := testClient(t, mustTarget(t, srv.URL))
	start := time.Now()
	_, err := c.do(&Request{Path: "/"}, start.Add(100*time.Millisecond))
	if errorKind(err) != KindTimeout {
		t.Fatalf("err = %v (kind %q), want a timeout", err, errorKind(err))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the timeout took %v", took)
	}
}

func TestClientTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s over %s", r.URL.Path, r.Proto)
	}))
	t.Cleanup(srv.Close)

	t.Run("trusted", func(t *testing.T) {
		tg := mustTarget(t, srv.URL)
		tg.tls.RootCAs = x509.NewCertPool()
		tg.tls.RootCAs.AddCert(srv.Certificate())
		c := testClient(t, tg)
		for i := range 2 {
			resp, err := c.do(&Request{Path: "/secure"}, time.Now().Add(5*time.Second))
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if resp.Status != 200 || string(resp.Body) != "/secure over HTTP/1.1" {
				t.Fatalf("request %d: %d %q", i, resp.Status, resp.Body)
			}
		}
	})
	t.Run("a failed handshake is a connect error", func(t *testing.T) {
		c := testClient(t, mustTarget(t, srv.URL)) // the test certificate is not trusted
		_, err := c.do(&Request{Path: "/secure"}, time.Now().Add(5*time.Second))
		if errorKind(err) != KindConnect {
			t.Fatalf("err = %v (kind %q), want %q", err, errorKind(err), KindConnect)
		}
	})
}

// TestClientRawResponses covers what the standard library's server never
// sends but a proxy or another server may.
func TestClientRawResponses(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		response string // what the server writes to each request
		close    bool   // the server closes the connection after writing
		status   int
		body     string
		kind     string // the error kind, when the request fails
	}{
		{name: "HTTP/1.0 body ends with the connection",
			response: "HTTP/1.0 200 OK\r\n\r\nuntil the end", close: true, status: 200, body: "until the end"},
		{name: "chunk extensions and trailers",
			response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
			status:   200, body: "hello world"},
		{name: "lower-case header names",
			response: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", status: 200, body: "ok"},
		{name: "kept-alive connection closed by the server is retried",
			response: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close: true, status: 200, body: "ok"},
		{name: "kept-alive connection closed by the server fails a POST",
			method: "POST", response: "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", close: true, status: 201, kind: KindClosed},
		{name: "truncated body",
			response: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", close: true, kind: KindClosed},
		{name: "truncated chunk",
			response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nshort", close: true, kind: KindClosed},
		{name: "truncated header",
			response: "HTTP/1.1 200 OK\r\nContent-Le", close: true, kind: KindClosed},
		{name: "not HTTP",
			response: "SSH-2.0-OpenSSH\r\n\r\n", kind: KindProtocol},
		{name: "bad content length",
			response: "HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", kind: KindProtocol},
		{name: "switching protocols unasked",
			response: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", close: true, kind: KindProtocol},
		{name: "no answer at all",
			response: "", close: true, kind: KindClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := rawServer(t, tt.response, tt.close)
			c := testClient(t, mustTarget(t, "http://"+addr))
			for i := range 2 {
				resp, err := c.do(&Request{Method: tt.method, Path: "/"}, time.Now().Add(5*time.Second))
				if tt.kind != "" && (i == 1 || tt.status == 0) {
					if errorKind(err) != tt.kind {
						t.Fatalf("request %d: err = %v (kind %q), want kind %q", i, err, errorKind(err), tt.kind)
					}
					continue
				}
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if resp.Status != tt.status || string(resp.Body) != tt.body {
					t.Fatalf("request %d: %d %q, want %d %q", i, resp.Status, resp.Body, tt.status, tt.body)
				}
			}
		})
	}
}

// TestDriveKeepsConnectionsAlive checks that the workers reuse their
// connections rather than open one per request.
func TestDriveKeepsConnectionsAlive(t *testing.T) {
	var opened atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	opts := testOptions(t, srv.URL)
	res, err := Drive(t.Context(), opts, "test/keep-alive", func(int, *rand.Rand, Response) Request { return Request{Path: "/"} })
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors > 0 || res.Requests < 10*int64(opts.Concurrency) {
		t.Fatalf("%d requests, %d errors: %v", res.Requests, res.Errors, res.ErrorKinds)
	}
	if n := opened.Load(); n > int64(opts.Concurrency) {
		t.Errorf("%d connections for %d workers and %d requests", n, opts.Concurrency, res.Requests)
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		raw        string
		addr, base string
		tls        bool
		bad        bool
	}{
		{raw: "http://127.0.0.1:8080", addr: "127.0.0.1:8080", base: "http://127.0.0.1:8080"},
		{raw: "http://localhost", addr: "localhost:80", base: "http://localhost"},
		{raw: "https://shop.example/api/", addr: "shop.example:443", base: "https://shop.example/api", tls: true},
		{raw: "http://[::1]:9000", addr: "[::1]:9000", base: "http://[::1]:9000"},
		{raw: "ftp://x", bad: true},
		{raw: "127.0.0.1:8080", bad: true},
		{raw: "http://", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := parseTarget(tt.raw)
			if tt.bad {
				if err == nil {
					t.Fatalf("parseTarget(%q) = %+v, want an error", tt.raw, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.addr != tt.addr || got.base != tt.base || (got.tls != nil) != tt.tls {
				t.Errorf("parseTarget(%q) = %+v", tt.raw, got)
			}
		})
	}
}

func mustTarget(t *testing.T, raw string) *target {
	t.Helper()
	tg, err := parseTarget(raw)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// testClient returns a client of a transport of its own, closed when the
// test ends.
func testClient(t *testing.T, tg *target) *client {
	t.Helper()
	tr := newTransport(t.Context(), tg, 1, 5*time.Second)
	t.Cleanup(tr.close)
	return newClient(tr)
}

// rawServer answers every request with response and, if closeAfter, then
// closes the connection without saying so.
func rawServer(t *testing.T, response string, closeAfter bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveRaw(conn, []byte(response), closeAfter)
		}
	}()
	return ln.Addr().String()
}

func serveRaw(conn net.Conn, response []byte, closeAfter bool) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(bytes.TrimSpace(line)) == 0 {
				break
			}
		}
		if _, err := conn.Write(response); err != nil || closeAfter {
			return
		}
	}
}
