package poller

import "golang.org/x/sys/unix"

// DragonFly's SO_REUSEPORT spreads connections as Linux's does.
const (
	reusePortOption = unix.SO_REUSEPORT
	reusePortName   = "SO_REUSEPORT"
)
