//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// corkOption is TCP_CORK's BSD counterpart: TCP_NOPUSH holds back partial
// segments until it is cleared or the socket is shut down.
const corkOption = unix.TCP_NOPUSH

// ioctlGetTermios is the ioctl that reads a terminal's settings.
const ioctlGetTermios = unix.TIOCGETA

// bindAddressNoPort: there is no IP_BIND_ADDRESS_NO_PORT here, so a bind
// to a source address (-source-ips) takes its port from the ephemeral
// range at bind time, and every source address shares that one range
// instead of each having the whole of it: -source-ips does not raise the
// connection ceiling on this OS.
func bindAddressNoPort(int) {}

// socketNonblock opens a non-blocking, close-on-exec socket. macOS has no
// SOCK_NONBLOCK/SOCK_CLOEXEC type flags, so it is socket + two fcntl
// calls, under syscall.ForkLock as Go's net package does it.
func socketNonblock(family, typ, proto int) (int, error) {
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(family, typ, proto)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
