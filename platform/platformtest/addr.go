package platformtest

import (
	"net"
	"testing"
)

// ClosedAddr returns a loopback address ("127.0.0.1:port") on which nothing
// listens right now: a client dialling it is refused, and a server can be
// told to listen on it later. The port is one the kernel just handed out, so
// another process is unlikely, though not certain, to take it meanwhile.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}
