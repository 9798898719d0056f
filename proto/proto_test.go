// Package proto_test checks promises of the contracts that the Go code of
// other packages relies on, so that editing a .proto cannot break them
// silently.
package proto_test

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	catalogv1 "github.com/mercato/mercato/proto/gen/mercato/catalog/v1"
	pingv1 "github.com/mercato/mercato/proto/gen/mercato/ping/v1"
)

// TestIdempotency pins each method's idempotency level: platform/rpc retries
// a call only when its contract says it has no side effects, so a method
// losing the option would lose its retries, and one gaining it by mistake
// could be applied twice.
func TestIdempotency(t *testing.T) {
	const (
		safe   = descriptorpb.MethodOptions_NO_SIDE_EFFECTS
		unsafe = descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
	)
	tests := []struct {
		file   protoreflect.FileDescriptor
		method protoreflect.FullName
		want   descriptorpb.MethodOptions_IdempotencyLevel
	}{
		{catalogv1.File_mercato_catalog_v1_catalog_proto, "mercato.catalog.v1.CatalogService.GetProduct", safe},
		{catalogv1.File_mercato_catalog_v1_catalog_proto, "mercato.catalog.v1.CatalogService.BatchGetVariants", safe},
		{pingv1.File_mercato_ping_v1_ping_proto, "mercato.ping.v1.PingService.Ping", safe},
		{pingv1.File_mercato_ping_v1_ping_proto, "mercato.ping.v1.PingService.Write", unsafe},
	}
	for _, tt := range tests {
		t.Run(string(tt.method), func(t *testing.T) {
			m := findMethod(t, tt.file, tt.method)
			opts, _ := m.Options().(*descriptorpb.MethodOptions)
			if got := opts.GetIdempotencyLevel(); got != tt.want {
				t.Errorf("idempotency_level = %s, want %s", got, tt.want)
			}
		})
	}
}

// findMethod returns the method named name among file's services.
func findMethod(t *testing.T, file protoreflect.FileDescriptor, name protoreflect.FullName) protoreflect.MethodDescriptor {
	t.Helper()
	services := file.Services()
	for i := range services.Len() {
		if m := services.Get(i).Methods().ByName(name.Name()); m != nil && m.FullName() == name {
			return m
		}
	}
	t.Fatalf("%s declares no method %s", file.Path(), name)
	return nil
}
