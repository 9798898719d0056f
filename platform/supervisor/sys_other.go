//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts the child in a process group of its own, so that a
// terminal's Ctrl-C reaches only the supervisor. Outside Linux there is no
// Pdeathsig: children outlive a supervisor that is killed with SIGKILL.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// awaitExit reports false: the standard library offers no wait without
// reaping here, so a child's leftover group members are not killed when it
// exits (they are when the supervisor stops it).
func awaitExit(int) bool { return false }
