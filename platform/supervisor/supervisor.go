// Package supervisor keeps a set of child processes running on one machine —
// restarting each after a crash with backoff, prefixing its output and stopping
// them all in order — the way Foreman or overmind run a Procfile; `mercato up`
// uses it to run every service as `mercato serve <service>` in its own process.
//
// The caller owns the signals: `up` cancels Run's context on SIGINT or SIGTERM
// (signal.NotifyContext), and Run then sends SIGTERM to every child. Children
// run in their own process groups, so a terminal's Ctrl-C reaches only the
// supervisor and the stop stays orderly; on Linux they also get SIGTERM if the
// supervisor dies without stopping them (Pdeathsig).
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrStopped is returned by WaitReady when Run returned before every process
// was ready.
var ErrStopped = errors.New("supervisor: stopped before every process was ready")

// Process describes one child to keep running.
type Process struct {
	// Name identifies the child in the supervisor's log and prefixes its
	// output, e.g. "catalog".
	Name string
	// Path is the executable.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Env is the child's full environment; nil means the supervisor's own.
	Env []string
	// Dir is the child's working directory; empty means the supervisor's.
	Dir string
	// Ready, if set, is polled after every start (e.g. an HTTP GET of
	// /readyz) until it returns nil; without it a child is ready once started.
	Ready func(ctx context.Context) error
}

// Options tune a Supervisor; the zero value gives the documented defaults.
type Options struct {
	// Out receives the children's output, one prefixed line per Write
	// (default os.Stdout). A slow Out slows the children once their pipes
	// fill, rather than losing lines.
	Out io.Writer
	// Color draws each prefix in its own ANSI colour; set it only when Out is
	// a terminal.
	Color bool
	// StopTimeout is the grace period between SIGTERM and SIGKILL (default 10s).
	StopTimeout time.Duration
	// MinBackoff is the delay before the first restart after a crash; it
	// doubles per consecutive crash up to MaxBackoff (defaults 200ms and 30s).
	MinBackoff time.Duration
	// MaxBackoff caps the restart delay.
	MaxBackoff time.Duration
	// StableAfter is how long a run must last for the next crash to count as
	// the first again (default 30s).
	StableAfter time.Duration
	// ReadyInterval is the pause between two calls of a Ready check (default
	// 100ms).
	ReadyInterval time.Duration
	// Log receives the supervisor's own events: started, ready, exited with
	// code or signal, restarting in X (default: discarded).
	Log *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.StableAfter == 0 {
		o.StableAfter = 30 * time.Second
	}
	if o.ReadyInterval == 0 {
		o.ReadyInterval = 100 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Validate reports options that cannot work; zero durations mean defaults.
func (o Options) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"StopTimeout", o.StopTimeout},
		{"MinBackoff", o.MinBackoff},
		{"MaxBackoff", o.MaxBackoff},
		{"StableAfter", o.StableAfter},
		{"ReadyInterval", o.ReadyInterval},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%s)", d.name, d.v))
		}
	}
	if o.MinBackoff > 0 && o.MaxBackoff > 0 && o.MinBackoff > o.MaxBackoff {
		errs = append(errs, fmt.Errorf("MinBackoff %s exceeds MaxBackoff %s", o.MinBackoff, o.MaxBackoff))
	}
	return errors.Join(errs...)
}

// State is where a process is in its lifecycle.
type State string

// The states a process moves through; Run starts each in StateStarting and
// leaves each in StateStopped.
const (
	StateStopped  State = "stopped"
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateBackoff  State = "backoff" // waiting to restart after an exit
	StateStopping State = "stopping"
)

// Exit is how one run of a child ended.
type Exit struct {
	// Code is the exit code, or -1 when a signal ended the child.
	Code int
	// Signal is the signal that ended the child, or 0.
	Signal syscall.Signal
	// At is when the child was reaped.
	At time.Time
	// Ran is how long the child ran.
	Ran time.Duration
}

// String reads like "exit code 1" or "signal killed".
func (e Exit) String() string {
	if e.Signal != 0 {
		return "signal " + e.Signal.String()
	}
	return fmt.Sprintf("exit code %d", e.Code)
}

