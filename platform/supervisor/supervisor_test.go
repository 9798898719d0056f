package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/platformtest"
)

func TestBackoff(t *testing.T) {
	const lo, hi = 200 * time.Millisecond, 30 * time.Second
	tests := []struct {
		crashes int
		want    time.Duration
	}{
		{0, lo},
		{1, 2 * lo},
		{2, 4 * lo},
		{7, 128 * lo},
		{8, hi}, // 256 * 200ms = 51.2s
		{1000, hi},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.crashes), func(t *testing.T) {
			if got := backoff(lo, hi, tt.crashes); got != tt.want {
				t.Errorf("backoff(%s, %s, %d) = %s, want %s", lo, hi, tt.crashes, got, tt.want)
			}
		})
	}
	t.Run("min equals max", func(t *testing.T) {
		if got := backoff(time.Second, time.Second, 3); got != time.Second {
			t.Errorf("got %s, want 1s", got)
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"zero means defaults", Options{}, ""},
		{"negative", Options{StopTimeout: -time.Second}, "StopTimeout is negative"},
		{"min above max", Options{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff 1s exceeds MaxBackoff 1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate = %v, want it to say %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunRejectsBadProcesses(t *testing.T) {
	tests := []struct {
		name    string
		procs   []Process
		wantErr string
	}{
		{"no name", []Process{{Path: "/bin/true"}}, "has no name"},
		{"duplicate name", []Process{{Name: "a", Path: "/bin/true"}, {Name: "a", Path: "/bin/true"}}, `"a" is used twice`},
		{"no path", []Process{{Name: "a"}}, `"a" has no Path`},
		{"name with newline", []Process{{Name: "a\nb", Path: "/bin/true"}}, "spans lines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{}, tt.procs...)
			err := s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run = %v, want it to say %q", err, tt.wantErr)
			}
			if err := s.WaitReady(context.Background()); !errors.Is(err, ErrStopped) {
				t.Errorf("WaitReady after Run = %v, want ErrStopped", err)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	h := startSupervisor(t, Options{}, child(t, "sleep"))
	h.waitReady(t)
	if err := h.s.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil")
	}
}

func TestStatusBeforeRun(t *testing.T) {
	s := New(Options{}, Process{Name: "a", Path: "/bin/true"}, Process{Name: "b", Path: "/bin/true"})
	got := s.Status()
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Fatalf("Status = %+v, want a and b in order", got)
	}
	for _, st := range got {
		if st.State != StateStopped || st.PID != 0 || st.LastExit != nil {
			t.Errorf("Status(%s) = %+v, want stopped with nothing run", st.Name, st)
		}
	}
}

func TestOutputIsPrefixedWholeLines(t *testing.T) {
	const lines = 200
	h := startSupervisor(t, Options{},
		child(t, "echo", envLines+"="+strconv.Itoa(lines)),
		Process{Name: "echo2", Path: os.Args[0], Env: childEnv("echo", envLines+"="+strconv.Itoa(lines))},
	)
	platformtest.Eventually(t, "both children echoed", func() bool {
		return h.out.Has("echo  | echoed\n") && h.out.Has("echo2 | echoed\n")
	})
	pids := []int{h.status(t, "echo").PID, h.status(t, "echo2").PID}
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, pid := range pids {
		assertReaped(t, pid)
	}

	seen := map[string]bool{}
	for _, w := range h.out.Writes() {
		if strings.Count(w, "\n") != 1 || !strings.HasSuffix(w, "\n") {
			t.Fatalf("write %q is not exactly one line", w)
		}
		if !strings.HasPrefix(w, "echo  | ") && !strings.HasPrefix(w, "echo2 | ") {
			t.Fatalf("write %q lacks a prefix", w)
		}
		seen[w] = true
	}
	for _, p := range []string{"echo  | ", "echo2 | "} {
		for i := range lines {
			for _, stream := range []string{"/dev/stdout", "/dev/stderr"} {
				if line := fmt.Sprintf("%s%s %d\n", p, stream, i); !seen[line] {
					t.Fatalf("missing line %q", line)
				}
			}
		}
		// Written after SIGTERM: output is drained before Run returns.
		for i := range byeLines {
			if line := fmt.Sprintf("%sbye %d\n", p, i); !seen[line] {
				t.Fatalf("missing line %q written before the child exited", line)
			}
		}
	}
	for _, st := range h.s.Status() {
		if st.State != StateStopped || st.PID != 0 || st.Restarts != 0 {
			t.Errorf("Status(%s) = %+v, want stopped without restarts", st.Name, st)
		}
		if st.LastExit == nil || st.LastExit.Code != 0 {
			t.Errorf("Status(%s).LastExit = %v, want exit code 0", st.Name, st.LastExit)
		}
	}
}

func TestExitedChildIsRestartedWithGrowingBackoff(t *testing.T) {
	tests := []struct {
		name     string
		code     string
		wantExit string
	}{
		{"crash", "3", "exit code 3"},
		{"clean exit", "0", "exit code 0"},
		{"killed", "kill", "signal killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startSupervisor(t, Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond, StableAfter: time.Hour},
				child(t, "crash", envAfter+"=10ms", envCode+"="+tt.code))
			platformtest.Eventually(t, "4 restarts", func() bool { return h.status(t, "crash").Restarts >= 4 })
			if err := h.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}

			var delays []time.Duration
			for _, r := range h.logs.find("restarting", "crash") {
				delays = append(delays, r.attrs["in"].Duration())
			}
			want := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 80 * time.Millisecond}
			if len(delays) < len(want) {
				t.Fatalf("restart delays %v, want at least %v", delays, want)
			}
			for i, d := range want {
				if delays[i] != d {
					t.Errorf("restart delays %v, want them to start %v", delays, want)
					break
				}
			}
			exits := h.logs.find("exited", "crash")
			if len(exits) < 4 {
				t.Fatalf("%d exits logged, want at least 4", len(exits))
			}
			for _, r := range exits[:4] {
				if got := r.attrs["exit"].String(); got != tt.wantExit {
					t.Errorf("exit logged as %q, want %q", got, tt.wantExit)
				}
			}
			starts := h.logs.find("started", "crash")
			if len(starts) < 5 {
				t.Errorf("%d starts logged, want at least 5", len(starts))
			}
			for _, r := range starts {
				assertReaped(t, int(r.attrs["pid"].Int64()))
			}
			if st := h.status(t, "crash"); st.State != StateStopped || st.LastExit == nil || st.Backoff != 80*time.Millisecond {
				t.Errorf("Status = %+v, want stopped, with a last exit and an 80ms backoff", st)
			}
		})
	}
}

