package poller

import "golang.org/x/sys/unix"

// FreeBSD's SO_REUSEPORT only lets sockets share the address; the load
// balancing group (FreeBSD 12 and later) is SO_REUSEPORT_LB.
const (
	reusePortOption = unix.SO_REUSEPORT_LB
	reusePortName   = "SO_REUSEPORT_LB"
)
