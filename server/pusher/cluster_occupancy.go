package pusher

// Occupancy and subscription counts in a cluster: this node's share, the
// cluster-wide transitions, and the counts the HTTP API asks for.

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"chatd/server/broker"
)

// occupiedLocked is called when a channel gets its first (on) or loses
// its last subscriber on this node. On a single node that is the
// channel_occupied/vacated transition; in a cluster the node's share is
// recorded, and the cluster-wide transition comes from PresenceUpdate.
func (a *appState) occupiedLocked(channel string, on bool) {
	if a.p.cluster == nil {
		if on {
			a.hooks.channelOccupied(channel)
		} else {
			a.hooks.channelVacated(channel)
		}
		return
	}
	if a.hooks.wantsOccupancy() || a.hooks.countsOn() {
		n := 0
		if on {
			n = 1 // the sweep stores the count as it changes
		}
		a.p.cluster.SetOccupied(a.app.ID, channel, n)
	}
}

// applyOccupancyLocked applies a node's occupancy entry (its subscription
// count in the channel): the webhooks of a cluster-wide transition are
// posted by the node that owns the change, and the cluster's total goes to
// the subscription counts.
func (a *appState) applyOccupancyLocked(e broker.PresenceEntry) {
	nodes := a.occupancy[e.Channel]
	n, _ := strconv.Atoi(string(e.Info))
	if e.Deleted || n <= 0 {
		if _, ok := nodes[e.Node]; !ok {
			return
		}
		delete(nodes, e.Node)
		if len(nodes) == 0 {
			delete(a.occupancy, e.Channel)
			if a.p.cluster.Owns(e.Node) {
				a.hooks.channelVacated(e.Channel)
			}
		}
		a.clusterCountLocked(e.Channel, nodes, e.Node)
		return
	}
	if nodes == nil {
		nodes = make(map[string]int)
		a.occupancy[e.Channel] = nodes
	}
	old, had := nodes[e.Node]
	nodes[e.Node] = n
	if !had && len(nodes) == 1 && a.p.cluster.Owns(e.Node) {
		a.hooks.channelOccupied(e.Channel)
	}
	if old != n {
		a.clusterCountLocked(e.Channel, nodes, e.Node)
	}
}

// clusterCountLocked hands the channel's cluster-wide subscription count
// to the subscription counts (App.SubscriptionCount).
func (a *appState) clusterCountLocked(channel string, nodes map[string]int, changedBy string) {
	if !a.hooks.countsOn() || classify(channel)&kindPresence != 0 {
		return
	}
	total := 0
	for _, n := range nodes {
		total += n
	}
	a.hooks.counts.clusterChanged(channel, total, a.p.cluster.Owns(changedBy))
}

// countsQuery is a cluster-wide query of subscription counts: the channels
// with a prefix, or one channel.
type countsQuery struct {
	Prefix  string `json:"prefix,omitempty"`
	Channel string `json:"channel,omitempty"`
	One     bool   `json:"one,omitempty"`
}

// Counts answers another node's countsQuery with this node's subscription
// counts, {"channel": subscriptions}.
func (p *Protocol) Counts(appID string, query []byte) []byte {
	a := p.states[appID]
	var q countsQuery
	if a == nil || json.Unmarshal(query, &q) != nil {
		return []byte("{}")
	}
	out := a.localCounts(q)
	b, _ := json.Marshal(out)
	return b
}

func (a *appState) localCounts(q countsQuery) map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int)
	if q.One {
		if ch := a.channels[q.Channel]; ch != nil && ch.subs > 0 {
			out[q.Channel] = ch.subs
		}
		return out
	}
	for name, ch := range a.channels {
		if strings.HasPrefix(name, q.Prefix) && ch.subs > 0 {
			out[name] = ch.subs
		}
	}
	return out
}

// clusterCounts sums the subscription counts of every node for q.
func (a *appState) clusterCounts(q countsQuery) map[string]int {
	sum := a.localCounts(q)
	query, _ := json.Marshal(q)
	for _, answer := range a.p.cluster.Gather(a.app.ID, query) {
		var m map[string]int
		if json.Unmarshal(answer, &m) != nil {
			continue
		}
		for name, n := range m {
			sum[name] += n
		}
	}
	return sum
}

// clusterOccupied is occupied across the cluster: the channels with
// subscribers on any node, with their summed subscriptions and, on
// presence channels, the cluster's member counts.
func (a *appState) clusterOccupied(prefix string) []channelInfo {
	sum := a.clusterCounts(countsQuery{Prefix: prefix})
	a.mu.Lock()
	list := make([]channelInfo, 0, len(sum))
	for name, n := range sum {
		ci := channelInfo{name: name, subs: n}
		if ps := a.presence[name]; ps != nil {
			ci.users = ps.accepted
		}
		list = append(list, ci)
	}
	a.mu.Unlock()
	slices.SortFunc(list, func(x, y channelInfo) int { return strings.Compare(x.name, y.name) })
	return list
}

func (a *appState) clusterChannel(name string) channelInfo {
	sum := a.clusterCounts(countsQuery{Channel: name, One: true})
	a.mu.Lock()
	defer a.mu.Unlock()
	ci := channelInfo{name: name, subs: sum[name]}
	if ps := a.presence[name]; ps != nil {
		ci.users = ps.accepted
	}
	return ci
}
