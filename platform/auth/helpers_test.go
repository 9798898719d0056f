package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/mercato/mercato/platform/auth/authtest"
	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/rpc"
	"github.com/mercato/mercato/proto/gen/mercato/identity/v1/identityv1connect"
)

// fixture is a running verifier in front of a stand-in identity.
type fixture struct {
	issuer *authtest.Issuer
	v      *Verifier
	reg    *prometheus.Registry
	// skew moves the verifier's clock.
	skew *atomic.Int64
}

// testConfig is the default configuration pointed at issuer, with a short
// breaker delay so that tests of outages do not wait for the default.
func testConfig(issuer *authtest.Issuer) config.Config {
	cfg := config.Defaults()
	issuer.Config(&cfg)
	cfg.RPC.BreakerDelay = 100 * time.Millisecond
	cfg.RPC.Timeout = time.Second
	return cfg
}

// startVerifier makes a verifier for cfg as platform/service does and runs
// it until the test ends. It does not wait for it to load.
func startVerifier(t testing.TB, cfg config.Config) (*Verifier, *prometheus.Registry, *atomic.Int64) {
	t.Helper()
	store := config.Static(cfg)
	reg := prometheus.NewRegistry()
	log := platformtest.Logger(t)
	client, err := rpc.NewClient("identity", cfg.Service("identity").URL, store, noop.NewTracerProvider(), reg, log)
	if err != nil {
		t.Fatal(err)
	}
	sessions := identityv1connect.NewSessionServiceClient(client.HTTPClient(), client.BaseURL(), client.Options()...)
	v, err := NewVerifier(store, client.HTTPClient(), sessions, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	skew := new(atomic.Int64)
	v.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = v.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		client.Close()
	})
	return v, reg, skew
}

// newFixture starts an issuer and a loaded verifier; adjust changes the
// configuration first.
func newFixture(t testing.TB, adjust func(*config.Config)) *fixture {
	t.Helper()
	issuer := authtest.New(t)
	cfg := testConfig(issuer)
	if adjust != nil {
		adjust(&cfg)
	}
	v, reg, skew := startVerifier(t, cfg)
	waitLoaded(t, v)
	return &fixture{issuer: issuer, v: v, reg: reg, skew: skew}
}

// waitLoaded waits until v has loaded identity's keys and revocations.
func waitLoaded(t testing.TB, v *Verifier) {
	t.Helper()
	platformtest.Eventually(t, "the verifier loads keys and revocations", v.loaded)
}

// verify verifies token with a context that ends with the test.
func (f *fixture) verify(t testing.TB, token string) (*Identity, error) {
	t.Helper()
	return f.v.Verify(t.Context(), token)
}

// mustVerify verifies a token that must be accepted.
func (f *fixture) mustVerify(t testing.TB, token string) *Identity {
	t.Helper()
	id, err := f.verify(t, token)
	if err != nil {
		t.Fatalf("Verify refused a valid token: %v", err)
	}
	return id
}

// count is the value of the verification counter for result.
func (f *fixture) count(result string) float64 {
	return testutil.ToFloat64(f.v.m.verifications.WithLabelValues(result))
}

// serve runs one request through h and returns the recorder.
func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
