//go:build darwin || netbsd || openbsd

package poller

// SO_REUSEPORT exists on these systems, but the last socket bound takes
// every new connection (macOS) or the choice is not spread: no load
// balancing, so ReusePort is refused (CheckReusePort).
const (
	reusePortOption = 0
	reusePortName   = "SO_REUSEPORT"
)
