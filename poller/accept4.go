//go:build linux || freebsd || dragonfly

package poller

import "golang.org/x/sys/unix"

// accept4 takes one connection off the listener, non-blocking and
// close-on-exec. It asks for no peer address (unix.Accept4 allocates one
// per call, garbage on every connect; the server looks the peer up only
// where it needs it).
func accept4(lfd int) (int, error) {
	r, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}
