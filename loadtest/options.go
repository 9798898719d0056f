package loadtest

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// Defaults of the options, shared by the flags and by zero-valued fields.
const (
	DefaultBaseURL     = "http://127.0.0.1:8080"
	DefaultConcurrency = 64
	DefaultDuration    = 20 * time.Second
	DefaultTimeout     = 5 * time.Second
	DefaultBrowseIDs   = 5000

	// maxDefaultWarmup caps the default warmup, which is otherwise 10% of
	// the duration.
	maxDefaultWarmup = 2 * time.Second
)

// Options configure a load run; zero fields take the defaults above.
type Options struct {
	// BaseURL is the gateway's address, http or https, optionally with a
	// path prefix.
	BaseURL string
	// Concurrency is the number of closed-loop workers: each sends its next
	// request when the previous one has been answered.
	Concurrency int
	// Duration is how long each case is measured.
	Duration time.Duration
	// Warmup runs before each case's measured window and is excluded from
	// its statistics; zero means the smaller of 2s and 10% of Duration, a
	// negative value means none.
	Warmup time.Duration
	// Timeout bounds each request, connecting included.
	Timeout time.Duration
	// Out receives one JSON line per case; nil means standard output.
	Out io.Writer
	// Log receives progress; nil means text on standard error.
	Log *slog.Logger
	// Browse holds the options of the browse scenario.
	Browse BrowseOptions
	// Auth holds the options of the auth scenario.
	Auth AuthOptions
}

// BrowseOptions configure the browse scenario.
type BrowseOptions struct {
	// IDs is how many product ids setup discovers for the detail case.
	IDs int
}

// AuthOptions configure the auth scenario.
type AuthOptions struct {
	// Accounts is how many customers setup creates and the login case
	// logs in as; zero means one per worker. Fewer than Concurrency is
	// refused, since each worker keeps a session of a customer of its own.
	Accounts int
	// RunID names the customers, load+<RunID>-<n>@example.com; empty means
	// a new random one, and the RunID of an earlier run reuses its
	// customers.
	RunID string
}

// Flags registers the load flags on fs and returns the options they fill,
// so that the command wiring only parses and calls Run.
func Flags(fs *flag.FlagSet) *Options {
	o := new(Options)
	o.RegisterFlags(fs)
	return o
}

// RegisterFlags registers --url, --concurrency, --duration, --warmup,
// --timeout, --ids, --accounts and --run-id on fs, writing into o.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BaseURL, "url", DefaultBaseURL, "base URL of the gateway")
	fs.IntVar(&o.Concurrency, "concurrency", DefaultConcurrency, "closed-loop workers, each with one connection")
	fs.DurationVar(&o.Duration, "duration", DefaultDuration, "measured time of each case")
	fs.DurationVar(&o.Warmup, "warmup", 0, "unmeasured time before each case (0: the smaller of 2s and 10% of --duration; negative: none)")
	fs.DurationVar(&o.Timeout, "timeout", DefaultTimeout, "per-request timeout; a request that takes longer counts as an error")
	fs.IntVar(&o.Browse.IDs, "ids", DefaultBrowseIDs, "browse: product ids to discover for the detail case")
	fs.IntVar(&o.Auth.Accounts, "accounts", 0, "auth: customers to create and log in as (0: one per worker; at least --concurrency)")
	fs.StringVar(&o.Auth.RunID, "run-id", "", "auth: names the customers load+ID-N@example.com (empty: a new random one; an earlier run's ID reuses its customers)")
}

// setDefaults fills zero fields.
func (o *Options) setDefaults() {
	if o.BaseURL == "" {
		o.BaseURL = DefaultBaseURL
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Warmup == 0 {
		o.Warmup = min(o.Duration/10, maxDefaultWarmup)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.Browse.IDs == 0 {
		o.Browse.IDs = DefaultBrowseIDs
	}
	if o.Auth.Accounts == 0 {
		o.Auth.Accounts = o.Concurrency
	}
}

// Validate reports every option that cannot work.
func (o Options) Validate() error {
	var errs []error
	if _, err := parseTarget(o.BaseURL); err != nil {
		errs = append(errs, err)
	}
	if o.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency must be positive, not %d", o.Concurrency))
	}
	if o.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration must be positive, not %s", o.Duration))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout must be positive, not %s", o.Timeout))
	}
	if o.Browse.IDs < 0 {
		errs = append(errs, fmt.Errorf("ids must be positive, not %d", o.Browse.IDs))
	}
	if o.Auth.Accounts < 0 {
		errs = append(errs, fmt.Errorf("accounts must be positive, not %d", o.Auth.Accounts))
	}
	if !validRunID(o.Auth.RunID) {
		errs = append(errs, fmt.Errorf("run-id %q must be at most %d letters, digits, '-' or '_'", o.Auth.RunID, maxRunIDLength))
	}
	return errors.Join(errs...)
}

// warmup is the effective warmup after defaults.
func (o Options) warmup() time.Duration {
	return max(o.Warmup, 0)
}
