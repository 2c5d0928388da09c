//go:build darwin || openbsd

package poller

import "golang.org/x/sys/unix"

// MaxIovecs bounds one Writev call; the caller loops for more.
const MaxIovecs = 64

// libcIovecs is how many buffers go to one unix.Writev call: up to 8 its
// iovec array stays on the stack (x/sys/unix's minIovec).
const libcIovecs = 8

// Writev writes up to MaxIovecs buffers without blocking. Here system
// calls go through libc (raw syscalls are not a stable interface on
// macOS), so it is unix.Writev, called per 8 buffers so that it does not
// allocate; it stops at the first short write, which means the socket
// buffer is full. The return value is as for Write: n short of the
// buffers' total with a nil error means OnWritable will follow.
func (d *Desc) Writev(bufs [][]byte) (int, error) {
	if len(bufs) > MaxIovecs {
		bufs = bufs[:MaxIovecs]
	}
	total := 0
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), libcIovecs)]
		bufs = bufs[len(chunk):]
		want := 0
		for _, b := range chunk {
			want += len(b)
		}
		if want == 0 {
			continue
		}
		n, err := ignoreEINTR(func() (int, error) { return unix.Writev(int(d.fd), chunk) })
		if err == unix.EAGAIN {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		total += n
		if n < want {
			return total, nil
		}
	}
	return total, nil
}
