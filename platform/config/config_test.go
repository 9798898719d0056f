package config

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	// Write then rename, as editors and ConfigMaps do, so a watcher never sees
	// a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestLayersOverrideInOrder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mercato.yaml")
	live := filepath.Join(dir, "live.yaml")
	writeFile(t, file, "namespace: fromfile\ngateway:\n  rate_limit_per_ip: 7\n  rate_limit_burst: 9\ncatalog:\n  cache_ttl: 90s\n")
	writeFile(t, live, "gateway:\n  rate_limit_burst: 11\n")
	tests := []struct {
		name    string
		environ []string
		check   func(t *testing.T, c *Config)
	}{
		{"defaults below file", nil, func(t *testing.T, c *Config) {
			if c.Namespace != "fromfile" || c.Catalog.CacheTTL != 90*time.Second {
				t.Errorf("file layer not applied: %q %v", c.Namespace, c.Catalog.CacheTTL)
			}
			if c.Redis.URL != Defaults().Redis.URL {
				t.Errorf("default lost: %q", c.Redis.URL)
			}
		}},
		{"env above file", []string{"MERCATO_NAMESPACE=fromenv", "MERCATO_RATE_LIMIT_PER_IP=0"}, func(t *testing.T, c *Config) {
			if c.Namespace != "fromenv" || c.Gateway.RateLimitPerIP != 0 {
				t.Errorf("env layer not applied: %q %d", c.Namespace, c.Gateway.RateLimitPerIP)
			}
		}},
		{"generic env key", []string{"MERCATO_CATALOG__CACHE_TTL=5m", "MERCATO_GATEWAY__CORS_ORIGINS=https://a.example,https://b.example"}, func(t *testing.T, c *Config) {
			if c.Catalog.CacheTTL != 5*time.Minute {
				t.Errorf("cache_ttl = %v", c.Catalog.CacheTTL)
			}
			if strings.Join(c.Gateway.CORSOrigins, " ") != "https://a.example https://b.example" {
				t.Errorf("cors = %v", c.Gateway.CORSOrigins)
			}
		}},
		{"live above env", []string{"MERCATO_GATEWAY__RATE_LIMIT_BURST=3"}, func(t *testing.T, c *Config) {
			if c.Gateway.RateLimitBurst != 11 {
				t.Errorf("burst = %d, want the live overlay's 11", c.Gateway.RateLimitBurst)
			}
		}},
		{"unrelated MERCATO vars ignored", []string{"MERCATO_CONFIG=x", "MERCATO_SOMETHING=1"}, func(t *testing.T, c *Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Load(Sources{File: file, LiveFile: live, Environ: tt.environ}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s.Get())
		})
	}
}

func TestBadInputNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, yaml string
		environ    []string
		want       string
	}{
		{"unknown key", "gateway:\n  rate_limt: 3\n", nil, "rate_limt"},
		{"bad namespace", "", []string{"MERCATO_NAMESPACE=Bad-NS"}, "namespace"},
		{"bad broker scheme", "", []string{"MERCATO_BROKER_URL=kafka://x"}, "broker.url"},
		{"bad duration", "catalog:\n  cache_ttl: soon\n", nil, "cache_ttl"},
		{"negative limit", "", []string{"MERCATO_RATE_LIMIT_PER_IP=-1"}, "rate_limit_per_ip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".yaml")
			writeFile(t, file, tt.yaml)
			_, err := Load(Sources{File: file, Environ: tt.environ}, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to name %q", err, tt.want)
			}
		})
	}
}

func TestMissingFilesAreEmptyLayers(t *testing.T) {
	s, err := Load(Sources{File: filepath.Join(t.TempDir(), "absent.yaml"), LiveFile: filepath.Join(t.TempDir(), "absent-live.yaml")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if s.Get().Namespace != "mercato" {
		t.Fatalf("namespace = %q", s.Get().Namespace)
	}
}

func TestWatchAppliesLiveKeysOnly(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.yaml")
	s, err := Load(Sources{File: filepath.Join(dir, "mercato.yaml"), LiveFile: live}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	notified := make(chan *Config, 4)
	s.OnChange(func(c *Config) { notified <- c })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx) }()

	// The live file appears after start: it must still be picked up.
	deadline := time.Now().Add(10 * time.Second)
	for s.Get().Gateway.RateLimitPerIP != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("live change not applied; rate_limit_per_ip = %d", s.Get().Gateway.RateLimitPerIP)
		}
		writeFile(t, live, "gateway:\n  rate_limit_per_ip: 5\ncatalog:\n  cache_ttl: 1h\n")
		time.Sleep(200 * time.Millisecond)
	}
	if got := s.Get().Catalog.CacheTTL; got != Defaults().Catalog.CacheTTL {
		t.Errorf("non-live key cache_ttl changed to %v without a restart", got)
	}
	if n := testutil.ToFloat64(s.changes.WithLabelValues("gateway.rate_limit_per_ip")); n < 1 {
		t.Errorf("change not counted: %v", n)
	}
	select {
	case c := <-notified:
		if c.Gateway.RateLimitPerIP != 5 {
			t.Errorf("listener saw %d", c.Gateway.RateLimitPerIP)
		}
	case <-time.After(5 * time.Second):
		t.Error("listener not notified")
	}

	// A broken file is refused and the running configuration kept.
	writeFile(t, live, "gateway: [not a map\n")
	deadline = time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(s.reloads.WithLabelValues("error")) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("broken file not reported")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s.Get().Gateway.RateLimitPerIP != 5 {
		t.Errorf("broken file changed the config")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestExplicit(t *testing.T) {
	s, err := Load(Sources{Environ: []string{"MERCATO_NATS_URL=nats://elsewhere:4222"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Explicit("broker.nats_url") || s.Explicit("broker.url") {
		t.Fatal("Explicit does not reflect the layers above the defaults")
	}
	if got := s.Get().BrokerURL(); got != "nats://elsewhere:4222" {
		t.Fatalf("BrokerURL = %q", got)
	}
}
