package pusher

import (
	"strconv"
	"sync"
	"time"
)

// subscriptionCountInterval is how often changed subscription counts are
// sent: each channel's at most once per interval, however often it
// changes.
const subscriptionCountInterval = time.Second

// subscriptionCounts coalesces the subscription counts of an app's
// channels (App.SubscriptionCount) between two sweeps.
type subscriptionCounts struct {
	mu      sync.Mutex     // a leaf, taken after appState.mu
	pending map[string]int // channel -> count, changed since the last sweep
	sent    map[string]int // channel -> count last sent, while occupied

	// In a cluster, pending holds this node's own counts, which the sweep
	// stores in the cluster; cluster holds the cluster's totals, changed
	// since the last sweep, which the sweep sends.
	cluster map[string]clusterCount
}

// clusterCount is a channel's cluster-wide subscription count; owned
// means a change of this node's made it (this node posts the webhook).
type clusterCount struct {
	n     int
	owned bool
}

func newSubscriptionCounts() *subscriptionCounts {
	return &subscriptionCounts{pending: make(map[string]int), sent: make(map[string]int),
		cluster: make(map[string]clusterCount)}
}

// clusterChanged records a channel's new cluster-wide count.
func (c *subscriptionCounts) clusterChanged(channel string, n int, owned bool) {
	c.mu.Lock()
	cc := c.cluster[channel]
	c.cluster[channel] = clusterCount{n, cc.owned || owned}
	if n == 0 {
		delete(c.sent, channel)
	}
	c.mu.Unlock()
}

// changed records a channel's new count; 0 means it was vacated, so a
// channel occupied again announces its count even if it is the old one.
func (c *subscriptionCounts) changed(channel string, n int) {
	c.mu.Lock()
	c.pending[channel] = n
	if n == 0 {
		delete(c.sent, channel)
	}
	c.mu.Unlock()
}

// sweepCounts sends pusher_internal:subscription_count
// {"subscription_count":n} to the subscribers of every channel whose count
// differs from the one last sent, and the subscription_count webhook. It
// holds appState.mu while it publishes, as subscribe does, so that a new
// subscriber gets its subscription_succeeded before any count.
func (h *appHooks) sweepCounts() {
	c := h.counts
	if c == nil {
		return
	}
	a := h.a
	a.mu.Lock()
	defer a.mu.Unlock()
	type change struct {
		channel string
		n       int
	}
	var changes []change
	var hooks []change
	c.mu.Lock()
	if cl := a.p.cluster; cl != nil {
		// This node's counts go to the cluster; the cluster's totals,
		// as every node applied them, come back to clusterChanged.
		for channel, n := range c.pending {
			cl.SetOccupied(a.app.ID, channel, n)
		}
		clear(c.pending)
		for channel, cc := range c.cluster {
			if cc.n > 0 && c.sent[channel] != cc.n {
				c.sent[channel] = cc.n
				if a.channels[channel] != nil {
					changes = append(changes, change{channel, cc.n})
				}
				if cc.owned {
					hooks = append(hooks, change{channel, cc.n})
				}
			}
		}
		clear(c.cluster)
	} else {
		for channel, n := range c.pending {
			if n > 0 && c.sent[channel] != n {
				c.sent[channel] = n
				changes = append(changes, change{channel, n})
				hooks = append(hooks, change{channel, n})
			}
		}
		clear(c.pending)
	}
	c.mu.Unlock()
	for _, ch := range changes {
		a.rooms.Publish(a.room(ch.channel), encodeSubscriptionCount(ch.channel, ch.n), nil)
	}
	for _, ch := range hooks {
		h.emit(hookEvent{typ: evSubscriptionCount, channel: ch.channel, count: ch.n})
	}
}

// encodeSubscriptionCount returns the pusher_internal:subscription_count of
// channel, which pusher-js re-emits as pusher:subscription_count.
func encodeSubscriptionCount(channel string, n int) []byte {
	d := strconv.AppendInt([]byte(`{"subscription_count":`), int64(n), 10)
	return encodeEvent("pusher_internal:subscription_count", channel, string(append(d, '}')), "")
}
