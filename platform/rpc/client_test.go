package rpc_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/rpc"
	pingv1 "github.com/mercato/mercato/proto/gen/mercato/ping/v1"
)

func TestRoundTripOverH2CPropagatesTrace(t *testing.T) {
	tests := []struct {
		name     string
		opts     []connect.ClientOption
		protocol string
	}{
		{"connect", nil, connect.ProtocolConnect},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}, connect.ProtocolGRPC},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}, connect.ProtocolGRPCWeb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, testRPC(), tt.opts...)
			ctx, caller := f.clientTP.Tracer("test").Start(ctxFor(t), "caller")
			resp, err := f.ping.Ping(ctx, connect.NewRequest(&pingv1.PingRequest{Text: "hello"}))
			caller.End()
			if err != nil {
				t.Fatalf("Ping: %v", err)
			}
			if got := resp.Msg.GetText(); got != "hello" {
				t.Errorf("text = %q, want hello", got)
			}
			if got := f.srv.lastProto.Load(); got != 2 {
				t.Errorf("request went over HTTP/%d, want HTTP/2 (h2c)", got)
			}
			if got := f.srv.lastProtocol.Load(); got != tt.protocol {
				t.Errorf("server saw protocol %v, want %s", got, tt.protocol)
			}

			clientSpan := findSpan(t, f.clientSpan.Ended, "mercato.ping.v1.PingService/Ping", trace.SpanKindClient)
			if clientSpan.Parent().SpanID() != caller.SpanContext().SpanID() {
				t.Errorf("client span's parent = %s, want the caller's span %s", clientSpan.Parent().SpanID(), caller.SpanContext().SpanID())
			}
			// platform/server's HTTP span continues the client span, and the
			// RPC span is its child: one trace from caller to handler.
			var serverSpan sdktrace.ReadOnlySpan
			platformtest.Eventually(t, "the server spans end", func() bool {
				return len(f.serverSpan.Ended()) >= 2
			})
			serverSpan = findSpan(t, f.serverSpan.Ended, "mercato.ping.v1.PingService/Ping", trace.SpanKindServer)
			if got, want := serverSpan.SpanContext().TraceID(), caller.SpanContext().TraceID(); got != want {
				t.Errorf("server span trace id = %s, want the caller's %s", got, want)
			}
			httpSpan := findSpan(t, f.serverSpan.Ended, "POST /mercato.ping.v1.PingService/", trace.SpanKindServer)
			if httpSpan.Parent().SpanID() != clientSpan.SpanContext().SpanID() || !httpSpan.Parent().IsRemote() {
				t.Errorf("server HTTP span's parent = %s, want the remote client span %s", httpSpan.Parent().SpanID(), clientSpan.SpanContext().SpanID())
			}
		})
	}
}

// findSpan returns the one ended span with name and kind.
func findSpan(t *testing.T, ended func() []sdktrace.ReadOnlySpan, name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	var names []string
	for _, s := range ended() {
		if s.Name() == name && s.SpanKind() == kind {
			return s
		}
		names = append(names, s.Name()+"/"+s.SpanKind().String())
	}
	t.Fatalf("no %s span named %q among %v", kind, name, names)
	return nil
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name        string
		method      string // Ping is idempotent, Write is not
		behave      func(context.Context, string, int64) error
		wantCode    connect.Code // 0: success
		wantCalls   int64
		wantRetries float64
	}{
		{"idempotent call recovers after transient unavailable", "Ping", failFirst(2, connect.CodeUnavailable), 0, 3, 2},
		{"idempotent call recovers after aborted", "Ping", failFirst(1, connect.CodeAborted), 0, 2, 1},
		{"idempotent call gives up after the configured retries", "Ping", failFirst(100, connect.CodeUnavailable), connect.CodeUnavailable, 3, 2},
		{"not found is an answer, not retried", "Ping", failFirst(1, connect.CodeNotFound), connect.CodeNotFound, 1, 0},
		{"invalid argument is not retried", "Ping", failFirst(1, connect.CodeInvalidArgument), connect.CodeInvalidArgument, 1, 0},
		{"resource exhausted is not retried", "Ping", failFirst(1, connect.CodeResourceExhausted), connect.CodeResourceExhausted, 1, 0},
		{"internal is not retried", "Ping", failFirst(1, connect.CodeInternal), connect.CodeInternal, 1, 0},
		{"non-idempotent call is never retried after unavailable", "Write", failFirst(1, connect.CodeUnavailable), connect.CodeUnavailable, 1, 0},
		{"non-idempotent call is never retried after aborted", "Write", failFirst(1, connect.CodeAborted), connect.CodeAborted, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, testRPC())
			f.srv.setBehaviour(tt.behave)
			call, calls, proc := f.pingCall, &f.srv.pings, pingProcedure
			if tt.method == "Write" {
				call, calls, proc = f.writeCall, &f.srv.writes, writeProcedure
			}
			err := call(ctxFor(t))
			if tt.wantCode == 0 && err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if tt.wantCode != 0 && connect.CodeOf(err) != tt.wantCode {
				t.Fatalf("error = %v, want code %s", err, tt.wantCode)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("server invoked %d times, want %d", got, tt.wantCalls)
			}
			retries, _ := metric(t, f.clientReg, "rpc_client_retries_total", map[string]string{"dependency": "ping", "procedure": proc})
			if retries != tt.wantRetries {
				t.Errorf("rpc_client_retries_total = %v, want %v", retries, tt.wantRetries)
			}
		})
	}
}

