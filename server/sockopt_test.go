package server

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// serverSideFD finds, among this test process's descriptors, the socket
// the server accepted for the client connection whose local address is
// client (local address = the server's, peer = client).
func serverSideFD(t *testing.T, srv, client *net.TCPAddr) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		la, err1 := unix.Getsockname(fd)
		pa, err2 := unix.Getpeername(fd)
		if err1 != nil || err2 != nil {
			continue
		}
		l, ok1 := la.(*unix.SockaddrInet4)
		p, ok2 := pa.(*unix.SockaddrInet4)
		if ok1 && ok2 && l.Port == srv.Port && p.Port == client.Port && net.IP(p.Addr[:]).Equal(client.IP) {
			return fd
		}
	}
	t.Fatalf("no server-side socket for %v", client)
	return -1
}

// TestAcceptedSocketsHaveNoDelay: chat frames are small, so the server's
// sockets run without Nagle's algorithm. They get TCP_NODELAY from the
// listening socket (poller.NoDelay) instead of a setsockopt per accept;
// this checks the accepted socket itself, after an upgrade by an outside
// client (gorilla/websocket, through a dialer that notes its port).
func TestAcceptedSocketsHaveNoDelay(t *testing.T) {
	s := newTestServer(t, Config{})
	var local *net.TCPAddr
	d := gorilla.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				local = nc.LocalAddr().(*net.TCPAddr)
			}
			return nc, err
		},
	}
	c, _, err := d.Dial(wsURL(s, "/chat"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitConns(t, s, 1)
	fd := serverSideFD(t, s.Addr().(*net.TCPAddr), local)
	v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
	if err != nil || v != 1 {
		t.Errorf("server-side socket: TCP_NODELAY = %d, %v; want 1", v, err)
	}
}
