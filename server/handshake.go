package server

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/gobwas/ws"
)

// headEnd returns the length of the request head at the start of buf, its
// empty line included, or -1 while it is incomplete. Only line feeds at or
// after from are looked at (earlier ones were, when they arrived).
//
// RFC 9112 2.2: "a recipient MAY recognize a single LF as a line terminator
// and ignore any preceding CR", as net/http does; so the head ends at a LF
// that follows a LF, with or without a CR between them.
func headEnd(buf []byte, from int) int {
	for i := from; i < len(buf); {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return -1
		}
		k := i + j
		if (k >= 1 && buf[k-1] == '\n') || (k >= 2 && buf[k-1] == '\r' && buf[k-2] == '\n') {
			return k + 1
		}
		i = k + 1
	}
	return -1
}

// crlfHead returns head with every line ending in CRLF, for ws.Upgrader,
// which knows no other. A head that already does is returned as it is.
func crlfHead(head []byte) []byte {
	if bytes.Count(head, []byte{'\n'}) == bytes.Count(head, []byte("\r\n")) {
		return head
	}
	out := make([]byte, 0, len(head)+32)
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			break
		}
		out = append(out, bytes.TrimSuffix(head[:i], []byte{'\r'})...)
		out = append(out, '\r', '\n')
		head = head[i+1:]
	}
	return out
}

// headInfo is what a quick scan of the request head tells before routing.
type headInfo struct {
	upgrade bool // an "Upgrade: websocket" header is present
	badKey  bool // Sec-WebSocket-Key present but not base64 of 16 bytes
	dupKey  bool // Sec-WebSocket-Key appears more than once
	healthz bool // GET or HEAD of /healthz without a body
	head    bool // the method is HEAD
	close   bool // the client wants the connection closed after the answer
}

func scanHead(head []byte) (info headInfo) {
	lines := head
	reqLine := lines
	if i := bytes.IndexByte(lines, '\n'); i >= 0 {
		reqLine, lines = bytes.TrimRight(lines[:i], "\r"), lines[i+1:]
	}
	method, rest, _ := bytes.Cut(reqLine, []byte{' '})
	target, version, _ := bytes.Cut(rest, []byte{' '})
	info.head = string(method) == "HEAD"
	info.healthz = (info.head || string(method) == "GET") && string(target) == "/healthz"
	info.close = string(version) != "HTTP/1.1"
	keys := 0
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimRight(lines[:i], "\r")
		lines = lines[i+1:]
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		k = bytes.TrimSpace(k)
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Upgrade")):
			info.upgrade = info.upgrade || hasToken(v, "websocket")
		case bytes.EqualFold(k, []byte("Sec-WebSocket-Key")):
			// RFC 6455 4.2.1: the key "when decoded, is 16 bytes in length".
			var dst [18]byte
			n, err := base64.StdEncoding.Decode(dst[:], v)
			if err != nil || n != 16 {
				info.badKey = true
			}
			keys++
		case bytes.EqualFold(k, []byte("Connection")):
			info.close = info.close || hasToken(v, "close")
		case bytes.EqualFold(k, []byte("Content-Length")) && string(v) != "0",
			bytes.EqualFold(k, []byte("Transfer-Encoding")):
			info.healthz = false // a body: net/http reads it
		}
	}
	// RFC 6455 11.3.1: Sec-WebSocket-Key "MUST NOT appear more than once in
	// an HTTP request".
	info.dupKey = keys > 1
	return info
}

// hasToken reports whether the comma-separated header value v lists tok
// (case-insensitive), without allocating.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte{','})
		if bytes.EqualFold(bytes.TrimSpace(t), []byte(tok)) {
			return true
		}
	}
	return false
}

// healthzBody is what GET /healthz answers, here and in net/http.
const healthzBody = "ok\n"

var healthzResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
	strconv.Itoa(len(healthzBody)) + "\r\n\r\n" + healthzBody)

// handshakeIO feeds ws.Upgrader the buffered head and collects its response.
type handshakeIO struct {
	r   bytes.Reader
	out []byte
}

func (h *handshakeIO) Read(p []byte) (int, error) { return h.r.Read(p) }

func (h *handshakeIO) Write(p []byte) (int, error) {
	h.out = append(h.out, p...)
	return len(p), nil
}

// route is where a request URI leads: a protocol and, for the raw
// protocol, the room's hub key, or for Pusher the per-connection state
// (app key and query).
type route struct {
	proto   connProtocol
	room    string
	history int          // raw: ?history=N, the last N messages first (-1: not asked)
	ident   *rawIdentity // raw, with raw auth or the publish hook (rawauth.go)
	pusher  *pusherState
}

func reject(code int, reason string) error {
	return ws.RejectConnectionError(ws.RejectionStatus(code), ws.RejectionReason(reason))
}

// route maps a request URI to a protocol (RFC 6455 4.2.1 leaves the
// rejection status to the server: unknown path 404, bad room name 400).
func (s *Server) route(uri string) (route, error) {
	path, query := uri, ""
	// RFC 9112 3.2.2: "a server MUST accept the absolute-form in requests";
	// the scheme and authority go, the path stays.
	if i := strings.Index(path, "://"); i > 0 && !strings.Contains(path[:i], "/") {
		path = path[i+3:]
		if j := strings.IndexByte(path, '/'); j >= 0 {
			path = path[j:]
		} else {
			path = "/"
		}
	}
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path = path[:i]
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i+1:]
	}
	switch {
	case path == "/chat" || strings.HasPrefix(path, "/chat/"):
		name := strings.TrimPrefix(path[len("/chat"):], "/")
		if path != "/chat" && !validRoomName(name) {
			return route{}, reject(http.StatusBadRequest, "invalid room name: 1-64 characters of A-Z a-z 0-9 . _ -")
		}
		n, err := rawHistory(query)
		if err != nil {
			return route{}, reject(http.StatusBadRequest, err.Error())
		}
		rt := route{proto: s.rawProto, room: rawRoomKey(name), history: n}
		if s.access != nil {
			if rt.ident, err = s.access.authorize(name, query); err != nil {
				return route{}, err
			}
		}
		return rt, nil
	case strings.HasPrefix(path, "/app/") && s.pusherProto != nil:
		// The key is checked by the Pusher protocol after the upgrade: it
		// answers an unknown key with pusher:error 4001, as clients expect.
		return route{proto: s.pusherProto, pusher: &pusherState{appKey: path[len("/app/"):], query: query}}, nil
	}
	return route{}, reject(http.StatusNotFound, "not found")
}

// validRoomName: 1-64 characters of [A-Za-z0-9._-].
func validRoomName(name string) bool {
	if len(name) < 1 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '.', b == '_', b == '-':
		default:
			return false
		}
	}
	return true
}

func (s *Server) originAllowed(origin string) bool {
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}
