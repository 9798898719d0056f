//go:build linux

package supervisor

import (
	"syscall"
	"unsafe"
)

// pPID is waitid's idtype for "the process with this ID" (P_PID in wait.h).
const pPID = 1

// sysProcAttr puts the child in a process group of its own, so that a
// terminal's Ctrl-C, which goes to the foreground group, reaches only the
// supervisor, which then stops the children in order; and it asks Linux to
// send the child SIGTERM if the supervisor dies without stopping it. See
// launch for why that needs a locked OS thread.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// awaitExit blocks until the child pid has exited without reaping it, and
// reports whether it did; false means the caller must reap without that
// guarantee (waitid is missing, as on WSL 1).
func awaitExit(pid int) bool {
	var info [16]uint64 // a siginfo_t is 128 bytes
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		switch errno {
		case 0:
			return true
		case syscall.EINTR:
			continue
		default:
			return false
		}
	}
}
