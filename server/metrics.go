package server

import (
	"strconv"
	"time"

	"chatd/server/history"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"chatd/server/buildinfo"
)

// Metrics. Every Server has its own prometheus.Registry (tests run several
// servers in one process), served on the admin listener's /metrics.
//
// Nothing here is on the per-delivery path. The counters stay the atomics
// of Stats (and of the listener, the broker and package pusher) and are
// read when /metrics is scraped (serverCollector); the fan-out counts
// deliveries once per chunk job, and the two histograms are observed once
// per handshake and once per fan-out batch (prometheus.Histogram.Observe
// is a few atomic adds: no lock, no allocation).

// Room-size buckets of the fan-out histogram (label room_size): how many
// members the batch was written to.
var roomSizes = [...]struct {
	upTo  int
	label string
}{
	{1, "1"}, {10, "2-10"}, {100, "11-100"}, {1000, "101-1000"}, {10000, "1001-10000"}, {1 << 62, "10001+"},
}

func roomSizeBucket(n int) int {
	for i, b := range roomSizes {
		if n <= b.upTo {
			return i
		}
	}
	return len(roomSizes) - 1
}

type metrics struct {
	reg       *prometheus.Registry
	handshake prometheus.Histogram
	fanout    [len(roomSizes)]prometheus.Observer
}

func (s *Server) newMetrics() {
	m := &s.metrics
	m.reg = prometheus.NewRegistry()
	m.handshake = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "chatd_handshake_seconds",
		Help: "Time from accepting a socket to queueing its 101 Switching Protocols (request head read, upgrade parsed, protocol started), for WebSocket connections that were upgraded.",
		// From a loopback client (~100 µs) to one that trickles its head
		// until the handshake timeout.
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	fanout := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "chatd_fanout_seconds",
		Help:    "Time from the first message of a fan-out batch being published to a room to the batch being written (or queued) to the room's last member, by room size (members the batch went to); one batch in 8 per room is measured.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"room_size"})
	// Resolved once: observing never looks a label up.
	for i, b := range roomSizes {
		m.fanout[i] = fanout.WithLabelValues(b.label)
	}
	bi := buildinfo.Read()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "chatd_build_info",
		Help: "Always 1; the labels say which build of chatd this is: module version, VCS revision, the revision's commit time, whether the tree had uncommitted changes (dirty), and the Go version (\"unknown\" where the binary does not record one).",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Revision, "revision_time": bi.Time,
			"dirty": bi.Dirty, "goversion": bi.GoVersion},
	})
	build.Set(1)
	m.reg.MustRegister(
		build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.handshake, fanout, &serverCollector{s: s, descs: newServerDescs()},
		newAccessCollector(s),
	)
}

// since returns the nanoseconds since the server was made: a monotonic
// clock that fits the int64 fields it is kept in.
func (s *Server) since() int64 { return max(1, int64(time.Since(s.epoch))) }

// observeHandshake records a handshake that began at start (s.since()).
func (s *Server) observeHandshake(start int64) {
	s.metrics.handshake.Observe(float64(s.since()-start) / 1e9)
}

// observeFanout records a fan-out batch to members that began at start;
// start 0 is a batch not sampled (fanoutSample).
func (s *Server) observeFanout(start int64, members int) {
	if start == 0 {
		return
	}
	s.metrics.fanout[roomSizeBucket(members)].Observe(float64(s.since()-start) / 1e9)
}

// metricDef is a metric the collector reads at scrape time.
type metricDef struct {
	name, help string
	typ        prometheus.ValueType
	get        func(s *Server, v *scrapeView) float64
}

// scrapeView holds what one scrape reads once for several metrics.
type scrapeView struct {
	broker         brokerView
	pusher         pusherView
	readyOK        bool
	hist           history.Stats
	recoveryFailed uint64
}

type (
	brokerView struct {
		connected                                bool
		rooms                                    int
		published, delivered, lost, reconnecting uint64
		sharedUp                                 bool
		nodes, presenceEntries, pendingWrites    int
		purged                                   uint64
	}
	pusherView struct {
		cacheChannels                               int
		cacheBytes                                  int64
		cacheEvictions, cacheExpirations, demoLimit uint64
		hookPosts, hookSent, hookRetries            uint64
		hookDropped, hookOverflow                   uint64
		hookQueued                                  int
	}
)

