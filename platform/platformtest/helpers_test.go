package platformtest_test

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/platformtest"
)

func TestBufferKeepsConcurrentWrites(t *testing.T) {
	var b platformtest.Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
	b.Reset()
	_, _ = b.Write([]byte("after"))
	if b.String() != "after" {
		t.Fatalf("after Reset and Write: %q", b.String())
	}
}

func TestClosedAddrRefusesConnections(t *testing.T) {
	addr := platformtest.ClosedAddr(t)
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("ClosedAddr = %q, want 127.0.0.1:port", addr)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dialled %s: something listens", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s later: %v", addr, err)
	}
	ln.Close()
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the calling goroutine, as t.Fatalf does, without failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with a fatalRecorder in its own goroutine and returns the
// Fatalf message, if any.
func run(t *testing.T, fn func(testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r.msg
}

func TestEventuallyWithin(t *testing.T) {
	t.Run("returns once the condition holds", func(t *testing.T) {
		calls := 0
		var took time.Duration
		msg := run(t, func(tb testing.TB) {
			took = platformtest.EventuallyWithin(tb, 10*time.Second, "the third call", func() bool { calls++; return calls == 3 })
		})
		if msg != "" || calls != 3 || took <= 0 || took > 5*time.Second {
			t.Fatalf("failed with %q after %d calls in %v", msg, calls, took)
		}
	})
	t.Run("fails at the deadline", func(t *testing.T) {
		start := time.Now()
		msg := run(t, func(tb testing.TB) {
			platformtest.EventuallyWithin(tb, 100*time.Millisecond, "never", func() bool { return false })
		})
		if took := time.Since(start); took < 100*time.Millisecond {
			t.Errorf("gave up after %v, before the deadline", took)
		}
		if want := "never: not within 100ms"; msg != want {
			t.Errorf("failure %q, want %q", msg, want)
		}
	})
}
