// Package testutil is what the tests of several chatd packages need
// alike, written once:
//
//   - CheckFor polls a condition instead of sleeping.
//   - Upgrade, ReadUpgrade and UpgradeRequest do a WebSocket handshake
//     by hand on a plain TCP connection, for tests that must talk to a
//     server below the level of a client library; Frame, RawFrame and
//     CloseBody build the client frames they send, any header bit
//     included, lying lengths too.
//   - LockedBuffer collects the output of a child process or a logger
//     while the test reads it.
//   - GoTool, Build and BuildInTempDir build a main package for a test
//     that runs the binary.
//
// Only test files import it. It imports nothing of chatd, so the tests
// of any package (poller, server, bench, cmd) can use it without an
// import cycle.
//
// A sketch:
//
//	nc, err := net.Dial("tcp", addr)
//	...
//	c, err := testutil.Upgrade(nc, addr, "/chat/room", 3*time.Second)
//	...
//	c.Write(testutil.Frame(true, 0, 0x1, true, []byte("hello")))
//	testutil.CheckFor(t, 5*time.Second, func() error {
//		if n := s.Conns(); n != 1 {
//			return fmt.Errorf("%d connections, want 1", n)
//		}
//		return nil
//	})
//
// The helpers that take a testing.TB fail the test from the goroutine
// that calls them, so call them from the test's own goroutine; the others
// return errors and may run anywhere, a child process included.
package testutil
