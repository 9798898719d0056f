package supervisor

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

const (
	// readyAttemptTimeout bounds one call of a Ready check, so a check that
	// hangs is retried instead of holding readiness back forever.
	readyAttemptTimeout = 5 * time.Second
	// drainTimeout is how long the output of an exited child may keep
	// flowing: its group has been killed by then, so only a process that
	// left the group (a daemon that called setsid) can still hold the pipes.
	drainTimeout = time.Second
)

// proc is one supervised process and its current child.
type proc struct {
	spec      Process
	prefix    []byte
	ready     chan struct{} // closed the first time a child is ready
	readyOnce sync.Once

	mu sync.Mutex
	st ProcessStatus
	// exited is set once the current child has exited, just before it is
	// reaped: its ID may be reused after that, so it must not be signalled.
	exited bool
}

func (p *proc) status() ProcessStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	if st.LastExit != nil {
		e := *st.LastExit
		st.LastExit = &e
	}
	return st
}

func (p *proc) update(fn func(st *ProcessStatus)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fn(&p.st)
}

// signal sends sig to the current child's process group, if it has not exited.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st.PID != 0 && !p.exited {
		// The group ID is the child's PID (Setpgid with Pgid 0); signalling
		// the group also reaches anything the child started.
		_ = syscall.Kill(-p.st.PID, sig)
	}
}

func (p *proc) markReady() {
	p.update(func(st *ProcessStatus) { st.Ready = true })
	p.readyOnce.Do(func() { close(p.ready) })
}

// wait blocks until the child exits and reaps it. Where the platform can wait
// without reaping, the child's group is cleared in between, while the zombie
// still holds its ID: a grandchild left behind would keep the log pipes open
// and the port the restarted child needs.
func (p *proc) wait(cmd *exec.Cmd) {
	pid := cmd.Process.Pid
	zombie := awaitExit(pid)
	p.mu.Lock()
	p.exited = true
	if zombie {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	p.mu.Unlock()
	// Wait's error only restates cmd.ProcessState, which exitOf reads; the
	// state is nil only if the wait itself failed, and exitOf reports that.
	_ = cmd.Wait()
}

// startRequest asks launch to start cmd and report the result on done.
type startRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// launch starts every child from one goroutine locked to its OS thread until
// Run has reaped every child. Linux sends the Pdeathsig signal when the
// thread that forked the child exits, not the process, and Go ends OS threads
// on its own (whenever a goroutine exits while locked to one), so a child
// started from an ordinary goroutine could be sent SIGTERM while the
// supervisor is alive (https://go.dev/issue/27505). No other goroutine runs on
// a locked thread, so this one cannot end while a child it forked lives: it is
// unlocked only after Run has reaped them all.
func launch(reqs <-chan startRequest) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
}

// supervise runs p's child again and again until ctx ends.
func (s *Supervisor) supervise(ctx context.Context, p *proc, starts chan<- startRequest) {
	defer p.update(func(st *ProcessStatus) { st.State = StateStopped })
	log := s.opts.Log.With("process", p.spec.Name)
	crashes := 0
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			p.update(func(st *ProcessStatus) { st.Restarts++ })
		}
		began := time.Now()
		s.runOnce(ctx, p, starts)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) >= s.opts.StableAfter {
			crashes = 0
		}
		delay := backoff(s.opts.MinBackoff, s.opts.MaxBackoff, crashes)
		crashes++
		p.update(func(st *ProcessStatus) {
			st.State = StateBackoff
			st.Backoff = delay
		})
		log.Info("restarting", "in", delay, "crashes", crashes)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runOnce starts p's child and returns once it has exited, been reaped and
