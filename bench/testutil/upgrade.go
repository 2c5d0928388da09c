package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// SampleKey and SampleAccept are the sample nonce of RFC 6455 1.3 and the
// Sec-WebSocket-Accept a server must answer it with. Every handshake built
// here sends SampleKey: a server has no reason to care that keys repeat,
// and a fixed one keeps the expected answer a constant.
const (
	SampleKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	SampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// UpgradeRequest is a valid opening handshake (RFC 6455 4.1) for path on
// host, with SampleKey.
func UpgradeRequest(host, path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + SampleKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// UpgradedConn is a client socket after a handshake done by hand. Reads go
// through Reader, the bufio.Reader that parsed the server's answer, so no
// frame byte the server sent right behind it is lost.
type UpgradedConn struct {
	net.Conn
	Reader *bufio.Reader
}

func (c *UpgradedConn) Read(p []byte) (int, error) { return c.Reader.Read(p) }

// UpgradeError is a handshake the server answered with a status other
// than 101 Switching Protocols.
type UpgradeError struct {
	StatusCode int    // 503
	Status     string // "503 Service Unavailable"
}

func (e *UpgradeError) Error() string { return "handshake: got " + e.Status + ", want 101" }

// Upgrade writes UpgradeRequest(host, path) on c and reads the answer as
// ReadUpgrade does.
func Upgrade(c net.Conn, host, path string, timeout time.Duration) (*UpgradedConn, error) {
	if _, err := io.WriteString(c, UpgradeRequest(host, path)); err != nil {
		return nil, fmt.Errorf("handshake: writing the request: %w", err)
	}
	return ReadUpgrade(c, timeout)
}

// ReadUpgrade reads the server's answer to a handshake with SampleKey
// already written on c, within timeout (zero: no read deadline), and
// requires 101 with SampleAccept (RFC 6455 4.2.2; 4.1: a client that gets
// another accept value MUST fail the connection). A status other than 101
// is an *UpgradeError. After a 101 the read deadline is cleared.
func ReadUpgrade(c net.Conn, timeout time.Duration) (*UpgradedConn, error) {
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, err
		}
	}
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("handshake: reading the response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, &UpgradeError{StatusCode: resp.StatusCode, Status: resp.Status}
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != SampleAccept {
		return nil, fmt.Errorf("handshake: Sec-WebSocket-Accept = %q, want %q", got, SampleAccept)
	}
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			return nil, err
		}
	}
	return &UpgradedConn{Conn: c, Reader: br}, nil
}