func TestBackoffResetsAfterStableRun(t *testing.T) {
	// Each run lasts at least 150ms, longer than StableAfter, so every crash
	// counts as the first.
	h := startSupervisor(t, Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: time.Second, StableAfter: 50 * time.Millisecond},
		child(t, "crash", envAfter+"=150ms", envCode+"=1"))
	platformtest.Eventually(t, "3 restarts", func() bool { return h.status(t, "crash").Restarts >= 3 })
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	restarts := h.logs.find("restarting", "crash")
	if len(restarts) < 3 {
		t.Fatalf("%d restarts logged, want at least 3", len(restarts))
	}
	for _, r := range restarts {
		if d := r.attrs["in"].Duration(); d != 20*time.Millisecond {
			t.Errorf("restart delay %s, want the minimum 20ms every time", d)
		}
	}
}

func TestStopKillsChildThatIgnoresSIGTERM(t *testing.T) {
	const stopTimeout = 300 * time.Millisecond
	mark := filepath.Join(t.TempDir(), "ignoring")
	p := child(t, "ignore-term", envFile+"="+mark)
	p.Ready = fileExists(mark)
	h := startSupervisor(t, Options{StopTimeout: stopTimeout}, p, child(t, "sleep"))
	h.waitReady(t)
	pids := []int{h.status(t, "ignore-term").PID, h.status(t, "sleep").PID}

	began := time.Now()
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(began); took < stopTimeout {
		t.Errorf("Run returned %s after the stop, before StopTimeout %s", took, stopTimeout)
	}
	for _, pid := range pids {
		assertReaped(t, pid)
	}
	if e := h.status(t, "ignore-term").LastExit; e == nil || e.Signal != syscall.SIGKILL {
		t.Errorf("ignore-term LastExit = %v, want signal killed", e)
	}
	// The sleep child may not have asked for SIGTERM yet, and so die of it.
	if e := h.status(t, "sleep").LastExit; e == nil || (e.Code != 0 && e.Signal != syscall.SIGTERM) {
		t.Errorf("sleep LastExit = %v, want exit code 0 or signal terminated", e)
	}
	if n := len(h.logs.find("did not stop in time; killing", "ignore-term")); n != 1 {
		t.Errorf("kill logged %d times, want once", n)
	}
	if n := len(h.logs.find("did not stop in time; killing", "sleep")); n != 0 {
		t.Errorf("sleep was killed, want it stopped by SIGTERM")
	}
}

