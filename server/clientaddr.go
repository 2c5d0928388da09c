package server

import (
	"bytes"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// The client's address, and the per-address connection cap
// (Config.MaxConnsPerIP, Config.TrustedProxies).

// peerAddr returns the TCP peer of fd, IPv4-mapped IPv6 addresses unmapped
// (a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d).
func peerAddr(fd int) netip.Addr {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.Addr{}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

// trusted reports whether a is one of Config.TrustedProxies.
func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr works out a connection's client address from its TCP peer
// and, when the peer is a trusted proxy, the forwarding headers it sent.
// Header values are looked at during the callback only (ws.Upgrader's
// OnHeader): nothing is copied.
type clientAddr struct {
	peer     netip.Addr
	viaProxy bool       // peer is a trusted proxy: headers count
	xff      netip.Addr // right-most untrusted X-Forwarded-For entry
	xffFirst netip.Addr // left-most entry, if every entry was trusted
	realIP   netip.Addr // X-Real-IP
	xffLines int        // X-Forwarded-For header lines seen
}

var (
	headerXFF    = []byte("X-Forwarded-For")
	headerRealIP = []byte("X-Real-IP")
)

// header looks at one request header.
func (ca *clientAddr) header(s *Server, k, v []byte) {
	if !ca.viaProxy {
		return
	}
	switch {
	case bytes.EqualFold(k, headerXFF):
		// Each proxy appends the address it got the request from, so
		// entries are in hop order and only those right of the last
		// untrusted one are vouched for. A later header line continues the
		// list (RFC 9110 5.3), so its answer, if it has one, wins.
		line := ca.xffLines
		ca.xffLines++
		for len(v) > 0 {
			var e []byte
			if i := bytes.LastIndexByte(v, ','); i >= 0 {
				e, v = v[i+1:], v[:i]
			} else {
				e, v = v, nil
			}
			a, ok := parseForwarded(bytes.TrimSpace(e))
			if !ok {
				return // nothing left of a malformed entry can be trusted
			}
			if !s.trusted(a) {
				ca.xff = a
				return
			}
			if v == nil && line == 0 {
				ca.xffFirst = a
			}
		}
	case bytes.EqualFold(k, headerRealIP):
		if a, ok := parseForwarded(bytes.TrimSpace(v)); ok {
			ca.realIP = a
		}
	}
}

// addr is the client address: the forwarded one from a trusted proxy,
// else the TCP peer.
func (ca *clientAddr) addr() netip.Addr {
	if ca.viaProxy {
		switch {
		case ca.xff.IsValid():
			return ca.xff
		case ca.realIP.IsValid():
			return ca.realIP
		case ca.xffFirst.IsValid():
			return ca.xffFirst
		}
	}
	return ca.peer
}

// parseForwarded parses an address as proxies write it: 192.0.2.1,
// 2001:db8::1, with a port (192.0.2.1:4711, [2001:db8::1]:4711) or in
// brackets.
func parseForwarded(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	if a, err := netip.ParseAddr(string(b)); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(string(b)); err == nil {
		return ap.Addr().Unmap(), true
	}
	if len(b) > 2 && b[0] == '[' && b[len(b)-1] == ']' {
		if a, err := netip.ParseAddr(string(b[1 : len(b)-1])); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// ipLimiter counts WebSocket connections per client address. It is used
// at a handshake and at a close, never on the data path.
type ipLimiter struct {
	mu sync.Mutex
	n  map[netip.Addr]*ipCount
}

// ipCount is one address's connections; a Conn keeps a pointer to its own
// to give it back (Conn.ip).
type ipCount struct {
	addr netip.Addr
	n    int
}

// acquire counts one more connection from a, unless a has max already.
func (l *ipLimiter) acquire(a netip.Addr, max int) (*ipCount, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.n[a]
	if e == nil {
		if l.n == nil {
			l.n = make(map[netip.Addr]*ipCount)
		}
		e = &ipCount{addr: a}
		l.n[a] = e
	}
	if e.n >= max {
		if e.n == 0 {
			delete(l.n, a)
		}
		return nil, false
	}
	e.n++
	return e, true
}

func (l *ipLimiter) release(e *ipCount) {
	l.mu.Lock()
	if e.n--; e.n <= 0 {
		delete(l.n, e.addr)
	}
	l.mu.Unlock()
}

// addresses returns how many client addresses hold connections.
func (l *ipLimiter) addresses() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.n)
}