func (s *Server) view() *scrapeView {
	v := &scrapeView{readyOK: s.Ready()}
	bs := s.broker.Stats()
	v.broker = brokerView{bs.Connected, bs.Rooms, bs.Published, bs.Delivered, bs.Lost, bs.Reconnect,
		bs.SharedUp, bs.Nodes, bs.PresenceEntries, bs.PendingWrites, bs.Purged}
	ps := s.pusher.Stats()
	v.pusher = pusherView{ps.CacheChannels, ps.CacheBytes, ps.CacheEvictions, ps.CacheExpirations, ps.DemoRateLimited,
		ps.WebhookPosts, ps.WebhookEventsSent, ps.WebhookRetries, ps.WebhookEventsDropped, ps.WebhookQueueOverflow,
		int(ps.WebhookQueued)}
	v.recoveryFailed = ps.RecoveryFailed
	if s.hist != nil {
		v.hist = s.hist.Stats()
	}
	return v
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serverMetrics are chatd's own figures. The names are those of the
// hand-written exposition they replace, so dashboards and chatbench keep
// working.
var serverMetrics = []metricDef{
	{"chatd_connections", "Upgraded WebSocket connections open now.", prometheus.GaugeValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.open.Load()) }},
	{"chatd_sockets", "Sockets the server owns now: handshaking, open, closing, or plain HTTP in net/http.", prometheus.GaugeValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.live.Load()) }},
	{"chatd_http_connections", "Plain HTTP connections held by net/http now (capped by -max-http-conns).", prometheus.GaugeValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.httpConns.Load()) }},
	{"chatd_ready", "1 while /readyz answers 200: not draining, and the cluster broker connected.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return b2f(v.readyOK) }},
	{"chatd_client_addresses", "Client addresses holding WebSocket connections, when -max-conns-per-ip is on (0 otherwise).", prometheus.GaugeValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.perIP.addresses()) }},
	{"chatd_accepted_total", "Sockets accepted on the public listener.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.ln.Accepted.Load()) }},
	{"chatd_accept_errors_total", "Failed accept calls on the public listener (EMFILE and the like).", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.ln.AcceptErrors.Load()) }},
	{"chatd_upgraded_total", "WebSocket handshakes completed.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.Upgraded.Load()) }},
	{"chatd_handshakes_rejected_total", "WebSocket handshakes refused (bad request, unknown path, origin, caps) or timed out.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.HandshakesRejected.Load()) }},
	{"chatd_rejected_max_conns_total", "Handshakes refused with 503 because -max-conns connections were open.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.RejectedMaxConns.Load()) }},
	{"chatd_rejected_per_ip_total", "Handshakes refused with 429 because their client address had -max-conns-per-ip connections open.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.RejectedPerIP.Load()) }},
	{"chatd_rate_limited_total", "Raw connections closed with 1008 \"rate limit\" for sending over -max-message-rate / -max-message-burst.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.RateLimited.Load()) }},
	{"chatd_http_requests_handed_off_total", "Connections handed to net/http (pages, the Pusher HTTP API).", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.HTTPHandoffs.Load()) }},
	{"chatd_http_shed_total", "Connections closed because net/http did not take them in time.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.httpLn.shed.Load()) }},
	{"chatd_rejected_http_conns_total", "Plain HTTP requests refused with 503 over -max-http-conns.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.RejectedHTTPConns.Load()) }},
	{"chatd_healthz_inline_total", "GET /healthz answered on the public port without net/http.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.HealthzInline.Load()) }},
	{"chatd_messages_in_total", "WebSocket data messages received from clients.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.MessagesIn.Load()) }},
	{"chatd_deliveries_total", "Fan-out batches written or queued to a room member (one per member per batch; a batch holds every message published while the previous one ran).", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.Deliveries.Load()) }},
	{"chatd_slow_consumers_total", "Members closed (1008 / Pusher 4100) because their write queue passed -write-queue.", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.SlowConsumers.Load()) }},
	{"chatd_panics_total", "Connection callbacks that panicked (the connection was closed with 1011).", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.Panics.Load()) }},
	{"chatd_broker_connected", "1 while the cluster broker is connected (always 1 on a single node).", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return b2f(v.broker.connected) }},
	{"chatd_broker_rooms", "Rooms this node has subscribed to in the cluster.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.rooms) }},
	{"chatd_broker_published_total", "Messages published to the cluster.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.published) }},
	{"chatd_broker_delivered_total", "Messages from other nodes delivered to this node's rooms.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.delivered) }},
	{"chatd_broker_lost_total", "Messages the cluster broker could not publish or deliver.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.lost) }},
	{"chatd_broker_reconnects_total", "Reconnections of the cluster broker.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.reconnecting) }},
	{"chatd_cluster_shared_up", "1 while the cluster's shared state (Pusher presence and cache channels in JetStream) works (always 1 on a single node).", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return b2f(v.broker.sharedUp) }},
	{"chatd_cluster_nodes", "Cluster nodes alive, this one included (0 on a single node).", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.nodes) }},
	{"chatd_cluster_presence_entries", "Pusher presence entries (channel, user, node) in the cluster.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.presenceEntries) }},
	{"chatd_cluster_pending_writes", "This node's presence changes not yet stored in the cluster (waiting for NATS).", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.pendingWrites) }},
	{"chatd_cluster_presence_purged_total", "Presence entries of silent nodes this node removed.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.broker.purged) }},
	{"chatd_pusher_webhook_posts_total", "Webhook POSTs answered 2xx.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.hookPosts) }},
	{"chatd_pusher_webhook_events_sent_total", "Webhook events delivered.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.hookSent) }},
	{"chatd_pusher_webhook_retries_total", "Webhook POSTs retried after a failure.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.hookRetries) }},
	{"chatd_pusher_webhook_events_dropped_total", "Webhook events dropped after retrying for the retry period (or at shutdown).", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.hookDropped) }},
	{"chatd_pusher_webhook_queue_overflow_total", "Webhook events not queued because the queue was full.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.hookOverflow) }},
	{"chatd_pusher_webhook_queued", "Webhook events waiting to be posted.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.hookQueued) }},
	{"chatd_pusher_cache_channels", "Pusher cache channels whose last event is remembered, all apps.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.cacheChannels) }},
	{"chatd_pusher_cache_bytes", "Size of the remembered cache channel events, all apps.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.cacheBytes) }},
	{"chatd_pusher_cache_evictions_total", "Remembered cache channel events dropped to stay within the cache limits.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.cacheEvictions) }},
	{"chatd_pusher_cache_expirations_total", "Remembered cache channel events dropped after their TTL.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.cacheExpirations) }},
	{"chatd_pusher_demo_rate_limited_total", "Demo auth/publish requests refused with 429.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.pusher.demoLimit) }},
	{"chatd_history_rooms", "Rooms and channels whose history is kept.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.hist.Streams) }},
	{"chatd_history_messages", "Messages kept in history, all rooms.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.hist.Messages) }},
	{"chatd_history_bytes", "Bytes of history counted against -history-max-bytes.", prometheus.GaugeValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.hist.Bytes) }},
	{"chatd_history_appended_total", "Messages kept in history.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.hist.Appended) }},
	{"chatd_history_evicted_rooms_total", "Rooms whose history was forgotten because -history-max-bytes was reached (least recently published first).", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.hist.Evicted) }},
	{"chatd_history_expired_total", "Kept messages dropped for their age (-history-ttl).", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.hist.Expired) }},
	{"chatd_history_replayed_total", "Kept messages sent to joiners (raw ?history=N, Pusher rewind and recovery).", prometheus.CounterValue,
		func(s *Server, _ *scrapeView) float64 { return float64(s.stats.Replayed.Load()) }},
	{"chatd_history_recovery_failed_total", "Pusher recovery requests answered with chatd:recovery_failed.", prometheus.CounterValue,
		func(_ *Server, v *scrapeView) float64 { return float64(v.recoveryFailed) }},
}

// serverDescs are the collector's descriptors, made once per Server.
type serverDescs struct {
	plain  []*prometheus.Desc
	closed *prometheus.Desc

	pusherConns, pusherSubs, pusherMembers, pusherClientEvents *prometheus.Desc
	pusherAuthFailures, pusherAPI                              *prometheus.Desc
}

func newServerDescs() *serverDescs {
	d := &serverDescs{}
	for _, m := range serverMetrics {
		d.plain = append(d.plain, prometheus.NewDesc(m.name, m.help, nil, nil))
	}
	d.closed = prometheus.NewDesc("chatd_closed_total", "Sockets closed, by the reason recorded for each.", []string{"reason"}, nil)
	app := []string{"app"}
	d.pusherConns = prometheus.NewDesc("chatd_pusher_connections", "Pusher connections open now, per app.", app, nil)
	d.pusherSubs = prometheus.NewDesc("chatd_pusher_subscriptions", "Pusher channel subscriptions now (one per connection and channel), per app.", app, nil)
	d.pusherMembers = prometheus.NewDesc("chatd_pusher_presence_members", "Pusher presence channel members now (one per user and channel), per app.", app, nil)
	d.pusherClientEvents = prometheus.NewDesc("chatd_pusher_client_events_total", "Pusher client-* events relayed, per app.", app, nil)
	d.pusherAuthFailures = prometheus.NewDesc("chatd_pusher_auth_failures_total",
		"Pusher requests refused for their signature, per app: kind=\"socket\" private/presence subscriptions and pusher:signin, kind=\"api\" HTTP API requests answered 401.",
		[]string{"app", "kind"}, nil)
	d.pusherAPI = prometheus.NewDesc("chatd_pusher_api_requests_total",
		"Pusher HTTP API requests by app (\"\" for an unknown app_id), endpoint and status code.",
		[]string{"app", "endpoint", "status"}, nil)
	return d
}

// serverCollector reads the server's counters when /metrics is scraped.
type serverCollector struct {
	s     *Server
	descs *serverDescs
}

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.descs
	for _, x := range d.plain {
		ch <- x
	}
	for _, x := range []*prometheus.Desc{d.closed, d.pusherConns, d.pusherSubs, d.pusherMembers, d.pusherClientEvents, d.pusherAuthFailures, d.pusherAPI} {
		ch <- x
	}
}

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	s, d := c.s, c.descs
	v := s.view()
	for i, m := range serverMetrics {
		ch <- prometheus.MustNewConstMetric(d.plain[i], m.typ, m.get(s, v))
	}
	for i := range s.stats.Closed {
		ch <- prometheus.MustNewConstMetric(d.closed, prometheus.CounterValue, float64(s.stats.Closed[i].Load()), CloseReason(i).String())
	}
	for _, a := range s.pusher.AppStats() {
		ch <- prometheus.MustNewConstMetric(d.pusherConns, prometheus.GaugeValue, float64(a.Connections), a.AppID)
		ch <- prometheus.MustNewConstMetric(d.pusherSubs, prometheus.GaugeValue, float64(a.Subscriptions), a.AppID)
		ch <- prometheus.MustNewConstMetric(d.pusherMembers, prometheus.GaugeValue, float64(a.PresenceMembers), a.AppID)
		ch <- prometheus.MustNewConstMetric(d.pusherClientEvents, prometheus.CounterValue, float64(a.ClientEvents), a.AppID)
		ch <- prometheus.MustNewConstMetric(d.pusherAuthFailures, prometheus.CounterValue, float64(a.SocketAuthFailures), a.AppID, "socket")
		ch <- prometheus.MustNewConstMetric(d.pusherAuthFailures, prometheus.CounterValue, float64(a.APIAuthFailures), a.AppID, "api")
	}
	for _, r := range s.pusher.APICounts() {
		ch <- prometheus.MustNewConstMetric(d.pusherAPI, prometheus.CounterValue, float64(r.N), r.AppID, r.Endpoint, strconv.Itoa(r.Status))
	}
}
