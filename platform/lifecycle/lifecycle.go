// Package lifecycle runs a process's long-lived parts together: each part runs
// until the context ends or one part fails, then every part stops, and the
// registered closers run in reverse order once all parts have returned — so a
// server drains its requests before the database pool it uses is closed.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// Group is a set of parts that start and stop together.
type Group struct {
	log     *slog.Logger
	parts   []part
	closers []part
}

type part struct {
	name string
	run  func(ctx context.Context) error
}

// New returns an empty group.
func New(log *slog.Logger) *Group { return &Group{log: log} }

// Go adds a part; parts must be added before Run. run must block until ctx
// ends (returning nil) or the part fails (returning an error, which stops the
// whole group).
func (g *Group) Go(name string, run func(ctx context.Context) error) {
	g.parts = append(g.parts, part{name, run})
}

// Defer adds a closer, run after every part has returned; closers run in the
// reverse order of registration.
func (g *Group) Defer(name string, fn func(ctx context.Context) error) {
	g.closers = append(g.closers, part{name, fn})
}

// Run starts every part and waits. It returns the first part's error, or nil
// when ctx ended. Closers get closeCtx so that they are bounded even after
// ctx is cancelled.
func (g *Group) Run(ctx context.Context, closeCtx func() (context.Context, context.CancelFunc)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, p := range g.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.run(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				once.Do(func() { first = fmt.Errorf("%s: %w", p.name, err) })
				g.log.Error("part failed; stopping", "part", p.name, "err", err)
			}
			cancel()
		}()
	}
	wg.Wait()
	cctx, ccancel := closeCtx()
	defer ccancel()
	g.Close(cctx)
	return first
}

// Close runs the closers without running the parts, for when assembling the
// group failed halfway.
func (g *Group) Close(ctx context.Context) {
	for i := len(g.closers) - 1; i >= 0; i-- {
		c := g.closers[i]
		if err := c.run(ctx); err != nil {
			g.log.Warn("close failed", "part", c.name, "err", err)
		}
	}
}
