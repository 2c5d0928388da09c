//go:build linux || freebsd || dragonfly || netbsd

package poller

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxIovecs bounds one Writev call; the caller loops for more.
const MaxIovecs = 64

// Writev writes up to MaxIovecs buffers with one writev(2) call, without blocking
// and without allocating. The return value is as for Write.
func (d *Desc) Writev(bufs [][]byte) (int, error) {
	var iov [MaxIovecs]unix.Iovec
	cnt := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if cnt == MaxIovecs {
			break
		}
		iov[cnt].Base = &b[0]
		iov[cnt].SetLen(len(b))
		cnt++
	}
	if cnt == 0 {
		return 0, nil
	}
	for {
		r, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(d.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(cnt))
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, errno
		}
	}
}
