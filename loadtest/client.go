package loadtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Kinds of failed requests, the keys of Result.ErrorKinds besides
// "status_NNN" for an unexpected status.
const (
	KindTimeout   = "timeout"         // no complete response within Options.Timeout
	KindConnect   = "connect"         // the connection could not be opened
	KindClosed    = "closed"          // the server closed or reset the connection mid-request
	KindProtocol  = "protocol"        // the response was not HTTP/1.x the client could read
	KindTransport = "transport"       // any other network failure
	KindInvalid   = "invalid_request" // the scenario built a request that is not valid HTTP
)

const (
	// readBufferSize bounds a response's header, and is large enough that
	// a typical JSON response arrives in one read.
	readBufferSize = 32 << 10
	// maxKeptBody bounds the part of a response body passed to the next
	// request's NextFunc; fasthttp reads the whole body into the worker's
	// response.
	maxKeptBody = 4 << 20
	// userAgent names the generator in the servers' logs.
	userAgent = "mercato-load"
)

// requestError is a failed request with its kind.
type requestError struct {
	kind string
	err  error
}

func (e *requestError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// errorKind names the kind of a failed request for Result.ErrorKinds.
func errorKind(err error) string {
	var re *requestError
	if errors.As(err, &re) {
		return re.kind
	}
	return KindTransport
}

func protocolError(format string, args ...any) error {
	return &requestError{kind: KindProtocol, err: fmt.Errorf(format, args...)}
}

// classify gives an error of fasthttp its kind. fasthttp reports network
// failures with the errors of package net (a close before the first byte
// of a response as ErrConnectionClosed, timeouts as ErrTimeout) and what
// it could not parse with its own errors, which are therefore protocol
// errors.
func classify(err error) error {
	var re *requestError
	if errors.As(err, &re) {
		return err // from dial
	}
	return &requestError{kind: fasthttpKind(err), err: err}
}

func fasthttpKind(err error) string {
	var timeout interface{ Timeout() bool }
	var opErr *net.OpError
	var errno syscall.Errno
	switch {
	case errors.As(err, &timeout) && timeout.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return KindTimeout
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED):
		return KindClosed
	case errors.Is(err, fasthttp.ErrorInvalidURI):
		return KindInvalid
	case errors.As(err, &opErr), errors.As(err, &errno), errors.Is(err, fasthttp.ErrNoFreeConns):
		return KindTransport
	}
	return KindProtocol
}

// target is where requests go, parsed once from Options.BaseURL.
type target struct {
	addr string      // host:port to dial
	base string      // scheme, host and path prefix, without a trailing slash
	tls  *tls.Config // nil for http
}

func parseTarget(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("base URL: %w", err)
	}
	port := ""
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return nil, fmt.Errorf("base URL %q: scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("base URL %q has no host", raw)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	t := &target{
		addr: net.JoinHostPort(u.Hostname(), port),
		base: u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/"),
	}
	if u.Scheme == "https" {
		// Offer HTTP/1.1 only: it is all fasthttp speaks.
		t.tls = &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
	}
	return t, nil
}

// transport holds the keep-alive connections that the workers of one case
// share, at most one per worker.
type transport struct {
	ctx  context.Context
	base string
	hc   *fasthttp.HostClient
}

// newTransport returns a transport for up to conns concurrent requests
// whose connections close when ctx ends.
func newTransport(ctx context.Context, t *target, conns int, timeout time.Duration) *transport {
	return &transport{
		ctx:  ctx,
		base: t.base,
		hc: &fasthttp.HostClient{
			Addr:        t.addr,
			IsTLS:       t.tls != nil,
			DialTimeout: dialer(ctx, t.tls),
			Name:        userAgent,
			MaxConns:    conns,
			// A worker never waits for a connection, since there is one
			// for each; should it ever, it waits rather than fails.
			MaxConnWaitTimeout: timeout,
			// Retries are the client's decision, by its own rule.
			MaxIdemponentCallAttempts: 1,
			ReadBufferSize:            readBufferSize,
			// Names go out as the scenario wrote them, and the paths too.
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
		},
	}
}

// close drops the connections; every client must be done.
func (tr *transport) close() {
	tr.hc.CloseIdleConnections()
}

// dialer opens connections that close when ctx ends, so that a worker
// blocked on a slow response returns at once rather than after
// Options.Timeout. It shakes hands itself, so that a failed handshake is a
// KindConnect error rather than a failed write.
func dialer(ctx context.Context, config *tls.Config) fasthttp.DialFuncWithTimeout {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &requestError{kind: KindConnect, err: err}
		}
		conn := net.Conn(&cancelableConn{Conn: nc, stop: context.AfterFunc(ctx, func() { nc.Close() })})
		if config == nil {
			return conn, nil
		}
		tc := tls.Client(conn, config)
		if timeout > 0 {
			tc.SetDeadline(time.Now().Add(timeout))
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, &requestError{kind: KindConnect, err: err}
		}
		tc.SetDeadline(time.Time{})
		return tc, nil
	}
}

// cancelableConn is a connection that a context closes; closing it first
// stops the context's hook, which would otherwise live as long as the
// context.
type cancelableConn struct {
	net.Conn
	stop func() bool
}

func (c *cancelableConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// client is one worker's use of the transport, with the request and
// response it reuses, so that a request allocates nothing; it is not safe
// for concurrent use.
type client struct {
	tr   *transport
	url  []byte
	req  fasthttp.Request
	resp fasthttp.Response
}

func newClient(tr *transport) *client {
	return &client{tr: tr}
}

// do sends req and reads the whole response before deadline. The returned
// body is valid until the next call.
func (c *client) do(req *Request, deadline time.Time) (Response, error) {
	if err := req.check(); err != nil {
		return Response{}, err
	}
	c.build(req)
	for attempt := 0; ; attempt++ {
		err := c.tr.hc.DoDeadline(&c.req, &c.resp, deadline)
		if err == nil {
			break
		}
		// A kept-alive connection the server closed while it was idle fails
		// before any answer; like net/http, send an idempotent request once
		// more on a new connection rather than blame the server.
		if attempt == 0 && unanswered(err) && req.idempotent() && c.tr.ctx.Err() == nil {
			continue
		}
		return Response{}, classify(err)
	}
	status := c.resp.StatusCode()
	if status == fasthttp.StatusSwitchingProtocols {
		return Response{}, protocolError("unexpected 101 Switching Protocols")
	}
	body := c.resp.Body()
	return Response{Status: status, Body: body[:min(len(body), maxKeptBody)]}, nil
}

// build writes req into c.req.
func (c *client) build(req *Request) {
	r := &c.req
	r.Reset()
	r.Header.DisableNormalizing()
	// Without a body, send no Content-Type rather than fasthttp's default
	// of a form.
	r.Header.SetNoDefaultContentType(true)
	if req.Method != "" {
		r.Header.SetMethod(req.Method)
	}
	c.url = append(append(c.url[:0], c.tr.base...), req.Path...)
	r.SetRequestURIBytes(c.url)
	r.Header.Set("Accept", "application/json")
	if len(req.Body) > 0 {
		r.Header.SetContentType("application/json") // unless req.Header sets one
	}
	for _, h := range req.Header {
		r.Header.Set(h.Name, h.Value)
	}
	r.SetBodyRaw(req.Body)
}

// unanswered reports whether a request failed because its connection
// closed before any byte of a response arrived: fasthttp says so with
// ErrConnectionClosed, and a request that could not be written was not
// answered either.
func unanswered(err error) bool {
	var opErr *net.OpError
	return errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.As(err, &opErr) && opErr.Op == "write" && fasthttpKind(err) == KindClosed
}
