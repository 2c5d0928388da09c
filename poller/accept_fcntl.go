//go:build darwin || netbsd || openbsd

package poller

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// accept4 takes one connection off the listener, non-blocking and
// close-on-exec, where there is no accept4(2) (macOS) or x/sys/unix has
// none: accept, then two fcntl calls, as Go's net package does there.
// ForkLock is held for reading across accept and FD_CLOEXEC, so that a
// concurrent fork/exec (os/exec) cannot inherit the socket in between.
func accept4(lfd int) (int, error) {
	syscall.ForkLock.RLock()
	fd, _, err := unix.Accept(lfd)
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