// ProcessStatus is a snapshot of one process.
type ProcessStatus struct {
	// Name is the process's name as given to New.
	Name string
	// State is where the process is in its lifecycle.
	State State
	// PID is the running child's process ID, or 0 when none runs.
	PID int
	// Started is when the current or most recent child started.
	Started time.Time
	// Ready reports whether the current child has passed its Ready check.
	Ready bool
	// Restarts counts starts after the first, including failed ones.
	Restarts int
	// Backoff is the delay chosen before the pending or most recent restart.
	Backoff time.Duration
	// LastExit is how the most recent child ended, or nil.
	LastExit *Exit
	// StartErr is why the most recent start failed, or nil once one succeeds.
	StartErr error
}

// Supervisor runs a fixed set of processes; make one with New.
type Supervisor struct {
	opts    Options
	procs   []*proc
	out     *output
	running atomic.Bool
	done    chan struct{} // closed when Run returns
}

// New returns a supervisor for procs; it starts nothing until Run.
func New(opts Options, procs ...Process) *Supervisor {
	opts.setDefaults()
	s := &Supervisor{opts: opts, out: &output{w: opts.Out}, done: make(chan struct{})}
	width := 0
	for _, p := range procs {
		width = max(width, len(p.Name))
	}
	for i, p := range procs {
		s.procs = append(s.procs, &proc{
			spec:   p,
			prefix: prefix(p.Name, width, i, opts.Color),
			ready:  make(chan struct{}),
			st:     ProcessStatus{Name: p.Name, State: StateStopped},
		})
	}
	return s
}

// Run starts every process and keeps each running until ctx ends, restarting
// it after any exit. Then it sends SIGTERM to every child at once, SIGKILLs
// those still running after StopTimeout, and returns nil once all have exited
// and been reaped. It returns an error only for a bad configuration, or when
// called more than once.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("supervisor: Run called more than once")
	}
	defer close(s.done)
	if err := s.validate(); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	starts := make(chan startRequest)
	launched := make(chan struct{})
	go func() {
		defer close(launched)
		launch(starts)
	}()
	var wg sync.WaitGroup
	for _, p := range s.procs {
		wg.Go(func() { s.supervise(ctx, p, starts) })
	}
	wg.Wait()
	close(starts)
	<-launched
	return nil
}

func (s *Supervisor) validate() error {
	errs := []error{s.opts.Validate()}
	seen := map[string]bool{}
	for i, p := range s.procs {
		switch name := p.spec.Name; {
		case name == "":
			errs = append(errs, fmt.Errorf("process %d has no name", i))
		case strings.ContainsAny(name, "\r\n"):
			errs = append(errs, fmt.Errorf("process name %q spans lines", name))
		case seen[name]:
			errs = append(errs, fmt.Errorf("process name %q is used twice", name))
		default:
			seen[name] = true
		}
		if p.spec.Path == "" {
			errs = append(errs, fmt.Errorf("process %q has no Path", p.spec.Name))
		}
	}
	return errors.Join(errs...)
}

// WaitReady blocks until every process has been ready at least once, so `up`
// prints its URLs only when the platform answers. It returns ctx's error if
// ctx ends first, and ErrStopped if Run returns first.
func (s *Supervisor) WaitReady(ctx context.Context) error {
	for _, p := range s.procs {
		select {
		case <-p.ready:
			continue
		default:
		}
		select {
		case <-p.ready:
		case <-ctx.Done():
			return fmt.Errorf("supervisor: waiting for %s to be ready: %w", p.spec.Name, ctx.Err())
		case <-s.done:
			select {
			case <-p.ready:
			default:
				return fmt.Errorf("%w (%s is not)", ErrStopped, p.spec.Name)
			}
		}
	}
	return nil
}

// Status reports every process in the order given to New.
func (s *Supervisor) Status() []ProcessStatus {
	out := make([]ProcessStatus, len(s.procs))
	for i, p := range s.procs {
		out[i] = p.status()
	}
	return out
}

// backoff is the delay before a restart after n earlier consecutive crashes:
// lo doubled n times, capped at hi.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for range n {
		if d > hi/2 {
			return hi
		}
		d *= 2
	}
	return min(d, hi)
}
