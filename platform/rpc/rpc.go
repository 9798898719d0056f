// Package rpc is how Mercato services serve and call their internal Connect
// APIs: handler options that trace, measure, log and recover every RPC, and a
// client per dependency that gives every call a deadline, safe retries, a
// circuit breaker and a bulkhead over cleartext HTTP/2.
package rpc

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// codeLabel is the metric label of an RPC outcome: "ok" or the Connect code
// name, such as "unavailable".
func codeLabel(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// register registers c on reg, or returns the collector already registered
// under the same description, so that several clients or handler sets in one
// process can share one registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("rpc metrics: %w", err)
}
