package service_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"testing/fstest"
	"time"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/service"
)

// wait bounds every wait for something that should happen; it is generous
// because tests must not depend on the machine's speed.
const wait = 30 * time.Second

// widgetMigrations is a service's own schema: one table.
var widgetMigrations = fstest.MapFS{
	"00001_widgets.sql": {Data: []byte(`-- +goose Up
CREATE TABLE widgets (id text PRIMARY KEY);

-- +goose Down
DROP TABLE widgets;
`)},
}

// running is a service whose Run is in progress.
type running struct {
	url    string
	client *http.Client
	cancel context.CancelFunc
	done   chan error
}

// start runs the named service with setup on a loopback port and waits until
// it answers; it is stopped when the test ends if the test did not stop it.
func start(t *testing.T, name string, store *config.Store, setup service.Setup) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), client: &http.Client{Transport: &http.Transport{}}}
	ready := make(chan string, 1)
	opts := service.Options{Listen: "127.0.0.1:0", Ready: func(addr string) { ready <- addr }}
	go func() { r.done <- service.Run(ctx, name, store, platformtest.Logger(t), setup, opts) }()
	select {
	case addr := <-ready:
		r.url = "http://" + addr
	case err := <-r.done:
		cancel()
		t.Fatalf("Run returned %v before listening", err)
	case <-time.After(wait):
		cancel()
		t.Fatalf("service did not listen within %v", wait)
	}
	t.Cleanup(func() {
		cancel()
		r.client.CloseIdleConnections()
		select {
		case <-r.done:
		case <-time.After(wait):
			t.Errorf("service did not stop within %v", wait)
		}
	})
	return r
}

// stop cancels Run's context and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(wait):
		t.Fatalf("Run did not return within %v of its context ending", wait)
		return nil
	}
}

// get fetches path and returns the status and body.
func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := r.client.Get(r.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// readiness is the body of /readyz, ready or not.
type readiness struct {
	Detail string            `json:"detail"`
	Checks map[string]string `json:"checks"`
}

// readyz fetches /readyz and decodes it.
func (r *running) readyz(t *testing.T) (int, readiness) {
	t.Helper()
	status, body := r.get(t, "/readyz")
	var rd readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil {
		t.Fatalf("decode /readyz %q: %v", body, err)
	}
	return status, rd
}

// ctxFor is a context bounded by wait that ends with the test.
func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}