func TestRetryAfterDeadline(t *testing.T) {
	// hangFirst makes the first n calls wait until their deadline.
	hangFirst := func(n int64) func(context.Context, string, int64) error {
		return func(ctx context.Context, _ string, i int64) error {
			if i <= n {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}
	}
	t.Run("an attempt that used up the client's timeout is retried while the caller has time", func(t *testing.T) {
		rc := testRPC()
		rc.Timeout = 200 * time.Millisecond
		f := newFixture(t, rc)
		f.srv.setBehaviour(hangFirst(1))
		if err := f.pingCall(ctxFor(t)); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if got := f.srv.pings.Load(); got != 2 {
			t.Errorf("server invoked %d times, want 2", got)
		}
	})
	t.Run("the caller's own deadline is not retried", func(t *testing.T) {
		f := newFixture(t, testRPC())
		f.srv.setBehaviour(hangFirst(100))
		ctx, cancel := context.WithTimeout(ctxFor(t), 300*time.Millisecond)
		defer cancel()
		err := f.pingCall(ctx)
		if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Fatalf("error = %v, want deadline_exceeded", err)
		}
		if got := f.srv.pings.Load(); got != 1 {
			t.Errorf("server invoked %d times, want 1", got)
		}
	})
	t.Run("a non-idempotent call that timed out is not retried", func(t *testing.T) {
		rc := testRPC()
		rc.Timeout = 200 * time.Millisecond
		f := newFixture(t, rc)
		f.srv.setBehaviour(hangFirst(1))
		if err := f.writeCall(ctxFor(t)); connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Fatalf("error = %v, want deadline_exceeded", err)
		}
		if got := f.srv.writes.Load(); got != 1 {
			t.Errorf("server invoked %d times, want 1", got)
		}
	})
}

func TestDeadlineIsAlwaysSet(t *testing.T) {
	tests := []struct {
		name           string
		timeout        time.Duration
		callerDeadline time.Duration // 0: none
		wantAtMost     time.Duration
	}{
		{"caller has none: the configured timeout", 10 * time.Second, 0, 10 * time.Second},
		{"caller's is later: the configured timeout", 10 * time.Second, time.Hour, 10 * time.Second},
		{"caller's is earlier: the caller's", time.Hour, 10 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := testRPC()
			rc.Timeout = tt.timeout
			f := newFixture(t, rc)
			ctx := ctxFor(t)
			if tt.callerDeadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(context.Background(), tt.callerDeadline)
				defer cancel()
			} else {
				// ctxFor has a deadline; this case needs a caller without one.
				ctx = context.WithoutCancel(ctx)
			}
			if err := f.pingCall(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			got := time.Duration(f.srv.lastDeadline.Load())
			if got < 0 {
				t.Fatal("the server saw no deadline")
			}
			// The lower bound only guards against a deadline far shorter
			// than asked; it leaves seconds for a slow machine.
			if got > tt.wantAtMost || got < tt.wantAtMost/2 {
				t.Errorf("server's remaining time = %v, want at most %v and more than %v", got, tt.wantAtMost, tt.wantAtMost/2)
			}
		})
	}
}

