package rpc_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/rpc"
	"github.com/mercato/mercato/platform/server"
	pingv1 "github.com/mercato/mercato/proto/gen/mercato/ping/v1"
	"github.com/mercato/mercato/proto/gen/mercato/ping/v1/pingv1connect"
)

// pingServer is the dependency the tests call. Each method counts its
// invocations and asks behave what to do with the nth one; a nil behave
// answers successfully.
type pingServer struct {
	pings  atomic.Int64
	writes atomic.Int64
	behave atomic.Pointer[func(ctx context.Context, method string, n int64) error]
	// inflight counts handlers running now.
	inflight atomic.Int64
	// lastProto is the HTTP major version and lastProtocol the RPC protocol
	// of the latest request.
	lastProto    atomic.Int64
	lastProtocol atomic.Value
	// lastDeadline is how far off the handler's deadline was when the latest
	// call arrived, or -1 when it had none.
	lastDeadline atomic.Int64
}

func (s *pingServer) setBehaviour(fn func(ctx context.Context, method string, n int64) error) {
	if fn == nil {
		s.behave.Store(nil)
		return
	}
	s.behave.Store(&fn)
}

func (s *pingServer) run(ctx context.Context, method string, n int64, peer connect.Peer) error {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	s.lastProtocol.Store(peer.Protocol)
	if dl, ok := ctx.Deadline(); ok {
		s.lastDeadline.Store(int64(time.Until(dl)))
	} else {
		s.lastDeadline.Store(-1)
	}
	if fn := s.behave.Load(); fn != nil {
		return (*fn)(ctx, method, n)
	}
	return nil
}

func (s *pingServer) Ping(ctx context.Context, req *connect.Request[pingv1.PingRequest]) (*connect.Response[pingv1.PingResponse], error) {
	if err := s.run(ctx, "Ping", s.pings.Add(1), req.Peer()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pingv1.PingResponse{Text: req.Msg.GetText()}), nil
}

func (s *pingServer) Write(ctx context.Context, req *connect.Request[pingv1.WriteRequest]) (*connect.Response[pingv1.WriteResponse], error) {
	n := s.writes.Add(1)
	if err := s.run(ctx, "Write", n, req.Peer()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&pingv1.WriteResponse{Count: n}), nil
}

// failFirst fails the first n calls of every method with code.
func failFirst(n int64, code connect.Code) func(context.Context, string, int64) error {
	return func(_ context.Context, _ string, i int64) error {
		if i <= n {
			return connect.NewError(code, errors.New("injected failure"))
		}
		return nil
	}
}

// fixture is a ping server behind platform/server and a client of it.
type fixture struct {
	srv        *pingServer
	store      *config.Store
	client     *rpc.Client
	ping       pingv1connect.PingServiceClient
	clientReg  *prometheus.Registry
	serverReg  *prometheus.Registry
	clientSpan *tracetest.SpanRecorder
	serverSpan *tracetest.SpanRecorder
	clientTP   *sdktrace.TracerProvider
	baseURL    string
}

// testRPC returns settings that keep tests quick without relying on
// timing: long deadlines and breaker delays unless a test shortens them.
func testRPC() config.RPCConfig {
	return config.RPCConfig{
		Timeout:             30 * time.Second,
		Retries:             2,
		BreakerFailureRatio: 0.5,
		BreakerWindow:       20,
		BreakerDelay:        time.Hour,
		MaxConcurrent:       64,
	}
}

// newFixture serves a ping server over h2c with platform/server and returns
// a client of it, both torn down when the test ends.
func newFixture(t *testing.T, rc config.RPCConfig, clientOpts ...connect.ClientOption) *fixture {
	t.Helper()
	f := &fixture{
		srv:        &pingServer{},
		clientReg:  prometheus.NewRegistry(),
		serverReg:  prometheus.NewRegistry(),
		clientSpan: tracetest.NewSpanRecorder(),
		serverSpan: tracetest.NewSpanRecorder(),
	}
	log := platformtest.Logger(t)
	serverTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.serverSpan))
	f.clientTP = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.clientSpan))
	t.Cleanup(func() {
		_ = serverTP.Shutdown(context.Background())
		_ = f.clientTP.Shutdown(context.Background())
	})

	opts, err := rpc.HandlerOptions(serverTP, f.serverReg, log)
	if err != nil {
		t.Fatalf("HandlerOptions: %v", err)
	}
	path, h := pingv1connect.NewPingServiceHandler(f.srv, opts...)
	f.baseURL = serve(t, path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.srv.lastProto.Store(int64(r.ProtoMajor))
		h.ServeHTTP(w, r)
	}), f.serverReg, serverTP)

	cfg := config.Defaults()
	cfg.RPC = rc
	f.store = config.Static(cfg)
	f.client, err = rpc.NewClient("ping", f.baseURL, f.store, f.clientTP, f.clientReg, log)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(f.client.Close)
	f.ping = pingv1connect.NewPingServiceClient(f.client.HTTPClient(), f.client.BaseURL(), append(f.client.Options(), clientOpts...)...)
	return f
}

// serve runs h under path on a platform/server listening on loopback and
// returns its base URL.
func serve(t *testing.T, path string, h http.Handler, reg *prometheus.Registry, tp *sdktrace.TracerProvider) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	httpCfg := config.Defaults().HTTP
	httpCfg.ShutdownTimeout = 10 * time.Second
	srv := server.New(server.Options{
		Name:     "ping",
		Listener: ln,
		HTTP:     httpCfg,
		Registry: reg,
		Tracer:   tp.Tracer("http"),
		Log:      platformtest.Logger(t),
	})
	srv.Mux().Handle(path, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// ctxFor returns a context that ends with the test, bounded so a broken
// client cannot hang the run.
func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// metric returns the value of the series of name whose labels include want
// (a histogram's sample count), and whether it exists.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(want)
}

// breakerState reads rpc_client_breaker_state of the fixture's client.
func (f *fixture) breakerState(t *testing.T) float64 {
	t.Helper()
	v, ok := metric(t, f.clientReg, "rpc_client_breaker_state", map[string]string{"dependency": "ping"})
	if !ok {
		t.Fatal("rpc_client_breaker_state{dependency=\"ping\"} missing")
	}
	return v
}

// pingCall and writeCall are one call of each method with a bounded context.
func (f *fixture) pingCall(ctx context.Context) error {
	_, err := f.ping.Ping(ctx, connect.NewRequest(&pingv1.PingRequest{Text: "hi"}))
	return err
}

func (f *fixture) writeCall(ctx context.Context) error {
	_, err := f.ping.Write(ctx, connect.NewRequest(&pingv1.WriteRequest{Text: "hi"}))
	return err
}

const (
	pingProcedure  = pingv1connect.PingServicePingProcedure
	writeProcedure = pingv1connect.PingServiceWriteProcedure
)
