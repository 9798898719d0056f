package redisx_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/platformtest"
	"github.com/mercato/mercato/platform/redisx"
)

func TestOpenSizesThePoolFromConfig(t *testing.T) {
	t.Parallel()
	cfg := platformtest.Config(t)
	cfg.Redis.PoolSize = 7
	cfg.Redis.MinIdleConns = 2
	cfg.Redis.DialTimeout = 1500 * time.Millisecond
	cfg.Redis.ReadTimeout = 700 * time.Millisecond
	cfg.Redis.WriteTimeout = 900 * time.Millisecond
	cleanup := platformtest.Redis(t, cfg) // deletes the namespace's keys afterwards
	ctx := testContext(t)

	c, err := redisx.Open(ctx, cfg.Redis)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })

	opts := c.Options()
	if opts.PoolSize != 7 {
		t.Errorf("PoolSize = %d, want 7", opts.PoolSize)
	}
	if opts.MinIdleConns != 2 {
		t.Errorf("MinIdleConns = %d, want 2", opts.MinIdleConns)
	}
	if opts.DialTimeout != 1500*time.Millisecond {
		t.Errorf("DialTimeout = %v, want 1.5s", opts.DialTimeout)
	}
	if opts.ReadTimeout != 700*time.Millisecond {
		t.Errorf("ReadTimeout = %v, want 700ms", opts.ReadTimeout)
	}
	if opts.WriteTimeout != 900*time.Millisecond {
		t.Errorf("WriteTimeout = %v, want 900ms", opts.WriteTimeout)
	}

	// The client works, and what it writes the other client reads.
	key := redisx.NewKeys(cfg.Namespace, "redisx").Key("probe")
	if err := c.Set(ctx, key, "hello", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := cleanup.Get(ctx, key).Result(); err != nil || got != "hello" {
		t.Errorf("GET %s = %q, %v; want hello", key, got, err)
	}
}

func TestOpenFailsClearly(t *testing.T) {
	t.Parallel()
	addr := platformtest.ClosedAddr(t)
	tests := []struct {
		name    string
		url     string
		want    string // the redacted URL the error must name
		refused bool   // the error wraps ECONNREFUSED
	}{
		{name: "nothing listening",
			url:  "redis://" + addr + "/0",
			want: "redis://" + addr + "/0", refused: true},
		{name: "nothing listening, password in the URL",
			url:  "redis://:s3cret@" + addr + "/0",
			want: "redis://:xxxxx@" + addr + "/0", refused: true},
		{name: "unparseable URL",
			url:  "redis://:s3cret@127.0.0.1:notaport/0",
			want: "redis url"},
		{name: "wrong scheme",
			url:  "http://:s3cret@" + addr + "/0",
			want: "http://:xxxxx@" + addr + "/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := platformtest.Config(t)
			cfg.Redis.URL = tt.url
			cfg.Redis.DialTimeout = 500 * time.Millisecond
			start := time.Now()

			c, err := redisx.Open(testContext(t), cfg.Redis)
			if err == nil {
				_ = c.Close()
				t.Fatalf("Open(%s) succeeded", tt.url)
			}
			if c != nil {
				t.Error("Open returned a client with its error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error reveals the password: %v", err)
			}
			if tt.refused && !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("error %v does not wrap ECONNREFUSED", err)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("Open took %v to fail", took)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	keys := redisx.NewKeys("mercato", "catalog")
	tests := []struct {
		parts []string
		want  string
	}{
		{[]string{"product", "prod_01h"}, "mercato:catalog:product:prod_01h"},
		{[]string{"page"}, "mercato:catalog:page"},
		{[]string{"a", "", "b"}, "mercato:catalog:a::b"},
		{nil, "mercato:catalog:"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := keys.Key(tt.parts...)
			if got != tt.want {
				t.Errorf("Key(%q) = %q, want %q", tt.parts, got, tt.want)
			}
			if !strings.HasPrefix(got, keys.Prefix()) {
				t.Errorf("Key(%q) = %q lacks the prefix %q", tt.parts, got, keys.Prefix())
			}
		})
	}
	if got := keys.Prefix(); got != "mercato:catalog:" {
		t.Errorf("Prefix() = %q, want mercato:catalog:", got)
	}
}

// TestNamespacesNeverShareKeys checks, for namespaces that config accepts
// (lowercase letters, digits and _), that no key of one namespace equals a
// key of another or falls under its prefix, so one namespace's cleanup scan
// cannot reach another's keys.
func TestNamespacesNeverShareKeys(t *testing.T) {
	namespaces := []string{"mercato", "mercato2", "t_a", "t_ab", "t_a_b", "t", "a_catalog"}
	services := []string{"catalog", "catalog_page", "gateway", "a"}
	parts := [][]string{nil, {"x"}, {"catalog", "x"}, {"b", "catalog"}}

	owner := map[string]string{} // key -> namespace that made it
	for _, ns := range namespaces {
		for _, svc := range services {
			for _, p := range parts {
				key := redisx.NewKeys(ns, svc).Key(p...)
				if other, dup := owner[key]; dup && other != ns {
					t.Errorf("namespaces %q and %q both make key %q", other, ns, key)
				}
				owner[key] = ns
			}
		}
	}
	for key, ns := range owner {
		for _, other := range namespaces {
			if other == ns {
				continue
			}
			for _, svc := range services {
				if prefix := redisx.NewKeys(other, svc).Prefix(); strings.HasPrefix(key, prefix) {
					t.Errorf("key %q of namespace %q is under the prefix %q of namespace %q", key, ns, prefix, other)
				}
			}
			if strings.HasPrefix(key, other+":") {
				t.Errorf("key %q of namespace %q matches the cleanup pattern %s:* of %q", key, ns, other, other)
			}
		}
	}
}

// TestNamespacesAreSeparateInRedis writes the same logical key in two
// namespaces, one a prefix of the other's name, and scans one namespace.
func TestNamespacesAreSeparateInRedis(t *testing.T) {
	t.Parallel()
	cfgA := platformtest.Config(t)
	cfgB := cfgA
	cfgB.Namespace = cfgA.Namespace + "_b" // t_xxx and t_xxx_b
	c := platformtest.Redis(t, cfgA)
	_ = platformtest.Redis(t, cfgB) // cleans up namespace B
	ctx := testContext(t)

	a := redisx.NewKeys(cfgA.Namespace, "cart")
	b := redisx.NewKeys(cfgB.Namespace, "cart")
	for _, k := range []redisx.Keys{a, b} {
		if err := c.Set(ctx, k.Key("cart_1"), k.Prefix(), time.Minute).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	}
	if ka, kb := a.Key("cart_1"), b.Key("cart_1"); ka == kb {
		t.Fatalf("both namespaces use key %q", ka)
	}
	var got []string
	iter := c.Scan(ctx, 0, a.Prefix()+"*", 100).Iterator()
	for iter.Next(ctx) {
		got = append(got, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	if want := []string{a.Key("cart_1")}; !slices.Equal(got, want) {
		t.Errorf("keys under %s* = %q, want %q", a.Prefix(), got, want)
	}
	if v, err := c.Get(ctx, a.Key("cart_1")).Result(); err != nil || v != a.Prefix() {
		t.Errorf("GET %s = %q, %v; want %q", a.Key("cart_1"), v, err, a.Prefix())
	}
}

// testContext bounds a test's calls so a hung server fails the test instead
// of stalling it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
