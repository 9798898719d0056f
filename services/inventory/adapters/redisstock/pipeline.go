package redisstock

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Pipelining: in a flash sale thousands of reservations are in flight at
// once, and one round trip each spends more CPU in system calls — on both
// sides — than Redis spends running the script. Scripts therefore go to a
// few pipeline workers, each of which sends whatever calls are waiting in
// one pipeline. Nothing waits for a batch to fill: a call that finds a
// worker idle goes alone, so a quiet service has the latency of a single
// call. Each script still runs as its own atomic step.
const (
	pipelineWorkers = 4
	pipelineMax     = 64
)

// scriptCall is one script waiting for a worker.
type scriptCall struct {
	script *redis.Script
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

// pipeliner holds the queue of script calls; its zero value runs every
// call directly, until Pipeline runs.
type pipeliner struct {
	running atomic.Bool
	queue   chan *scriptCall
}

// Pipeline sends the store's script calls in pipelines until ctx ends.
func (s *Store) Pipeline(ctx context.Context) error {
	s.pipe.queue = make(chan *scriptCall, 4*pipelineWorkers*pipelineMax)
	s.pipe.running.Store(true)
	done := make(chan struct{})
	for range pipelineWorkers {
		go func() {
			defer func() { done <- struct{}{} }()
			s.pipelineWorker(ctx)
		}()
	}
	for range pipelineWorkers {
		<-done
	}
	// Calls queued as the workers stopped run on their own.
	s.pipe.running.Store(false)
	for {
		select {
		case c := <-s.pipe.queue:
			s.send(context.WithoutCancel(ctx), []*scriptCall{c})
		default:
			return nil
		}
	}
}

func (s *Store) pipelineWorker(ctx context.Context) {
	batch := make([]*scriptCall, 0, pipelineMax)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case c := <-s.pipe.queue:
			batch = append(batch, c)
		}
	fill:
		for len(batch) < pipelineMax {
			select {
			case c := <-s.pipe.queue:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		s.send(context.WithoutCancel(ctx), batch)
	}
}

// send runs a batch in one pipeline; a script Redis does not know yet
// (after a restart) is run again on its own, which loads it.
func (s *Store) send(ctx context.Context, batch []*scriptCall) {
	if len(batch) == 1 {
		c := batch[0]
		c.cmd = c.script.Run(ctx, s.rdb, s.keys, c.args...)
		close(c.done)
		return
	}
	pipe := s.rdb.Pipeline()
	for _, c := range batch {
		c.cmd = c.script.EvalSha(ctx, pipe, s.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range batch {
		if err := c.cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			c.cmd = c.script.Run(ctx, s.rdb, s.keys, c.args...)
		}
		close(c.done)
	}
}

// eval runs script through the pipeline workers when they run, directly
// otherwise. A caller that gives up waiting gets its context's error; its
// script may still run, as with any call whose answer was lost.
func (s *Store) eval(ctx context.Context, script *redis.Script, args []any) (any, error) {
	if !s.pipe.running.Load() {
		return script.Run(ctx, s.rdb, s.keys, args...).Result()
	}
	c := &scriptCall{script: script, args: args, done: make(chan struct{})}
	select {
	case s.pipe.queue <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-c.done:
		return c.cmd.Result()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
