package pusher

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// appCounters are one app's figures for the engine's metrics. The gauges
// change with connections and subscriptions, the counters with client
// events and refusals: none of them is on the delivery path, and each is
// one atomic add where it changes.
type appCounters struct {
	conns        atomic.Int64  // open sessions
	subs         atomic.Int64  // channel subscriptions (connection, channel) pairs
	members      atomic.Int64  // presence members (users), summed over channels
	clientEvents atomic.Uint64 // client-* events relayed
	authSub      atomic.Uint64 // subscriptions and sign-ins refused for their signature
	authAPI      atomic.Uint64 // HTTP API requests refused with 401
}

// AppStats are one app's figures (Protocol.AppStats).
type AppStats struct {
	AppID string
	// Connections, Subscriptions and PresenceMembers are gauges: open
	// sessions, channel subscriptions (one per connection and channel,
	// user channels not counted) and presence members (one per user and
	// channel, however many connections it has there).
	Connections, Subscriptions, PresenceMembers int64
	// ClientEvents counts client-* events relayed to a channel.
	ClientEvents uint64
	// SocketAuthFailures counts private/presence subscriptions and
	// pusher:signin refused because of their auth signature or data;
	// APIAuthFailures counts HTTP API requests answered 401.
	SocketAuthFailures, APIAuthFailures uint64
}

// AppStats returns every configured app's figures, sorted by app ID.
func (p *Protocol) AppStats() []AppStats {
	out := make([]AppStats, 0, len(p.states))
	for id, a := range p.states {
		c := &a.counters
		out = append(out, AppStats{
			AppID: id, Connections: c.conns.Load(), Subscriptions: c.subs.Load(), PresenceMembers: c.members.Load(),
			ClientEvents: c.clientEvents.Load(), SocketAuthFailures: c.authSub.Load(), APIAuthFailures: c.authAPI.Load(),
		})
	}
	slices.SortFunc(out, func(a, b AppStats) int { return strings.Compare(a.AppID, b.AppID) })
	return out
}

// APICount is how many HTTP API requests of one app to one endpoint got
// one status (Protocol.APICounts).
type APICount struct {
	// AppID is a configured app's ID, or "" for requests naming no
	// configured app (their number of distinct values must stay bounded:
	// the path is the client's).
	AppID string
	// Endpoint is the route: events, batch_events, channels, channel,
	// users, terminate_connections, or other for any other path.
	Endpoint string
	Status   int
	N        uint64
}

type apiKey struct {
	app, endpoint string
	status        int
}

// apiCounters counts HTTP API requests by app, endpoint and status. The
// HTTP API is not a hot path; one short lock per request.
type apiCounters struct {
	mu sync.Mutex
	n  map[apiKey]uint64
}

// countAPI records a request answered with status; app is the path's app_id.
func (p *Protocol) countAPI(appID, endpoint string, status int) {
	if _, ok := p.states[appID]; !ok {
		appID = ""
	}
	if status == http.StatusUnauthorized && appID != "" {
		p.states[appID].counters.authAPI.Add(1)
	}
	p.apiCount.mu.Lock()
	if p.apiCount.n == nil {
		p.apiCount.n = make(map[apiKey]uint64)
	}
	p.apiCount.n[apiKey{appID, endpoint, status}]++
	p.apiCount.mu.Unlock()
}

// APICounts returns the HTTP API request counts, sorted.
func (p *Protocol) APICounts() []APICount {
	p.apiCount.mu.Lock()
	out := make([]APICount, 0, len(p.apiCount.n))
	for k, n := range p.apiCount.n {
		out = append(out, APICount{AppID: k.app, Endpoint: k.endpoint, Status: k.status, N: n})
	}
	p.apiCount.mu.Unlock()
	slices.SortFunc(out, func(a, b APICount) int {
		if c := strings.Compare(a.AppID, b.AppID); c != 0 {
			return c
		}
		if c := strings.Compare(a.Endpoint, b.Endpoint); c != 0 {
			return c
		}
		return a.Status - b.Status
	})
	return out
}
