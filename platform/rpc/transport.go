package rpc

import (
	"net"
	"net/http"
	"time"
)

// NewHTTPClient returns the HTTP client internal calls travel on: HTTP/2
// with prior knowledge over cleartext (h2c), as platform/server serves it, so
// both the Connect and the gRPC protocol work and calls multiplex on few
// connections; HTTP/2 over TLS for https:// base URLs. It has no overall
// timeout because every call carries its own deadline, and it ignores proxy
// environment variables because service-to-service traffic never goes
// through a forward proxy.
func NewHTTPClient() *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols: protocols,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		// HTTP/2 needs one connection per peer; a few spare ones absorb the
		// extra connections the transport opens when a peer's stream limit
		// is reached.
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		HTTP2: &http.HTTP2Config{
			// A peer that vanished without closing (a killed pod, a dropped
			// NAT entry) is detected by ping instead of hanging calls until
			// their deadlines.
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     5 * time.Second,
		},
	}}
}
