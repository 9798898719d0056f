package main

import (
	"fmt"
	"io/fs"
	"strings"

	"github.com/mercato/mercato/platform/service"
	"github.com/mercato/mercato/services/catalog"
	"github.com/mercato/mercato/services/gateway"
	"github.com/mercato/mercato/services/identity"
	"github.com/mercato/mercato/services/inventory"
)

// module is one service the binary can run: its setup, its database schema
// (nil when it has no database) and its part of the public API.
type module struct {
	name       string
	setup      service.Setup
	migrations fs.FS
	openapi    []byte
}

// modules lists every service, backends before the gateway that fronts them.
// This table is the one place that knows all services; services never import
// each other.
func modules() []module {
	backends := []module{
		{name: identity.Name, setup: identity.Run, migrations: identity.Migrations(), openapi: identity.OpenAPI},
		{name: catalog.Name, setup: catalog.Run, migrations: catalog.Migrations(), openapi: catalog.OpenAPI},
		{name: inventory.Name, setup: inventory.Run, migrations: inventory.Migrations(), openapi: inventory.OpenAPI},
	}
	var upstreams []gateway.Upstream
	for _, m := range backends {
		upstreams = append(upstreams, gateway.Upstream{Name: m.name, OpenAPI: m.openapi})
	}
	return append(backends, module{name: gateway.Name, setup: gateway.Setup(upstreams)})
}

// lookup returns the modules with the given names, or a usage error naming
// the first unknown one.
func lookup(names []string) ([]module, error) {
	all := modules()
	var out []module
	for _, name := range names {
		found := false
		for _, m := range all {
			if m.name == name {
				out, found = append(out, m), true
				break
			}
		}
		if !found {
			return nil, usageError{fmt.Sprintf("unknown service %q (services: %s)", name, serviceNames())}
		}
	}
	return out, nil
}

func serviceNames() string {
	var names []string
	for _, m := range modules() {
		names = append(names, m.name)
	}
	return strings.Join(names, ", ")
}
