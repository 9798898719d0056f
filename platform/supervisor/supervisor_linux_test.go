//go:build linux

package supervisor

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/platformtest"
)

// These tests check what only Linux promises: Pdeathsig, and a child's group
// cleared before the child is reaped.

func TestGrandchildrenDoNotOutliveTheChild(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		// end makes the child go away: by crashing or by the supervisor stopping.
		end func(t *testing.T, h *harness)
	}{
		{"child crashes", []string{envAfter + "=100ms"}, func(t *testing.T, h *harness) {
			platformtest.Eventually(t, "the child's exit to be logged", func() bool { return len(h.logs.find("exited", "spawn")) > 0 })
		}},
		{"supervisor stops", nil, func(t *testing.T, h *harness) {
			if err := h.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// The child waits for its grandchild, so it exits in time only
			// if SIGTERM went to the whole group.
			if e := h.status(t, "spawn").LastExit; e == nil || e.Code != 0 {
				t.Errorf("LastExit = %v, want exit code 0", e)
			}
			if len(h.logs.find("did not stop in time; killing", "spawn")) != 0 {
				t.Errorf("the child had to be killed")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startSupervisor(t, Options{MinBackoff: time.Hour, MaxBackoff: time.Hour, StopTimeout: 10 * time.Second}, child(t, "spawn", tt.env...))
			var grandchild int
			platformtest.Eventually(t, "the grandchild's pid", func() bool {
				for _, w := range h.out.Writes() {
					if s, ok := strings.CutPrefix(w, "spawn | grandchild "); ok {
						grandchild, _ = strconv.Atoi(strings.TrimSpace(s))
						return true
					}
				}
				return false
			})
			t.Cleanup(func() { _ = syscall.Kill(grandchild, syscall.SIGKILL) })
			tt.end(t, h)
			platformtest.Eventually(t, "the grandchild to die", func() bool { return dead(t, grandchild) })
		})
	}
}

func TestChildrenDieWithTheSupervisor(t *testing.T) {
	// The supervisor runs in a child process so that the test can SIGKILL it.
	sup := exec.Command(os.Args[0])
	sup.Env = childEnv("supervisor")
	sup.Stderr = os.Stderr
	stdout, err := sup.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sup.Process.Kill()
		_ = sup.Wait()
	})
	pids := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "child "); ok {
				pid, _ := strconv.Atoi(s)
				pids <- pid
				return
			}
		}
		close(pids)
	}()
	var pid int
	select {
	case pid = <-pids:
	case <-time.After(patience):
		t.Fatal("supervisor did not report its child")
	}
	if pid == 0 {
		t.Fatal("supervisor exited without reporting its child")
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })

	if err := sup.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sup.Wait()
	platformtest.Eventually(t, "the orphaned child to die", func() bool { return dead(t, pid) })
}

func TestChildSurvivesOSThreadExits(t *testing.T) {
	// Linux sends Pdeathsig when the thread that forked the child exits, and
	// Go ends a thread when a goroutine locked to it exits. Find the thread
	// that forked the child and try to land locked goroutines on it and
	// exit there: it must be out of reach, held by the supervisor.
	h := startSupervisor(t, Options{}, child(t, "sleep"))
	h.waitReady(t)
	pid := h.status(t, "sleep").PID
	forker := forkingThread(t, pid)

	landed := false
	for range 200 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 4 {
			wg.Go(func() {
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
				if syscall.Gettid() == forker {
					mu.Lock()
					landed = true
					mu.Unlock()
				}
				time.Sleep(100 * time.Microsecond) // hold the thread so the others need theirs
			})
		}
		wg.Wait()
		if landed {
			break
		}
	}
	if landed && forker != os.Getpid() { // the main thread is never ended
		platformtest.Eventually(t, "a SIGTERM sent wrongly to land", func() bool {
			return h.status(t, "sleep").PID != pid
		})
		t.Fatalf("a goroutine ran on the thread that forked the child; Status = %+v", h.status(t, "sleep"))
	}
	if st := h.status(t, "sleep"); st.PID != pid || st.Restarts != 0 {
		t.Fatalf("Status = %+v, want pid %d still running", st, pid)
	}
	if err := h.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertReaped(t, pid)
}

// forkingThread returns the ID of the test process's thread that forked pid.
func forkingThread(t *testing.T, pid int) int {
	t.Helper()
	files, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil || len(files) == 0 {
		t.Skipf("no /proc/self/task/*/children (%v)", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		if slices.Contains(strings.Fields(string(b)), strconv.Itoa(pid)) {
			tid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			if err != nil {
				t.Fatal(err)
			}
			return tid
		}
	}
	t.Fatalf("no thread of this process is the parent of %d", pid)
	return 0
}
