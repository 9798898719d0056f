package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/lifecycle"
	"github.com/mercato/mercato/platform/platformtest"
)

// wait bounds every wait for something that should happen; it is generous
// because tests must not depend on the machine's speed.
const wait = 30 * time.Second

// journal records what happened, in order, from several goroutines.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, fmt.Sprintf(format, args...))
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

func newGroup(t *testing.T) (*lifecycle.Group, *platformtest.Buffer) {
	t.Helper()
	logs := &platformtest.Buffer{}
	return lifecycle.New(slog.New(slog.NewTextHandler(logs, nil))), logs
}

// closeCtx is the close context the tests pass to Run.
func closeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), wait)
}

// runGroup runs g in the background and returns a channel with Run's result.
func runGroup(ctx context.Context, g *lifecycle.Group, closeCtx func() (context.Context, context.CancelFunc)) <-chan error {
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, closeCtx) }()
	return done
}

// result waits for Run to return.
func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(wait):
		t.Fatalf("Run did not return within %v", wait)
		return nil
	}
}

// waitFor waits until ch is closed, failing the test after wait.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(wait):
		t.Fatalf("timed out after %v waiting for %s", wait, what)
	}
}

// blocking is a well-behaved part: it notes its start, runs until ctx ends
// and returns nil.
func blocking(j *journal, name string, started chan<- struct{}) func(context.Context) error {
	return func(ctx context.Context) error {
		j.add("%s started", name)
		if started != nil {
			close(started)
		}
		<-ctx.Done()
		j.add("%s stopped", name)
		return nil
	}
}

func TestPartsRunConcurrently(t *testing.T) {
	g, _ := newGroup(t)
	aStarted, bStarted := make(chan struct{}), make(chan struct{})
	// Each part waits for the other to start: run one after the other, they
	// would each give up and fail the group.
	meet := func(mine chan struct{}, other <-chan struct{}) func(context.Context) error {
		return func(ctx context.Context) error {
			close(mine)
			select {
			case <-other:
			case <-time.After(wait):
				return errors.New("the other part never started")
			}
			<-ctx.Done()
			return nil
		}
	}
	g.Go("a", meet(aStarted, bStarted))
	g.Go("b", meet(bStarted, aStarted))

	ctx, cancel := context.WithCancel(context.Background())
	done := runGroup(ctx, g, closeCtx)
	waitFor(t, aStarted, "a to start")
	waitFor(t, bStarted, "b to start")
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while its parts run", err)
	default:
	}
	cancel()
	if err := result(t, done); err != nil {
		t.Errorf("Run = %v, want nil after ctx ended", err)
	}
}

