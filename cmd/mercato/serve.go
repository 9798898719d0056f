package main

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/service"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{"serve needs at least one service name (" + serviceNames() + ")"}
	}
	mods, err := lookup(fs.Args())
	if err != nil {
		return err
	}
	store, err := loadConfig(nil, stderr)
	if err != nil {
		return err
	}
	log := newLogger(stdout, store, "")
	return serveModules(ctx, store, log, mods, nil)
}

// serveModules runs modules in this process until ctx ends, each with its own
// HTTP server, registry and clients — exactly as if each ran alone — and
// watches the configuration files for live changes. ready, when set, is
// called with each module's name and address once it listens.
func serveModules(ctx context.Context, store *config.Store, log *slog.Logger, mods []module, ready func(name, addr string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = store.Watch(ctx) }()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, m := range mods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := service.Options{}
			if ready != nil {
				opts.Ready = func(addr string) { ready(m.name, addr) }
			}
			if err := service.Run(ctx, m.name, store, log, m.setup, opts); err != nil {
				once.Do(func() { first = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	return first
}
