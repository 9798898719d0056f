package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run real children: the test binary re-executed with envChild set
// to one of the modes below, which TestMain dispatches to instead of the tests.
const (
	envChild = "SUPERVISOR_TEST_CHILD"
	envAfter = "SUPERVISOR_TEST_AFTER" // a duration for crash, listen and spawn
	envCode  = "SUPERVISOR_TEST_CODE"  // crash's exit code, or "kill" to SIGKILL itself
	envFile  = "SUPERVISOR_TEST_FILE"  // where ignore-term and listen leave their mark
	envLines = "SUPERVISOR_TEST_LINES" // how many lines echo writes to each stream
)

const (
	// longLineBytes is the size of the line the long-line child writes.
	longLineBytes = 1 << 20
	// byeLines is how many lines echo writes after SIGTERM: far more than a
	// pipe holds.
	byeLines = 20000
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

// child returns a Process that runs this test binary in mode with extra
// environment variables, named after the mode.
func child(t *testing.T, mode string, env ...string) Process {
	t.Helper()
	return Process{Name: mode, Path: os.Args[0], Env: childEnv(mode, env...)}
}

// childEnv is the environment of a child in mode. Under the race detector a
// child would otherwise sleep a second in os.Exit (GORACE atexit_sleep_ms
// defaults to 1000), which reads as a child slow to stop.
func childEnv(mode string, env ...string) []string {
	return append(os.Environ(), append([]string{
		envChild + "=" + mode,
		"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
	}, env...)...)
}

func runChild(mode string) int {
	// Asked for before anything is printed: a test that saw a child's output
	// may stop it, and the child must then exit in its own way.
	terminated := make(chan os.Signal, 1)
	signal.Notify(terminated, syscall.SIGTERM)
	switch mode {
	case "sleep":
		<-terminated
		return 0
	case "echo":
		// Each line goes out in three writes, so the supervisor has to
		// assemble lines rather than pass writes through.
		n, _ := strconv.Atoi(os.Getenv(envLines))
		for i := range n {
			for _, f := range []*os.File{os.Stdout, os.Stderr} {
				_, _ = f.WriteString(f.Name() + " ")
				_, _ = f.WriteString(strconv.Itoa(i))
				_, _ = f.WriteString("\n")
			}
		}
		fmt.Println("echoed")
		<-terminated
		// Exit with the pipe full, so lines are lost unless the supervisor
		// reads them all after the exit.
		for i := range byeLines {
			fmt.Println("bye", i)
		}
		return 0
	case "crash":
		time.Sleep(envDuration(envAfter))
		if os.Getenv(envCode) == "kill" {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		code, _ := strconv.Atoi(os.Getenv(envCode))
		fmt.Println("crashing with", code)
		return code
	case "ignore-term":
		signal.Reset(syscall.SIGTERM)
		signal.Ignore(syscall.SIGTERM)
		writeFileAtomic(os.Getenv(envFile), "ignoring")
		time.Sleep(time.Hour)
		return 0
	case "long-line":
		line := strings.Repeat("0123456789abcdef", longLineBytes/16)
		_, _ = os.Stdout.WriteString(line + "\ndone\n")
		<-terminated
		return 0
	case "listen":
		time.Sleep(envDuration(envAfter))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		writeFileAtomic(os.Getenv(envFile), ln.Addr().String())
		<-terminated
		return 0
	case "spawn":
		// The grandchild shares this child's stdout and process group but
		// has no Pdeathsig: only the supervisor's group signals reach it.
		gc := exec.Command(os.Args[0])
		gc.Env = childEnv("sleep")
		gc.Stdout = os.Stdout
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("grandchild", gc.Process.Pid)
		if os.Getenv(envAfter) != "" {
			time.Sleep(envDuration(envAfter))
			return 1
		}
		// A well-behaved parent: on SIGTERM, wait for the grandchild, which
		// got SIGTERM too if it was sent to the whole group.
		<-terminated
		_ = gc.Wait()
		return 0
	case "supervisor":
		return runSupervisorChild()
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

// runSupervisorChild runs a supervisor with one sleeping child, prints the
// child's pid once it runs, and waits to be killed.
func runSupervisorChild() int {
	p := Process{Name: "sleep", Path: os.Args[0], Env: childEnv("sleep")}
	s := New(Options{Out: os.Stderr}, p)
	go func() { _ = s.Run(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.WaitReady(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("child", s.Status()[0].PID)
	time.Sleep(time.Hour)
	return 0
}

func envDuration(key string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(key))
	return d
}

// writeFileAtomic writes content so that a reader never sees it half written.
func writeFileAtomic(path, content string) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}