func TestFirstFailureStopsTheGroup(t *testing.T) {
	boom := errors.New("connection lost")
	g, logs := newGroup(t)
	j := &journal{}
	others := make(chan struct{})
	g.Go("http", blocking(j, "http", others))
	g.Go("relay", func(ctx context.Context) error {
		<-ctx.Done()
		j.add("relay stopped")
		return errors.New("relay: stopped uncleanly") // after the failure: not the group's error
	})
	g.Go("db", func(ctx context.Context) error {
		<-others
		return boom
	})
	g.Defer("pool", func(context.Context) error { j.add("pool closed"); return nil })

	err := result(t, runGroup(context.Background(), g, closeCtx))
	if !errors.Is(err, boom) || err.Error() != "db: connection lost" {
		t.Errorf("Run = %v, want the failing part's error wrapped with its name", err)
	}
	got := j.list()
	for _, want := range []string{"http stopped", "relay stopped", "pool closed"} {
		if !contains(got, want) {
			t.Errorf("journal %q lacks %q", got, want)
		}
	}
	if got[len(got)-1] != "pool closed" {
		t.Errorf("journal %q: closers must run after every part stopped", got)
	}
	if !strings.Contains(logs.String(), "part failed; stopping") || !strings.Contains(logs.String(), "part=db") {
		t.Errorf("the failure was not logged:\n%s", logs.String())
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestAPartThatReturnsEarlyStopsTheGroup(t *testing.T) {
	g, _ := newGroup(t)
	j := &journal{}
	started := make(chan struct{})
	g.Go("server", blocking(j, "server", started))
	g.Go("oneshot", func(ctx context.Context) error {
		<-started
		return nil
	})
	if err := result(t, runGroup(context.Background(), g, closeCtx)); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if got := j.list(); !contains(got, "server stopped") {
		t.Errorf("journal %q: the server was not stopped", got)
	}
}

func TestCancellationIsNotAFailure(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr bool
	}{
		{"nil", nil, false},
		{"context.Canceled", context.Canceled, false},
		{"wrapped context.Canceled", fmt.Errorf("consume: %w", context.Canceled), false},
		{"context.DeadlineExceeded", context.DeadlineExceeded, true},
		{"another error", errors.New("broken"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, logs := newGroup(t)
			g.Go("worker", func(ctx context.Context) error {
				<-ctx.Done()
				return tt.err
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := runGroup(ctx, g, closeCtx)
			cancel()
			err := result(t, done)
			if (err != nil) != tt.wantErr {
				t.Errorf("Run = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr && !errors.Is(err, tt.err) {
				t.Errorf("Run = %v, want it to wrap %v", err, tt.err)
			}
			if logged := strings.Contains(logs.String(), "part failed"); logged != tt.wantErr {
				t.Errorf("failure logged = %v, want %v:\n%s", logged, tt.wantErr, logs.String())
			}
		})
	}
}

type closeKey struct{}

func TestClosersRunAfterThePartsInReverseOrder(t *testing.T) {
	g, logs := newGroup(t)
	j := &journal{}
	aStarted, bStarted := make(chan struct{}), make(chan struct{})
	g.Go("a", blocking(j, "a", aStarted))
	g.Go("b", blocking(j, "b", bStarted))
	closer := func(name string, err error) func(context.Context) error {
		return func(ctx context.Context) error {
			switch {
			case ctx.Value(closeKey{}) != "close":
				j.add("%s got another context", name)
			case ctx.Err() != nil:
				j.add("%s got an ended context", name)
			default:
				j.add("%s closed", name)
			}
			return err
		}
	}
	g.Defer("tracing", closer("tracing", nil))
	g.Defer("postgres", closer("postgres", errors.New("pool busy")))
	g.Defer("redis", closer("redis", nil))

	var cancelled bool
	var mu sync.Mutex
	closeCtx := func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), closeKey{}, "close"))
		return ctx, func() {
			mu.Lock()
			cancelled = true
			mu.Unlock()
			j.add("close context cancelled")
			cancel()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := runGroup(ctx, g, closeCtx)
	waitFor(t, aStarted, "a to start")
	waitFor(t, bStarted, "b to start")
	if got := j.list(); len(got) != 2 {
		t.Fatalf("journal %q: something closed while the parts run", got)
	}
	cancel()
	if err := result(t, done); err != nil {
		t.Errorf("Run = %v, want nil (a failing closer is only logged)", err)
	}

	got := j.list()
	if len(got) != 8 {
		t.Fatalf("journal = %q, want 2 starts, 2 stops, 3 closes and the cancel", got)
	}
	stops := got[2:4]
	if !contains(stops, "a stopped") || !contains(stops, "b stopped") {
		t.Errorf("journal %q: both parts must stop before any closer runs", got)
	}
	want := []string{"redis closed", "postgres closed", "tracing closed", "close context cancelled"}
	if !reflect.DeepEqual(got[4:], want) {
		t.Errorf("closers ran as %q, want %q", got[4:], want)
	}
	mu.Lock()
	defer mu.Unlock()
	if !cancelled {
		t.Error("the close context's cancel func was not called")
	}
	if !strings.Contains(logs.String(), "close failed") || !strings.Contains(logs.String(), "pool busy") {
		t.Errorf("the failing closer was not logged:\n%s", logs.String())
	}
}

func TestCloseRunsClosersWithoutParts(t *testing.T) {
	g, _ := newGroup(t)
	j := &journal{}
	g.Go("server", func(context.Context) error {
		j.add("server ran")
		return nil
	})
	for _, name := range []string{"first", "second", "third"} {
		g.Defer(name, func(ctx context.Context) error {
			if ctx.Value(closeKey{}) != "given" {
				j.add("%s got another context", name)
			}
			j.add("%s closed", name)
			return nil
		})
	}
	g.Close(context.WithValue(context.Background(), closeKey{}, "given"))
	want := []string{"third closed", "second closed", "first closed"}
	if got := j.list(); !reflect.DeepEqual(got, want) {
		t.Errorf("journal = %q, want %q", got, want)
	}
}

func TestRunWithoutPartsRunsTheClosers(t *testing.T) {
	g, _ := newGroup(t)
	j := &journal{}
	g.Defer("only", func(context.Context) error { j.add("closed"); return nil })
	if err := result(t, runGroup(context.Background(), g, closeCtx)); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if got := j.list(); !reflect.DeepEqual(got, []string{"closed"}) {
		t.Errorf("journal = %q, want the closer run", got)
	}
}
