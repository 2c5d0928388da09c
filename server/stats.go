package server

import (
	"fmt"
	"io"
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
	numReasons
)

var reasonNames = [numReasons]string{
	"unknown", "peer_closed", "peer_hangup", "protocol_error", "message_too_big", "invalid_utf8",
	"slow_consumer", "idle_timeout", "handshake_timeout", "handshake_rejected", "shutdown",
	"panic", "write_error", "linger_timeout", "protocol_close",
	"http", "http_rejected",
}

func (r CloseReason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Stats are the server's counters; all fields are read atomically.
type Stats struct {
	Upgraded           atomic.Uint64
	HandshakesRejected atomic.Uint64
	RejectedMaxConns   atomic.Uint64
	HTTPHandoffs       atomic.Uint64
	RejectedHTTPConns  atomic.Uint64
	HealthzInline      atomic.Uint64
	MessagesIn         atomic.Uint64
	SlowConsumers      atomic.Uint64
	Panics             atomic.Uint64
	Closed             [numReasons]atomic.Uint64
}

// writeMetrics writes the counters in the Prometheus text format.
func (s *Server) writeMetrics(w io.Writer) {
	st := &s.stats
	fmt.Fprintf(w, "# TYPE chatd_connections gauge\nchatd_connections %d\n", s.open.Load())
	fmt.Fprintf(w, "# TYPE chatd_sockets gauge\nchatd_sockets %d\n", s.live.Load())
	fmt.Fprintf(w, "# TYPE chatd_http_connections gauge\nchatd_http_connections %d\n", s.httpConns.Load())
	counter := func(name string, v uint64) {
		fmt.Fprintf(w, "# TYPE chatd_%s_total counter\nchatd_%s_total %d\n", name, name, v)
	}
	counter("accepted", s.ln.Accepted.Load())
	counter("accept_errors", s.ln.AcceptErrors.Load())
	counter("upgraded", st.Upgraded.Load())
	counter("handshakes_rejected", st.HandshakesRejected.Load())
	counter("rejected_max_conns", st.RejectedMaxConns.Load())
	counter("http_requests_handed_off", st.HTTPHandoffs.Load())
	counter("http_shed", s.httpLn.shed.Load())
	counter("rejected_http_conns", st.RejectedHTTPConns.Load())
	counter("healthz_inline", st.HealthzInline.Load())
	counter("messages_in", st.MessagesIn.Load())
	counter("slow_consumers", st.SlowConsumers.Load())
	counter("panics", st.Panics.Load())
	bs := s.broker.Stats()
	connected := 0
	if bs.Connected {
		connected = 1
	}
	fmt.Fprintf(w, "# TYPE chatd_broker_connected gauge\nchatd_broker_connected %d\n", connected)
	fmt.Fprintf(w, "# TYPE chatd_broker_rooms gauge\nchatd_broker_rooms %d\n", bs.Rooms)
	counter("broker_published", bs.Published)
	counter("broker_delivered", bs.Delivered)
	counter("broker_lost", bs.Lost)
	counter("broker_reconnects", bs.Reconnect)
	ps := s.pusher.Stats()
	fmt.Fprintf(w, "# TYPE chatd_pusher_cache_channels gauge\nchatd_pusher_cache_channels %d\n", ps.CacheChannels)
	fmt.Fprintf(w, "# TYPE chatd_pusher_cache_bytes gauge\nchatd_pusher_cache_bytes %d\n", ps.CacheBytes)
	counter("pusher_cache_evictions", ps.CacheEvictions)
	counter("pusher_cache_expirations", ps.CacheExpirations)
	counter("pusher_demo_rate_limited", ps.DemoRateLimited)
	counter("pusher_webhook_posts", ps.WebhookPosts)
	counter("pusher_webhook_events_sent", ps.WebhookEventsSent)
	counter("pusher_webhook_retries", ps.WebhookRetries)
	counter("pusher_webhook_events_dropped", ps.WebhookEventsDropped)
	counter("pusher_webhook_queue_overflow", ps.WebhookQueueOverflow)
	fmt.Fprintf(w, "# TYPE chatd_pusher_webhook_queued gauge\nchatd_pusher_webhook_queued %d\n", ps.WebhookQueued)
	fmt.Fprintf(w, "# TYPE chatd_closed_total counter\n")
	for i := range st.Closed {
		fmt.Fprintf(w, "chatd_closed_total{reason=%q} %d\n", CloseReason(i).String(), st.Closed[i].Load())
	}
}