func TestCircuitBreaker(t *testing.T) {
	failing := func(code connect.Code) func(context.Context, string, int64) error {
		return func(context.Context, string, int64) error {
			return connect.NewError(code, errors.New("injected failure"))
		}
	}

	t.Run("opens when the failure ratio over the window is reached", func(t *testing.T) {
		tests := []struct {
			ratio      float64
			window     int
			opensAfter int64
		}{
			{0.5, 4, 2},
			{0.3, 10, 3},
			{1, 3, 3},
			{0.5, 1, 1},
		}
		for _, tt := range tests {
			t.Run("", func(t *testing.T) {
				rc := testRPC()
				rc.BreakerFailureRatio, rc.BreakerWindow = tt.ratio, tt.window
				f := newFixture(t, rc)
				f.srv.setBehaviour(failing(connect.CodeInternal))
				ctx := ctxFor(t)
				for i := int64(1); i <= tt.opensAfter; i++ {
					if got := f.breakerState(t); got != 0 {
						t.Fatalf("ratio %v window %d: breaker state %v after %d failures, want closed until %d", tt.ratio, tt.window, got, i-1, tt.opensAfter)
					}
					if err := f.writeCall(ctx); connect.CodeOf(err) != connect.CodeInternal {
						t.Fatalf("call %d: error = %v, want the server's internal error", i, err)
					}
				}
				if got := f.breakerState(t); got != 2 {
					t.Fatalf("ratio %v window %d: breaker state %v after %d failures, want open (2)", tt.ratio, tt.window, got, tt.opensAfter)
				}
				err := f.writeCall(ctx)
				if connect.CodeOf(err) != connect.CodeUnavailable || !errors.Is(err, rpc.ErrBreakerOpen) {
					t.Fatalf("error = %v, want unavailable wrapping ErrBreakerOpen", err)
				}
				if got := f.srv.writes.Load(); got != tt.opensAfter {
					t.Errorf("server invoked %d times, want %d: an open breaker must not reach it", got, tt.opensAfter)
				}
				if got, _ := metric(t, f.clientReg, "rpc_client_rejected_total", map[string]string{"dependency": "ping", "reason": "breaker_open"}); got != 1 {
					t.Errorf("rpc_client_rejected_total{reason=breaker_open} = %v, want 1", got)
				}
			})
		}
	})

	// openBreaker fails calls until the fixture's breaker (window 4, ratio
	// 0.5, delay 1h) is open, and checks that it fails fast.
	openBreaker := func(t *testing.T) *fixture {
		t.Helper()
		rc := testRPC()
		rc.BreakerFailureRatio, rc.BreakerWindow = 0.5, 4
		f := newFixture(t, rc)
		f.srv.setBehaviour(failing(connect.CodeUnavailable))
		for range 2 {
			_ = f.writeCall(ctxFor(t))
		}
		if got := f.breakerState(t); got != 2 {
			t.Fatalf("breaker state = %v after 2 of 4 calls failed, want open (2)", got)
		}
		for range 3 {
			if err := f.writeCall(ctxFor(t)); !errors.Is(err, rpc.ErrBreakerOpen) {
				t.Fatalf("error = %v, want ErrBreakerOpen", err)
			}
		}
		if got := f.srv.writes.Load(); got != 2 {
			t.Fatalf("server invoked %d times, want 2", got)
		}
		return f
	}

	t.Run("closes after the delay and a successful trial", func(t *testing.T) {
		f := openBreaker(t)
		f.srv.setBehaviour(nil)
		// A live change of the delay applies to the open breaker as well.
		rc := f.store.Get().RPC
		rc.BreakerDelay = 20 * time.Millisecond
		setRPC(t, f.store, rc)
		platformtest.Eventually(t, "a trial call succeeds", func() bool {
			err := f.writeCall(ctxFor(t))
			if err != nil && !errors.Is(err, rpc.ErrBreakerOpen) {
				t.Fatalf("unexpected error: %v", err)
			}
			return err == nil
		})
		if got := f.srv.writes.Load(); got != 3 {
			t.Errorf("server invoked %d times, want 3: only the trial may reach it", got)
		}
		if got := f.breakerState(t); got != 0 {
			t.Errorf("breaker state = %v after a successful trial, want closed (0)", got)
		}
		if err := f.writeCall(ctxFor(t)); err != nil {
			t.Errorf("call after closing: %v", err)
		}
	})

	t.Run("a failed trial opens it again", func(t *testing.T) {
		f := openBreaker(t)
		rc := f.store.Get().RPC
		rc.BreakerDelay = 20 * time.Millisecond
		setRPC(t, f.store, rc)
		platformtest.Eventually(t, "a trial call reaches the server", func() bool {
			_ = f.writeCall(ctxFor(t))
			return f.srv.writes.Load() == 3
		})
		if got := f.breakerState(t); got != 2 {
			t.Errorf("breaker state = %v after a failed trial, want open (2)", got)
		}
	})

	t.Run("client errors never open it", func(t *testing.T) {
		rc := testRPC()
		rc.BreakerFailureRatio, rc.BreakerWindow = 0.5, 4
		f := newFixture(t, rc)
		codes := []connect.Code{connect.CodeNotFound, connect.CodeInvalidArgument, connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodePermissionDenied, connect.CodeUnauthenticated}
		for _, code := range codes {
			f.srv.setBehaviour(failing(code))
			for range 4 {
				if err := f.writeCall(ctxFor(t)); connect.CodeOf(err) != code {
					t.Fatalf("error = %v, want %s from the server", err, code)
				}
			}
		}
		if got := f.breakerState(t); got != 0 {
			t.Errorf("breaker state = %v, want closed (0)", got)
		}
		if got, want := f.srv.writes.Load(), int64(4*len(codes)); got != want {
			t.Errorf("server invoked %d times, want %d", got, want)
		}
	})
}

