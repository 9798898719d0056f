package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/mercato/mercato/loadtest"
	"github.com/mercato/mercato/platform/service"
	"github.com/mercato/mercato/services/catalog"
)

func cmdMigrate(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	mods := modules()
	if fs.NArg() > 0 {
		var err error
		if mods, err = lookup(fs.Args()); err != nil {
			return err
		}
	}
	store, err := loadConfig(nil, stderr)
	if err != nil {
		return err
	}
	log := newLogger(stderr, store, "migrate")
	for _, m := range mods {
		if m.migrations == nil {
			continue
		}
		pool, err := service.OpenDatabase(ctx, store.Get(), m.name, m.migrations, log)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		pool.Close()
		log.Info("schema up to date", "service", m.name)
	}
	return nil
}

func cmdSeed(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("seed", stderr)
	products := fs.Int("products", 1000, "how many products to add")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed, for a reproducible catalog")
	ifFewer := fs.Bool("if-fewer", false, "only add products when the catalog holds fewer than --products")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *products < 1 || *products > 10_000_000 {
		return usageError{"--products must be between 1 and 10000000"}
	}
	store, err := loadConfig(nil, stderr)
	if err != nil {
		return err
	}
	cfg := store.Get()
	log := newLogger(stderr, store, "seed")
	pool, err := service.OpenDatabase(ctx, cfg, catalog.Name, catalog.Migrations(), log)
	if err != nil {
		return err
	}
	defer pool.Close()
	if *ifFewer {
		n, err := catalog.NewStore(pool, cfg.Namespace).Count(ctx)
		if err != nil {
			return err
		}
		if n >= int64(*products) {
			fmt.Fprintf(stderr, "the catalog already holds %d products; nothing to seed\n", n)
			return nil
		}
		*products -= int(n)
	}
	start := time.Now()
	if err := catalog.Seed(ctx, pool, cfg.Namespace, catalog.SeedOptions{Products: *products, Seed: *seed, Progress: stderr}); err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Fprintf(stderr, "seeded %d products in %s (%.0f products/s)\n", *products, took.Round(time.Millisecond), float64(*products)/took.Seconds())
	return nil
}

func cmdLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "" || args[0][0] == '-' {
		return usageError{"load needs a scenario name, e.g. `mercato load browse --concurrency 64 --duration 20s`"}
	}
	name := args[0]
	fs := newFlagSet("load "+name, stderr)
	opts := loadtest.Flags(fs)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	opts.Out = stdout
	_, err := loadtest.Run(ctx, name, *opts)
	return err
}
