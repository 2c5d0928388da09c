package server

import (
	"fmt"
	"sync/atomic"
)

// CloseReason records why a connection ended (as nats-server's ClosedState).
type CloseReason uint8

// Close reasons.
const (
	ReasonUnknown CloseReason = iota
	ReasonPeerClosed
	ReasonPeerHangup
	ReasonProtocolError
	ReasonTooBig
	ReasonBadUTF8
	ReasonSlowConsumer
	ReasonIdle
	ReasonHandshakeTimeout
	ReasonHandshakeRejected
	ReasonShutdown
	ReasonPanic
	ReasonWriteError
	ReasonLinger
	ReasonProtocolClose
	ReasonHTTP
	ReasonHTTPRejected
	ReasonRateLimited
	ReasonTokenExpired
	numReasons
)

var reasonNames = [numReasons]string{
	"unknown", "peer_closed", "peer_hangup", "protocol_error", "message_too_big", "invalid_utf8",
	"slow_consumer", "idle_timeout", "handshake_timeout", "handshake_rejected", "shutdown",
	"panic", "write_error", "linger_timeout", "protocol_close",
	"http", "http_rejected", "rate_limited", "token_expired",
}

func (r CloseReason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Stats are the server's counters; all fields are read atomically. The
// admin listener's /metrics serves them (metrics.go).
type Stats struct {
	Upgraded           atomic.Uint64
	HandshakesRejected atomic.Uint64
	RejectedMaxConns   atomic.Uint64
	RejectedPerIP      atomic.Uint64 // over Config.MaxConnsPerIP: 429
	RateLimited        atomic.Uint64 // over Config.MaxMessageRate: closed
	HTTPHandoffs       atomic.Uint64
	RejectedHTTPConns  atomic.Uint64
	HealthzInline      atomic.Uint64
	MessagesIn         atomic.Uint64
	Deliveries         atomic.Uint64 // fan-out batches written or queued to a member
	SlowConsumers      atomic.Uint64
	Panics             atomic.Uint64
	Replayed           atomic.Uint64 // kept messages queued to joiners (history)
	Closed             [numReasons]atomic.Uint64
}
