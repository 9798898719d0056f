package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantUsage bool
		wantOut   string
	}{
		{"no arguments prints usage", nil, false, "mercato up"},
		{"help", []string{"help"}, false, "mercato serve SERVICE"},
		{"version", []string{"version"}, false, "mercato " + version},
		{"unknown command", []string{"deploy"}, true, ""},
		{"serve without services", []string{"serve"}, true, ""},
		{"serve an unknown service", []string{"serve", "warehouse"}, true, ""},
		{"migrate an unknown service", []string{"migrate", "warehouse"}, true, ""},
		{"bad flag", []string{"up", "--no-such-flag"}, true, ""},
		{"load without scenario", []string{"load"}, true, ""},
		{"seed with a silly count", []string{"seed", "--products", "0"}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			var u usageError
			if got := errors.As(err, &u); got != tt.wantUsage {
				t.Fatalf("err = %v, want usage error %v", err, tt.wantUsage)
			}
			if tt.wantOut != "" && !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("output lacks %q:\n%s", tt.wantOut, out.String())
			}
		})
	}
}

func TestModuleTable(t *testing.T) {
	seen := map[string]bool{}
	mods := modules()
	for _, m := range mods {
		if seen[m.name] {
			t.Fatalf("service %s listed twice", m.name)
		}
		seen[m.name] = true
		if m.setup == nil {
			t.Fatalf("service %s has no setup", m.name)
		}
	}
	if last := mods[len(mods)-1].name; last != "gateway" {
		t.Fatalf("the gateway must start after its upstreams, but the last module is %s", last)
	}
}
