package server

import (
	"fmt"
	"os"
	"testing"

	"chatd/poller"
)

// TestMain runs the package's tests on the engine CHATD_POLLER names (as
// cmd/chatd reads it; .ci/run runs the suite on both): every server that
// a test starts with a zero Config.Poller uses it.
func TestMain(m *testing.M) {
	testPoller = os.Getenv("CHATD_POLLER")
	if err := poller.CheckEngine(testPoller); err != nil {
		fmt.Fprintf(os.Stderr, "CHATD_POLLER: %v\n", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}