func TestBulkhead(t *testing.T) {
	rc := testRPC()
	rc.MaxConcurrent = 2
	f := newFixture(t, rc)
	release := make(chan struct{})
	f.srv.setBehaviour(func(ctx context.Context, method string, _ int64) error {
		if method != "Write" {
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	hold := func() {
		wg.Go(func() { errs <- f.writeCall(ctxFor(t)) })
	}
	defer func() {
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("held call: %v", err)
			}
		}
	}()

	hold()
	hold()
	platformtest.Eventually(t, "two calls are in the server", func() bool { return f.srv.inflight.Load() == 2 })

	// Ping is idempotent: a full bulkhead must still fail fast, not retry.
	err := f.pingCall(ctxFor(t))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !errors.Is(err, rpc.ErrBulkheadFull) {
		t.Fatalf("error = %v, want resource_exhausted wrapping ErrBulkheadFull", err)
	}
	if got := f.srv.pings.Load(); got != 0 {
		t.Errorf("server saw %d pings, want 0", got)
	}
	if got, _ := metric(t, f.clientReg, "rpc_client_rejected_total", map[string]string{"dependency": "ping", "reason": "bulkhead_full"}); got != 1 {
		t.Errorf("rpc_client_rejected_total{reason=bulkhead_full} = %v, want 1", got)
	}
	if got := f.breakerState(t); got != 0 {
		t.Errorf("breaker state = %v, want closed: a full bulkhead says nothing about the dependency", got)
	}

	// A live change of rpc.max_concurrent makes room without a new client.
	rc.MaxConcurrent = 3
	setRPC(t, f.store, rc)
	hold()
	platformtest.Eventually(t, "a third call is in the server", func() bool { return f.srv.inflight.Load() == 3 })
}

func TestLiveSettings(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		rc := testRPC()
		rc.Timeout, rc.Retries = 50*time.Millisecond, 0
		f := newFixture(t, rc)
		// Each call takes 300ms at least: longer than the first timeout,
		// far shorter than the second.
		f.srv.setBehaviour(func(ctx context.Context, _ string, _ int64) error {
			select {
			case <-time.After(300 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err := f.pingCall(ctxFor(t)); connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Fatalf("with a 50ms timeout: error = %v, want deadline_exceeded", err)
		}
		rc.Timeout = 30 * time.Second
		setRPC(t, f.store, rc)
		if err := f.pingCall(ctxFor(t)); err != nil {
			t.Fatalf("with a 30s timeout: %v", err)
		}
	})
	t.Run("retries", func(t *testing.T) {
		f := newFixture(t, testRPC())
		f.srv.setBehaviour(failFirst(1, connect.CodeUnavailable))
		rc := testRPC()
		rc.Retries = 0
		setRPC(t, f.store, rc)
		if err := f.pingCall(ctxFor(t)); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("with 0 retries: error = %v, want unavailable", err)
		}
		rc.Retries = 2
		setRPC(t, f.store, rc)
		f.srv.pings.Store(0)
		if err := f.pingCall(ctxFor(t)); err != nil {
			t.Fatalf("with 2 retries: %v", err)
		}
		if got := f.srv.pings.Load(); got != 2 {
			t.Errorf("server invoked %d times, want 2", got)
		}
	})
	t.Run("breaker window", func(t *testing.T) {
		rc := testRPC()
		rc.BreakerFailureRatio, rc.BreakerWindow = 0.5, 20
		f := newFixture(t, rc)
		f.srv.setBehaviour(failFirst(1000, connect.CodeInternal))
		if err := f.writeCall(ctxFor(t)); connect.CodeOf(err) != connect.CodeInternal {
			t.Fatalf("error = %v, want internal", err)
		}
		if got := f.breakerState(t); got != 0 {
			t.Fatalf("breaker state = %v after 1 of 20, want closed", got)
		}
		rc.BreakerWindow = 1
		setRPC(t, f.store, rc)
		_ = f.writeCall(ctxFor(t))
		if got := f.breakerState(t); got != 2 {
			t.Fatalf("breaker state = %v after a failure with a window of 1, want open", got)
		}
	})
}

// setRPC applies rc as a live configuration change.
func setRPC(t *testing.T, store *config.Store, rc config.RPCConfig) {
	t.Helper()
	cfg := *store.Get()
	cfg.RPC = rc
	store.Set(cfg)
	if store.Get().RPC != rc {
		t.Fatalf("store did not take the change: %+v", store.Get().RPC)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, testRPC())
	f.srv.setBehaviour(func(_ context.Context, method string, _ int64) error {
		if method == "Write" {
			return connect.NewError(connect.CodeNotFound, errors.New("no such thing"))
		}
		return nil
	})
	_ = f.pingCall(ctxFor(t))
	_ = f.writeCall(ctxFor(t))

	client := `
# HELP rpc_client_requests_total RPCs made to other services, by dependency, procedure and final Connect code (after retries).
# TYPE rpc_client_requests_total counter
rpc_client_requests_total{code="not_found",dependency="ping",procedure="/mercato.ping.v1.PingService/Write"} 1
rpc_client_requests_total{code="ok",dependency="ping",procedure="/mercato.ping.v1.PingService/Ping"} 1
# HELP rpc_client_breaker_state Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.
# TYPE rpc_client_breaker_state gauge
rpc_client_breaker_state{dependency="ping"} 0
# HELP rpc_client_in_flight RPCs to a dependency in progress, to compare with its bulkhead (rpc.max_concurrent).
# TYPE rpc_client_in_flight gauge
rpc_client_in_flight{dependency="ping"} 0
`
	if err := testutil.GatherAndCompare(f.clientReg, strings.NewReader(client), "rpc_client_requests_total", "rpc_client_breaker_state", "rpc_client_in_flight"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(f.clientReg, "rpc_client_duration_seconds"); err != nil || n != 2 {
		t.Errorf("rpc_client_duration_seconds has %d series (%v), want 2", n, err)
	}

	server := `
# HELP rpc_server_requests_total RPCs served, by procedure and Connect code.
# TYPE rpc_server_requests_total counter
rpc_server_requests_total{code="not_found",procedure="/mercato.ping.v1.PingService/Write"} 1
rpc_server_requests_total{code="ok",procedure="/mercato.ping.v1.PingService/Ping"} 1
`
	// The server's spans and metrics are recorded after the response is
	// sent, so wait for them rather than assume.
	platformtest.Eventually(t, "the server metrics are recorded", func() bool {
		return testutil.GatherAndCompare(f.serverReg, strings.NewReader(server), "rpc_server_requests_total") == nil
	})
	if n, err := testutil.GatherAndCount(f.serverReg, "rpc_server_duration_seconds"); err != nil || n != 2 {
		t.Errorf("rpc_server_duration_seconds has %d series (%v), want 2", n, err)
	}

	t.Run("clients and handlers share one registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		log := platformtest.Logger(t)
		for _, dep := range []string{"catalog", "inventory", "catalog"} {
			c, err := rpc.NewClient(dep, "http://127.0.0.1:1", f.store, f.clientTP, reg, log)
			if err != nil {
				t.Fatalf("NewClient(%s): %v", dep, err)
			}
			c.Close()
		}
		for range 2 {
			if _, err := rpc.HandlerOptions(f.clientTP, reg, log); err != nil {
				t.Fatalf("HandlerOptions: %v", err)
			}
		}
		if n, err := testutil.GatherAndCount(reg, "rpc_client_breaker_state"); err != nil || n != 2 {
			t.Errorf("rpc_client_breaker_state series = %d (%v), want one per dependency (2)", n, err)
		}
	})
}

func TestNewClientRejectsBadArguments(t *testing.T) {
	tests := []struct {
		name, dep, url string
	}{
		{"no dependency name", "", "http://catalog:8080"},
		{"not a URL", "catalog", "::"},
		{"no scheme", "catalog", "catalog:8080"},
		{"other scheme", "catalog", "grpc://catalog:8080"},
		{"no host", "catalog", "http://"},
	}
	store := config.Static(config.Defaults())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := sdktrace.NewTracerProvider()
			if _, err := rpc.NewClient(tt.dep, tt.url, store, tp, prometheus.NewRegistry(), platformtest.Logger(t)); err == nil {
				t.Errorf("NewClient(%q, %q) succeeded, want an error", tt.dep, tt.url)
			}
		})
	}
}
