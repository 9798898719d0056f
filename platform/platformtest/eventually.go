package platformtest

import (
	"testing"
	"time"
)

// patience bounds Eventually: generous, because a test must not depend on
// how loaded the machine is.
const patience = 30 * time.Second

// pollInterval is how often Eventually checks its condition.
const pollInterval = 10 * time.Millisecond

// Eventually checks cond until it holds, failing the test if it does not
// within 30 seconds; what describes the awaited condition for the failure
// message.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, patience, what, cond)
}

// EventuallyWithin is Eventually with its own deadline, for a test that
// asserts how soon cond holds; it returns how long that took.
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(pollInterval)
	}
	return time.Since(start)
}
