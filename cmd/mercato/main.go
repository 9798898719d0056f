// Command mercato is the whole Mercato platform in one binary: `mercato up`
// runs every service on this machine, `mercato serve` runs chosen services
// (what a container runs), and the other subcommands migrate, seed, load-test
// and report the version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/redisx"
	"github.com/mercato/mercato/platform/telemetry"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `mercato — an open-source commerce platform built as microservices.

Usage:
  mercato up [--http ADDR] [--data DIR] [--single-process]
                                  run the whole platform on this machine
  mercato serve SERVICE...        run the named services (what a container runs)
  mercato migrate [SERVICE...]    create databases and apply migrations
  mercato seed --products N       bulk-load generated products into the catalog
  mercato load SCENARIO [flags]   drive a load scenario against the gateway (browse)
  mercato version                 print the version

Services: %s
Configuration: mercato.yaml (or MERCATO_CONFIG), MERCATO_* environment variables,
and a live overlay file (MERCATO_LIVE_CONFIG). See the README.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintf(os.Stderr, "mercato: %v\n\n", err)
			fmt.Fprintf(os.Stderr, usage, serviceNames())
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "mercato: %v\n", err)
		os.Exit(1)
	}
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintf(stdout, usage, serviceNames())
		return nil
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return cmdUp(ctx, rest, stdout, stderr)
	case "serve":
		return cmdServe(ctx, rest, stdout, stderr)
	case "migrate":
		return cmdMigrate(ctx, rest, stderr)
	case "seed":
		return cmdSeed(ctx, rest, stderr)
	case "load":
		return cmdLoad(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "mercato", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintf(stdout, usage, serviceNames())
		return nil
	default:
		return usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	return nil
}

// newLogger makes the process logger; its level follows the live log.level
// key.
func newLogger(w io.Writer, store *config.Store, component string) *slog.Logger {
	cfg := store.Get()
	level := new(slog.LevelVar)
	level.Set(telemetry.ParseLevel(cfg.Log.Level))
	store.OnChange(func(c *config.Config) { level.Set(telemetry.ParseLevel(c.Log.Level)) })
	return telemetry.NewLogger(w, cfg.Log.Format, level, component)
}

// loadConfig evaluates the configuration layers with the given flag
// overrides; bootstrap messages go to stderr as JSON until the configured
// logger exists.
func loadConfig(overrides map[string]any, stderr io.Writer) (*config.Store, error) {
	src := config.DefaultSources()
	src.Overrides = overrides
	boot := slog.New(slog.NewJSONHandler(stderr, nil))
	store, err := config.Load(src, boot)
	if err != nil {
		return nil, err
	}
	log := newLogger(stderr, store, "")
	redisx.RouteClientLogs(log)
	// Libraries that log through slog's default (zitadel/oidc) join the
	// process's JSON logs.
	slog.SetDefault(log)
	return store, nil
}
