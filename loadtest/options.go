package loadtest

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
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
	// DefaultFlashSaleBuyers and DefaultFlashSaleUnits make a sale that
	// sells out early, so that most answers are out of stock, and that ends
	// within a few seconds at the 20,000 reservations/s.
	DefaultFlashSaleBuyers = 50_000
	DefaultFlashSaleUnits  = 1_000
	// DefaultDataDir is where `mercato up` keeps its local state, the
	// admin's password among it.
	DefaultDataDir = ".mercato"

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
	// Duration is how long each case is measured; for the flash sale,
	// which ends when every buyer has an answer, it bounds the run.
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
	// FlashSale holds the options of the flash-sale scenario.
	FlashSale FlashSaleOptions
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

// FlashSaleOptions configure the flash-sale scenario.
type FlashSaleOptions struct {
	// Buyers is how many buyers each reserve one unit once.
	Buyers int
	// Units is the hot variant's stock.
	Units int64
	// InventoryURL is the inventory service's internal URL, which
	// reservations go to over the inventory RPC; required.
	InventoryURL string
	// Commit commits each successful reservation.
	Commit bool
	// AdminEmail and AdminPassword log setup in to the gateway's admin
	// API; empty means MERCATO_ADMIN_EMAIL and MERCATO_ADMIN_PASSWORD, and
	// without those the admin of a local `mercato up`, with the password
	// it keeps in DataDir.
	AdminEmail    string
	AdminPassword string
	// DataDir is the data directory of a local `mercato up`.
	DataDir string
}

// Flags registers the load flags on fs and returns the options they fill,
// so that the command wiring only parses and calls Run.
func Flags(fs *flag.FlagSet) *Options {
	o := new(Options)
	o.RegisterFlags(fs)
	return o
}

// RegisterFlags registers --url, --concurrency, --duration, --warmup,
// --timeout, --ids, --accounts, --run-id, --buyers, --units, --inventory,
// --commit, --admin-email, --admin-password and --data-dir on fs, writing
// into o.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.BaseURL, "url", DefaultBaseURL, "base URL of the gateway")
	fs.IntVar(&o.Concurrency, "concurrency", DefaultConcurrency, "closed-loop workers, each with one connection")
	fs.DurationVar(&o.Duration, "duration", DefaultDuration, "measured time of each case")
	fs.DurationVar(&o.Warmup, "warmup", 0, "unmeasured time before each case (0: the smaller of 2s and 10% of --duration; negative: none)")
	fs.DurationVar(&o.Timeout, "timeout", DefaultTimeout, "per-request timeout; a request that takes longer counts as an error")
	fs.IntVar(&o.Browse.IDs, "ids", DefaultBrowseIDs, "browse: product ids to discover for the detail case")
	fs.IntVar(&o.Auth.Accounts, "accounts", 0, "auth: customers to create and log in as (0: one per worker; at least --concurrency)")
	fs.StringVar(&o.Auth.RunID, "run-id", "", "auth: names the customers load+ID-N@example.com (empty: a new random one; an earlier run's ID reuses its customers)")
	fs.IntVar(&o.FlashSale.Buyers, "buyers", DefaultFlashSaleBuyers, "flash-sale: buyers, each reserving one unit once (the run ends when all have an answer, or at --duration)")
	fs.Int64Var(&o.FlashSale.Units, "units", DefaultFlashSaleUnits, "flash-sale: units of the hot variant in stock")
	fs.StringVar(&o.FlashSale.InventoryURL, "inventory", "", "flash-sale: the inventory service's internal URL, as `mercato up` lists it (required)")
	fs.BoolVar(&o.FlashSale.Commit, "commit", false, "flash-sale: commit each successful reservation")
	fs.StringVar(&o.FlashSale.AdminEmail, "admin-email", "", "flash-sale: admin to set up the sale as (empty: MERCATO_ADMIN_EMAIL, else "+devAdminEmail+")")
	fs.StringVar(&o.FlashSale.AdminPassword, "admin-password", "", "flash-sale: the admin's password (empty: MERCATO_ADMIN_PASSWORD, else the file "+adminPasswordFile+" in --data-dir)")
	fs.StringVar(&o.FlashSale.DataDir, "data-dir", DefaultDataDir, "flash-sale: data directory of a local `mercato up`, which holds its admin's password")
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
	if o.FlashSale.Buyers == 0 {
		o.FlashSale.Buyers = DefaultFlashSaleBuyers
	}
	if o.FlashSale.Units == 0 {
		o.FlashSale.Units = DefaultFlashSaleUnits
	}
	if o.FlashSale.DataDir == "" {
		o.FlashSale.DataDir = DefaultDataDir
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
	if o.FlashSale.Buyers < 0 {
		errs = append(errs, fmt.Errorf("buyers must be positive, not %d", o.FlashSale.Buyers))
	}
	if o.FlashSale.Units < 0 {
		errs = append(errs, fmt.Errorf("units must be positive, not %d", o.FlashSale.Units))
	}
	if o.FlashSale.InventoryURL != "" {
		if u, err := url.Parse(o.FlashSale.InventoryURL); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("inventory URL %q must be an http:// or https:// URL, such as http://127.0.0.1:41234", o.FlashSale.InventoryURL))
		}
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
