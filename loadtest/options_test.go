package loadtest

import (
	"flag"
	"testing"
	"time"
)

func TestFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want Options
	}{
		{"defaults", nil, Options{
			BaseURL: DefaultBaseURL, Concurrency: 64, Duration: 20 * time.Second, Timeout: 5 * time.Second,
			Browse:    BrowseOptions{IDs: 5000},
			FlashSale: FlashSaleOptions{Buyers: 50000, Units: 1000, DataDir: ".mercato"},
		}},
		{"every flag", []string{"--url", "http://10.0.0.5:9090", "--concurrency", "128", "--duration", "1m",
			"--warmup", "5s", "--timeout", "1s", "--ids", "200", "--accounts", "500", "--run-id", "nightly-1",
			"--buyers", "20000", "--units", "100", "--inventory", "http://127.0.0.1:9091", "--commit",
			"--admin-email", "ops@example.com", "--admin-password", "secret", "--data-dir", "/var/lib/mercato"}, Options{
			BaseURL: "http://10.0.0.5:9090", Concurrency: 128, Duration: time.Minute, Warmup: 5 * time.Second,
			Timeout: time.Second, Browse: BrowseOptions{IDs: 200}, Auth: AuthOptions{Accounts: 500, RunID: "nightly-1"},
			FlashSale: FlashSaleOptions{Buyers: 20000, Units: 100, InventoryURL: "http://127.0.0.1:9091", Commit: true,
				AdminEmail: "ops@example.com", AdminPassword: "secret", DataDir: "/var/lib/mercato"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("load", flag.ContinueOnError)
			got := Flags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Errorf("options %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestWarmupDefault(t *testing.T) {
	tests := []struct {
		name             string
		duration, warmup time.Duration
		want             time.Duration
	}{
		{"10% of a short duration", 5 * time.Second, 0, 500 * time.Millisecond},
		{"at most 2s", time.Minute, 0, 2 * time.Second},
		{"as given", time.Minute, 7 * time.Second, 7 * time.Second},
		{"negative is none", time.Minute, -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Duration: tt.duration, Warmup: tt.warmup}
			o.setDefaults()
			if got := o.warmup(); got != tt.want {
				t.Errorf("warmup %v, want %v", got, tt.want)
			}
		})
	}
}
