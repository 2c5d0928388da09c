package bench

import "golang.org/x/sys/unix"

// corkOption holds back partial segments until the socket is uncorked or
// shut down: TCP_CORK.
const corkOption = unix.TCP_CORK

// ioctlGetTermios is the ioctl that reads a terminal's settings.
const ioctlGetTermios = unix.TCGETS

// bindAddressNoPort sets IP_BIND_ADDRESS_NO_PORT before bind, so that the
// port is chosen at connect from the four-tuple and each source address
// gets the whole ephemeral range.
func bindAddressNoPort(fd int) {
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
}

// socketNonblock opens a non-blocking, close-on-exec socket in one call.
func socketNonblock(family, typ, proto int) (int, error) {
	return unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
}
