package poller

import (
	"errors"
	"fmt"
	"runtime"
)

// ErrReusePort is wrapped by the error for ReusePort on a system whose
// SO_REUSEPORT does not spread connections over the listeners.
var ErrReusePort = errors.New("poller: SO_REUSEPORT does not spread connections")

// CheckReusePort reports whether the ReusePort option works here: nil on
// Linux, FreeBSD and DragonFly, an error wrapping ErrReusePort on macOS,
// NetBSD and OpenBSD.
func CheckReusePort() error {
	if reusePortOption == 0 {
		return fmt.Errorf("%w on %s (every connection goes to one of the processes)", ErrReusePort, runtime.GOOS)
	}
	return nil
}
