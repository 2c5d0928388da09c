package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// An Agent holds one process's share of the client connections, in named
// groups, and carries out the coordinator's commands on them. With -procs 1
// the coordinator calls it directly; otherwise each worker process runs one
// behind a JSON pipe (see fleet.go). An Agent runs one command at a time;
// Counters may be read at any moment.
type Agent struct {
	mu     sync.Mutex
	groups map[string]*group

	connected atomic.Int64
	failed    atomic.Int64
	sent      atomic.Int64
}

// NewAgent returns an empty Agent.
func NewAgent() *Agent { return &Agent{groups: map[string]*group{}} }

// Counters is a snapshot of an Agent's progress, for the live display.
type Counters struct {
	Connected int64 `json:"connected"`
	Failed    int64 `json:"failed"`
	Sent      int64 `json:"sent"`
	Received  int64 `json:"received"`
}

// Counters returns the progress so far.
func (a *Agent) Counters() Counters {
	c := Counters{Connected: a.connected.Load(), Failed: a.failed.Load(), Sent: a.sent.Load()}
	a.mu.Lock()
	for _, g := range a.groups {
		c.Received += g.sum(func(m *member) *atomic.Int64 { return &m.received })
	}
	a.mu.Unlock()
	return c
}

// Connection kinds.
const (
	KindMember         = "member"          // reads everything, accounts broadcast messages
	KindSlow           = "slow"            // upgraded, never reads
	KindSlowReader     = "slow-reader"     // upgraded, reads ReadRate bytes/s until probed
	KindStallHandshake = "stall-handshake" // sends half the upgrade request, stalls
	KindStallFrame     = "stall-frame"     // upgrades, sends half a frame, stalls
	KindHalfClose      = "half-close"      // upgrades, sends a message and at once shutdown(SHUT_WR)
	KindGarbage        = "garbage"         // breaks the protocol (garbageVariants, one per connection in turn)
	KindHTTPStall      = "http-stall"      // plain HTTP request announcing a body it never finishes
)

// CloseAll closes every connection (used when a worker exits).
func (a *Agent) CloseAll() {
	a.mu.Lock()
	names := make([]string, 0, len(a.groups))
	for n := range a.groups {
		names = append(names, n)
	}
	a.mu.Unlock()
	for _, n := range names {
		_, _ = a.close(&CloseSpec{Group: n, Mode: CloseAbort})
	}
}

func (a *Agent) group(name string) (*group, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.groups[name]
	if g == nil {
		return nil, fmt.Errorf("chatbench: no connection group %q", name)
	}
	return g, nil
}
