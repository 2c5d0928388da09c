package testutil

import (
	"testing"
	"time"
)

// pollInterval is how often CheckFor asks again.
const pollInterval = 5 * time.Millisecond

// CheckFor calls fn until it returns nil, and fails t with fn's last error
// if that has not happened after timeout.
func CheckFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(pollInterval)
	}
}
