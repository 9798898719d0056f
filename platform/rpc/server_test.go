package rpc_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/rpc"
	pingv1 "github.com/mercato/mercato/proto/gen/mercato/ping/v1"
	"github.com/mercato/mercato/proto/gen/mercato/ping/v1/pingv1connect"
)

func TestHandlerRecoversPanics(t *testing.T) {
	protocols := []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			f := newFixture(t, testRPC(), p.opts...)
			f.srv.setBehaviour(func(context.Context, string, int64) error {
				panic("secret: card 4242")
			})
			err := f.writeCall(ctxFor(t))
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInternal {
				t.Fatalf("error = %v, want a Connect internal error", err)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "4242") {
				t.Errorf("error %q leaks the panic value", err)
			}
			// The server keeps serving after a panic.
			f.srv.setBehaviour(nil)
			if err := f.writeCall(ctxFor(t)); err != nil {
				t.Fatalf("call after the panic: %v", err)
			}
			platformtest.Eventually(t, "the panic is counted as internal", func() bool {
				v, _ := metric(t, f.serverReg, "rpc_server_requests_total", map[string]string{"procedure": writeProcedure, "code": "internal"})
				return v == 1
			})
		})
	}
}

func TestInvalidArgumentNamesTheField(t *testing.T) {
	protocols := []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			f := newFixture(t, testRPC(), p.opts...)
			f.srv.setBehaviour(func(context.Context, string, int64) error {
				return rpc.InvalidArgument("text", "must not be empty")
			})
			err := f.pingCall(ctxFor(t))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("error = %v, want invalid_argument", err)
			}
			v := rpc.FieldViolations(err)
			if len(v) != 1 || v[0].GetField() != "text" || v[0].GetDescription() != "must not be empty" {
				t.Errorf("FieldViolations = %v, want text: must not be empty", v)
			}
			if got := f.srv.pings.Load(); got != 1 {
				t.Errorf("server invoked %d times, want 1: a bad request is not retried", got)
			}
		})
	}
	t.Run("other errors have none", func(t *testing.T) {
		for _, err := range []error{nil, errors.New("plain"), connect.NewError(connect.CodeInvalidArgument, errors.New("no detail"))} {
			if v := rpc.FieldViolations(err); v != nil {
				t.Errorf("FieldViolations(%v) = %v, want nil", err, v)
			}
		}
	})
}

func TestHandlerContinuesTraceWithoutHTTPMiddleware(t *testing.T) {
	// platform/server starts an HTTP span before the RPC span; a handler
	// mounted elsewhere must still join the caller's trace rather than
	// start a new one.
	rec := tracetest.NewSpanRecorder()
	serverTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	clientTP := sdktrace.NewTracerProvider()
	log := platformtest.Logger(t)
	opts, err := rpc.HandlerOptions(serverTP, prometheus.NewRegistry(), log)
	if err != nil {
		t.Fatalf("HandlerOptions: %v", err)
	}
	srv := &pingServer{}
	path, h := pingv1connect.NewPingServiceHandler(srv, opts...)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)

	c, err := rpc.NewClient("ping", hs.URL, config.Static(config.Defaults()), clientTP, prometheus.NewRegistry(), log)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Close)
	ping := pingv1connect.NewPingServiceClient(c.HTTPClient(), c.BaseURL(), c.Options()...)
	ctx, caller := clientTP.Tracer("test").Start(ctxFor(t), "caller")
	_, err = ping.Ping(ctx, connect.NewRequest(&pingv1.PingRequest{}))
	caller.End()
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	platformtest.Eventually(t, "the server span ends", func() bool { return len(rec.Ended()) == 1 })
	span := rec.Ended()[0]
	if got, want := span.SpanContext().TraceID(), caller.SpanContext().TraceID(); got != want {
		t.Errorf("server span trace id = %s, want the caller's %s", got, want)
	}
	if !span.Parent().IsRemote() {
		t.Errorf("server span's parent %s is not the remote client span", span.Parent().SpanID())
	}
}

// Small answers go uncompressed even to a client that accepts gzip: on an
// internal network gzip costs more CPU than the bytes it saves.
func TestSmallResponsesAreNotCompressed(t *testing.T) {
	f := newFixture(t, testRPC())
	for _, size := range []int{10, 64 << 10} {
		req, err := http.NewRequest(http.MethodPost, f.baseURL+pingv1connect.PingServicePingProcedure,
			strings.NewReader(`{"text":"`+strings.Repeat("a", size)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Content-Encoding")
		if want := size > 4<<10; (got == "gzip") != want {
			t.Errorf("%d-byte answer: Content-Encoding %q", size, got)
		}
	}
}
