package supervisor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// patience bounds every wait in these tests: generous, because a loaded
// machine running the race detector can be slow, and a correct run never
// waits that long.
const patience = 30 * time.Second

// harness is a supervisor running in the background of one test.
type harness struct {
	s        *Supervisor
	out      *writeRecorder
	logs     *logRecorder
	cancel   context.CancelFunc
	finished chan struct{}
	runErr   error
}

// startSupervisor runs a supervisor for procs until the test stops it or
// ends, recording its output and log, and checks after the test that no
// goroutine of the package is left.
func startSupervisor(t *testing.T, opts Options, procs ...Process) *harness {
	t.Helper()
	checkNoLeaks(t)
	h := &harness{out: &writeRecorder{}, logs: &logRecorder{}, finished: make(chan struct{})}
	if opts.Out == nil {
		opts.Out = h.out
	}
	opts.Log = slog.New(recordHandler{rec: h.logs})
	h.s = New(opts, procs...)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer close(h.finished)
		h.runErr = h.s.Run(ctx)
	}()
	t.Cleanup(func() {
		if err := h.stop(t); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("supervisor log:\n%s", h.logs)
		}
	})
	return h
}

// stop cancels Run's context and returns Run's result.
func (h *harness) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	select {
	case <-h.finished:
		return h.runErr
	case <-time.After(patience):
		t.Fatal("Run did not return after its context ended")
		return nil
	}
}

// waitReady waits for every process to be ready.
func (h *harness) waitReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := h.s.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
}

// status returns the status of the process called name.
func (h *harness) status(t *testing.T, name string) ProcessStatus {
	t.Helper()
	for _, st := range h.s.Status() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no process %q in Status", name)
	return ProcessStatus{}
}

// assertReaped fails unless pid is gone entirely: neither running nor a
// zombie, which kill(pid, 0) would still find.
func assertReaped(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("bad pid %d", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Run returned (kill: %v)", pid, err)
	}
}

// dead reports whether pid has exited. It accepts a zombie: a process
// reparented away from the test is reaped by init, on its own schedule.
func dead(t *testing.T, pid int) bool {
	t.Helper()
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain ") ".
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	fields := strings.Fields(string(rest))
	return len(fields) > 0 && fields[0] == "Z"
}

// checkNoLeaks fails the test if, once it and its other cleanups are done,
// a goroutine is still running the package's code.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		var leaked []string
		deadline := time.Now().Add(patience)
		for {
			leaked = packageGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	})
}

// packageGoroutines returns the stacks of goroutines, other than the
// caller's, that run the supervisor's own functions.
func packageGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	const pkg = "mercato/platform/supervisor."
	var found []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the calling goroutine
		}
		for _, fn := range []string{"(*Supervisor)", "(*proc)", "(*output)", "launch", "drain"} {
			if strings.Contains(g, pkg+fn) {
				found = append(found, g)
				break
			}
		}
	}
	return found
}

// writeRecorder is an io.Writer that keeps every Write call apart.
type writeRecorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

// Writes returns a copy of every Write so far.
func (w *writeRecorder) Writes() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.writes))
	for i, p := range w.writes {
		out[i] = string(p)
	}
	return out
}

// Has reports whether some Write was exactly line.
func (w *writeRecorder) Has(line string) bool {
	return slices.Contains(w.Writes(), line)
}

// logRecorder keeps the supervisor's log records.
type logRecorder struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct {
	msg   string
	attrs map[string]slog.Value
}

// find returns the records with message msg for process.
func (l *logRecorder) find(msg, process string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range l.recs {
		if r.msg == msg && r.attrs["process"].String() == process {
			out = append(out, r)
		}
	}
	return out
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.recs {
		b.WriteString(r.msg)
		for _, k := range slices.Sorted(maps.Keys(r.attrs)) {
			b.WriteString(" " + k + "=" + r.attrs[k].String())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// recordHandler is a slog.Handler that feeds a logRecorder.
type recordHandler struct {
	rec   *logRecorder
	attrs []slog.Attr
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]slog.Value{}
	for _, a := range h.attrs {
		attrs[a.Key] = a.Value
	}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value
		return true
	})
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	h.rec.recs = append(h.rec.recs, logRecord{msg: r.Message, attrs: attrs})
	return nil
}

func (h recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordHandler{rec: h.rec, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h recordHandler) WithGroup(string) slog.Handler { return h }