// its output drained; when ctx ends it stops the child first.
func (s *Supervisor) runOnce(ctx context.Context, p *proc, starts chan<- startRequest) {
	log := s.opts.Log.With("process", p.spec.Name)
	p.update(func(st *ProcessStatus) { st.State = StateStarting })
	cmd, pipes, err := s.start(p, starts)
	if err != nil {
		p.update(func(st *ProcessStatus) { st.StartErr = err })
		log.Error("start failed", "err", err)
		return
	}
	pid, began := cmd.Process.Pid, time.Now()
	p.mu.Lock()
	p.exited = false
	p.st.State, p.st.PID, p.st.Started, p.st.Ready, p.st.StartErr = StateRunning, pid, began, false, nil
	p.mu.Unlock()
	log.Info("started", "pid", pid)

	var copying sync.WaitGroup
	for _, r := range pipes {
		copying.Go(func() { s.out.copyLines(p.prefix, r) })
	}
	runCtx, cancelRun := context.WithCancel(ctx)
	var checking sync.WaitGroup
	if p.spec.Ready != nil {
		checking.Go(func() { s.pollReady(runCtx, p) })
	} else {
		p.markReady()
	}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		p.wait(cmd)
	}()

	stopping := false
	select {
	case <-exited:
	case <-ctx.Done():
		stopping = true
		s.stop(p, exited)
	}
	ended := time.Now()
	cancelRun()
	checking.Wait()
	drain(&copying, pipes)

	exit := exitOf(cmd.ProcessState, began, ended)
	p.update(func(st *ProcessStatus) {
		st.PID, st.Ready, st.LastExit = 0, false, &exit
	})
	if stopping {
		log.Info("stopped", "pid", pid, "exit", exit.String())
	} else {
		log.Warn("exited", "pid", pid, "exit", exit.String(), "ran", exit.Ran.Round(time.Millisecond))
	}
}

// start starts p's child through the launcher with its stdout and stderr on
// pipes of their own, and returns the read ends.
func (s *Supervisor) start(p *proc, starts chan<- startRequest) (*exec.Cmd, []*os.File, error) {
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Env, cmd.Dir = p.spec.Env, p.spec.Dir
	cmd.SysProcAttr = sysProcAttr()
	var readers, writers []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			_ = f.Close()
		}
	}
	for range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(readers)
			closeAll(writers)
			return nil, nil, err
		}
		readers, writers = append(readers, r), append(writers, w)
	}
	// Passing *os.File (not an io.Writer) hands the descriptors to the child
	// without copying goroutines in os/exec; our reader sees each line as
	// the child writes it.
	cmd.Stdout, cmd.Stderr = writers[0], writers[1]
	done := make(chan error, 1)
	starts <- startRequest{cmd: cmd, done: done}
	err := <-done
	// The child holds its own copies; ours would keep the readers from ever
	// seeing end of file.
	closeAll(writers)
	if err != nil {
		closeAll(readers)
		return nil, nil, err
	}
	return cmd, readers, nil
}

// stop asks p's child to stop with SIGTERM and kills it if it has not exited
// after StopTimeout; it returns once the child has been reaped.
func (s *Supervisor) stop(p *proc, exited <-chan struct{}) {
	p.update(func(st *ProcessStatus) { st.State = StateStopping })
	p.signal(syscall.SIGTERM)
	t := time.NewTimer(s.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-exited:
		return
	case <-t.C:
	}
	s.opts.Log.Warn("did not stop in time; killing", "process", p.spec.Name, "after", s.opts.StopTimeout)
	p.signal(syscall.SIGKILL)
	<-exited
}

// pollReady calls p's Ready check until it passes or ctx ends.
func (s *Supervisor) pollReady(ctx context.Context, p *proc) {
	for {
		attempt, cancel := context.WithTimeout(ctx, readyAttemptTimeout)
		err := p.spec.Ready(attempt)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			// Logged first so that the log reads in order for whoever
			// WaitReady wakes.
			s.opts.Log.Info("ready", "process", p.spec.Name)
			p.markReady()
			return
		}
		s.opts.Log.Debug("not ready", "process", p.spec.Name, "err", err)
		t := time.NewTimer(s.opts.ReadyInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// drain waits for the output copiers to reach end of file, closing the pipes
// under them if that takes longer than drainTimeout.
func drain(copying *sync.WaitGroup, pipes []*os.File) {
	done := make(chan struct{})
	go func() {
		copying.Wait()
		close(done)
	}()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	// Closing a pipe that a copier still reads from makes its Read return,
	// so the copier flushes what it has and ends.
	for _, f := range pipes {
		_ = f.Close()
	}
	<-done
}

// exitOf describes how a child ended.
func exitOf(ps *os.ProcessState, began, ended time.Time) Exit {
	e := Exit{Code: -1, At: ended, Ran: ended.Sub(began)}
	if ps == nil {
		return e
	}
	e.Code = ps.ExitCode()
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal()
	}
	return e
}
