package server

import (
	"bufio"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"chatd/bench/testutil"
)

// TestRefusedHandshakeLogsClientAddress: a refused handshake (here an
// invalid Sec-WebSocket-Key, refused once the headers are read) is logged
// (at debug) with the client's address: the forwarded one when the TCP
// peer is a trusted proxy, the peer's own otherwise, whatever the headers
// claim.
func TestRefusedHandshakeLogsClientAddress(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{"through a trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, "client=203.0.113.9 peer=127.0.0.1"},
		{"from an untrusted peer", nil, "client=127.0.0.1 peer=127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testutil.LockedBuffer
			s := newTestServer(t, Config{TrustedProxies: tc.trusted,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			c := dialRaw(t, s)
			fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nUpgrade: websocket\r\n"+
				"Connection: Upgrade\r\nSec-WebSocket-Key: not-a-key\r\nSec-WebSocket-Version: 13\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
			testutil.CheckFor(t, 5*time.Second, func() error {
				for _, line := range strings.Split(logs.String(), "\n") {
					if strings.Contains(line, `msg="handshake refused"`) && strings.Contains(line, tc.want) {
						return nil
					}
				}
				return fmt.Errorf("no refusal logged with %q:\n%s", tc.want, logs.String())
			})
		})
	}
}