func TestLongLineArrivesWhole(t *testing.T) {
	h := startSupervisor(t, Options{}, child(t, "long-line"))
	platformtest.Eventually(t, "the line after the long one", func() bool { return h.out.Has("long-line | done\n") })
	want := "long-line | " + strings.Repeat("0123456789abcdef", longLineBytes/16) + "\n"
	if !h.out.Has(want) {
		var sizes []int
		for _, w := range h.out.Writes() {
			sizes = append(sizes, len(w))
		}
		t.Fatalf("no write is the whole %d-byte line with its prefix; writes had sizes %v", len(want), sizes)
	}
}

func TestWaitReady(t *testing.T) {
	addrFile := filepath.Join(t.TempDir(), "addr")
	var calls atomic.Int32
	listen := child(t, "listen", envAfter+"=300ms", envFile+"="+addrFile)
	check := portOpen(addrFile)
	listen.Ready = func(ctx context.Context) error {
		calls.Add(1)
		return check(ctx)
	}
	h := startSupervisor(t, Options{ReadyInterval: 20 * time.Millisecond}, listen, child(t, "sleep"))

	h.waitReady(t)
	if n := calls.Load(); n < 2 {
		t.Errorf("Ready called %d times, want it polled until the child listened 300ms after start", n)
	}
	for _, st := range h.s.Status() {
		if !st.Ready || st.State != StateRunning {
			t.Errorf("Status(%s) = %+v, want running and ready", st.Name, st)
		}
	}
	if len(h.logs.find("ready", "listen")) != 1 {
		t.Errorf("ready not logged once for listen")
	}
}

func TestWaitReadyGivesUp(t *testing.T) {
	never := child(t, "sleep")
	never.Ready = func(context.Context) error { return errors.New("not yet") }
	h := startSupervisor(t, Options{ReadyInterval: 10 * time.Millisecond}, never)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.s.WaitReady(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady = %v, want context.DeadlineExceeded", err)
	}
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := h.s.WaitReady(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("WaitReady after Run = %v, want ErrStopped", err)
	}
}

func TestStartFailureIsRetried(t *testing.T) {
	missing := Process{Name: "missing", Path: filepath.Join(t.TempDir(), "no-such-binary")}
	h := startSupervisor(t, Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}, missing)
	platformtest.Eventually(t, "2 restarts", func() bool { return h.status(t, "missing").Restarts >= 2 })
	st := h.status(t, "missing")
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !errors.Is(st.StartErr, os.ErrNotExist) {
		t.Errorf("StartErr = %v, want it to wrap os.ErrNotExist", st.StartErr)
	}
	if len(h.logs.find("start failed", "missing")) < 2 {
		t.Errorf("start failures not logged")
	}
}

// fileExists is a Ready check that passes once path exists.
func fileExists(path string) func(context.Context) error {
	return func(context.Context) error {
		_, err := os.Stat(path)
		return err
	}
}

// portOpen is a Ready check that passes once the address written to addrFile
// accepts connections.
func portOpen(addrFile string) func(context.Context) error {
	return func(ctx context.Context) error {
		addr, err := os.ReadFile(addrFile)
		if err != nil {
			return err
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", string(addr))
		if err != nil {
			return err
		}
		return c.Close()
	}
}
