package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/problem"
	"github.com/mercato/mercato/platform/server"
)

// wait bounds every wait for something that should happen; it is generous
// because tests must not depend on the machine's speed.
const wait = 30 * time.Second

// options are the settings of a server on a fresh loopback port.
func options(t *testing.T) server.Options {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	httpCfg := config.Defaults().HTTP
	httpCfg.ShutdownTimeout = wait
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return server.Options{
		Name:     "test",
		Listener: ln,
		HTTP:     httpCfg,
		Registry: prometheus.NewRegistry(),
		Tracer:   tp.Tracer("http"),
		Log:      platformtest.Logger(t),
	}
}

// running is a server whose Run is in progress.
type running struct {
	srv    *server.Server
	addr   string
	url    string
	client *http.Client
	cancel context.CancelFunc
	done   chan error
}

// run starts srv.Run and waits until it listens; the server is stopped when
// the test ends if the test did not stop it.
func run(t *testing.T, srv *server.Server) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, cancel: cancel, done: make(chan error, 1), client: &http.Client{Transport: &http.Transport{}}}
	go func() { r.done <- srv.Run(ctx) }()
	actx, acancel := context.WithTimeout(context.Background(), wait)
	defer acancel()
	addr, err := srv.Addr(actx)
	if err != nil {
		cancel()
		t.Fatalf("server did not listen: %v (Run: %v)", err, <-r.done)
	}
	r.addr = addr.String()
	r.url = "http://" + r.addr
	t.Cleanup(func() {
		cancel()
		r.client.CloseIdleConnections()
		select {
		case <-r.done:
		case <-time.After(wait):
			t.Errorf("server did not stop within %v", wait)
		}
	})
	return r
}

// stop cancels Run's context and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.result(t)
}

// result waits for Run to return.
func (r *running) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // let the cleanup see it too
		return err
	case <-time.After(wait):
		t.Fatalf("Run did not return within %v", wait)
		return nil
	}
}

// refusesConnections reports whether a new connection to addr is refused.
func refusesConnections(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// send makes a request with client and returns the response with its body
// read.
func send(t *testing.T, client *http.Client, method, url string, body io.Reader, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, url, err)
	}
	return resp, string(b)
}

// wantProblem checks that resp is a problem+json response of status and
// returns the problem.
func wantProblem(t *testing.T, resp *http.Response, body string, status int) problem.Problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Errorf("Content-Type = %q, want %q", ct, problem.ContentType)
	}
	var p problem.Problem
	if err := json.NewDecoder(strings.NewReader(body)).Decode(&p); err != nil {
		t.Fatalf("body is not a problem: %v\n%s", err, body)
	}
	if p.Status != status {
		t.Errorf("problem status = %d, want %d", p.Status, status)
	}
	return p
}

// h2cClient speaks HTTP/2 without TLS (prior knowledge), as Connect and
// gRPC clients of Mercato's services do.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// waitFor waits until ch is closed, failing the test after wait.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("timed out after %v waiting for %s", wait, what)
	}
}

// receive returns the next value from ch, failing the test after wait.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out after %v waiting for a result", wait)
		var zero T
		return zero
	}
}
