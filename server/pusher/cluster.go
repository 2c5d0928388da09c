package pusher

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"chatd/server/broker"
)

// Cluster joins this node's Pusher state to the other nodes' of a cluster
// (chatd's NATS broker). Config.Cluster nil is a single node: everything
// stays in the process, as without this file.
//
// What the package sends through it:
//
//   - every event on a channel that is not a cache channel (HTTP API,
//     client events, server-to-user events): Publish, once per event, for
//     the other nodes' subscribers, with the socket_id to leave out;
//   - every event on a cache channel: PutCache, which stores it as the
//     channel's last event for the cluster and hands it to the other nodes
//     (Protocol.CacheUpdate there);
//   - this node's share of each presence member: SetPresence when a user's
//     first connection on this node subscribes, DeletePresence when its last
//     one here leaves. Every node learns every change, in one order
//     (Protocol.PresenceUpdate), and works out the same members from it:
//     member_added when a user's first entry anywhere appears,
//     member_removed when its last one goes, each node telling its own
//     subscribers;
//   - terminate_connections: Terminate, for the user's connections on the
//     other nodes;
//   - HTTP API counts: Gather asks the other nodes for their subscription
//     counts (Protocol.Counts there) and waits for the nodes alive.
type Cluster interface {
	NodeID() string
	Publish(room string, msg []byte, except string)
	PutCache(e broker.CacheEntry)
	SetPresence(app, channel, user string, info []byte)
	DeletePresence(app, channel, user string)
	Terminate(app, user string)
	Gather(app string, query []byte) [][]byte
	// SetOccupied records how many subscribers this node has in a
	// channel, 0 for none (only for apps with occupancy webhooks or
	// subscription counts); the change comes back through PresenceUpdate
	// as an entry with Occupancy set and the count as its Info.
	SetOccupied(app, channel string, subs int)
	// Owns reports whether this node speaks for node's changes: its own,
	// and those of a node gone silent when this is the alive node with
	// the smallest ID (the one that removes its entries). A cluster-wide
	// transition's webhook is posted by the node that owns it, so once.
	Owns(node string) bool
}

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

// SetCluster joins the protocol to a cluster. Call it before the first
// connection; nil leaves it a single node.
func (p *Protocol) SetCluster(c Cluster) {
	p.cluster = c
	if c != nil {
		p.node = c.NodeID()
	}
}

// presenceState is a presence channel as the cluster knows it: every
// node's entries, and the members they make. Every node applies the same
// entries in the same order, so every node has the same members.
type presenceState struct {
	users    map[string]*clusterUser
	accepted int // members: users within the channel's member limit
}

// clusterUser is a user with entries in a presence channel.
type clusterUser struct {
	nodes    map[string]struct{} // nodes with connections of the user there
	info     json.RawMessage     // user_info of the entry that made it a member
	accepted bool                // a member; false: it came when the channel was full
}

// localPresence is a user's connections on this node in a presence
// channel. Each is waiting (for the cluster to have this node's entry) or
// joined (subscription_succeeded sent, in the channel's room).
type localPresence struct {
	conns map[*Session]bool // true: joined
	info  json.RawMessage
}

func (a *appState) localKey(channel, user string) string { return channel + "\x00" + user }

// subscribePresenceClustered is subscribe for a presence channel in a
// cluster. The first connection of a user on this node stores the node's
// entry; the subscription completes when the entry comes back through the
// cluster's order (presenceUpdate), so that the member list it gets and
// the member_added/removed after it are the cluster's, in the cluster's
// order. A user already present from this node completes at once.
func (a *appState) subscribePresenceClustered(s *Session, sub subscription, info json.RawMessage, again bool) *subscribeError {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := a.localKey(sub.channel, sub.userID)
	lp := a.local[key]
	if lp != nil {
		if joined, ok := lp.conns[s]; ok {
			if joined {
				a.sendPresenceSucceeded(s, sub.channel)
			}
			return nil // waiting: the answer comes
		}
	}
	ps := a.presence[sub.channel]
	var cu *clusterUser
	if ps != nil {
		cu = ps.users[sub.userID]
	}
	if (cu == nil || !cu.accepted) && ps != nil && ps.accepted >= a.app.MaxPresenceMembers {
		return fullError(sub.channel, a.app.MaxPresenceMembers)
	}
	if lp == nil {
		lp = &localPresence{conns: make(map[*Session]bool), info: info}
		a.local[key] = lp
		lp.conns[s] = false
		a.p.cluster.SetPresence(a.app.ID, sub.channel, sub.userID, info)
		return nil
	}
	lp.conns[s] = false
	if cu != nil {
		if _, ok := cu.nodes[a.p.node]; ok {
			a.completeLocked(sub.channel, sub.userID, cu)
		}
	}
	return nil
}

func fullError(channel string, max int) *subscribeError {
	return &subscribeError{"LimitReached", "presence channel " + channel +
		" is full: it has the maximum of " + strconv.Itoa(max) + " members", 403}
}

// unsubscribePresenceClustered is unsubscribeLocked for a presence channel
// in a cluster: the connection leaves the room if it had joined, and the
// node's entry goes with the user's last connection here. member_removed
// comes from the cluster (presenceUpdate), to every node's subscribers.
func (a *appState) unsubscribePresenceClustered(c Conn, s *Session, sub subscription) {
	key := a.localKey(sub.channel, sub.userID)
	lp := a.local[key]
	if lp == nil {
		return
	}
	joined, ok := lp.conns[s]
	if !ok {
		return
	}
	delete(lp.conns, s)
	if joined {
		a.rooms.Unsubscribe(a.room(sub.channel), c)
		if ch := a.channels[sub.channel]; ch != nil {
			ch.subs--
			a.counters.subs.Add(-1)
			a.hooks.subscriptionCount(sub.channel, ch.subs)
			if ch.subs <= 0 {
				delete(a.channels, sub.channel)
				a.occupiedLocked(sub.channel, false)
			}
		}
	}
	if len(lp.conns) == 0 {
		delete(a.local, key)
		a.p.cluster.DeletePresence(a.app.ID, sub.channel, sub.userID)
	}
}

// completeLocked answers the waiting connections of user in channel once
// the cluster holds this node's entry: subscription_succeeded with the
// cluster's members and a join to the room, or, when the user came while
// the channel was full, subscription_error.
func (a *appState) completeLocked(channel, user string, cu *clusterUser) {
	key := a.localKey(channel, user)
	lp := a.local[key]
	if lp == nil {
		return
	}
	for s, joined := range lp.conns {
		if joined {
			continue
		}
		if !cu.accepted {
			delete(lp.conns, s)
			e := fullError(channel, a.app.MaxPresenceMembers)
			s.conn.Send(encodeSubscriptionError(channel, e.typ, e.msg, e.status))
			continue
		}
		lp.conns[s] = true
		ch := a.channels[channel]
		if ch == nil {
			ch = &channelState{}
			a.channels[channel] = ch
			a.occupiedLocked(channel, true)
		}
		ch.subs++
		a.counters.subs.Add(1)
		a.hooks.subscriptionCount(channel, ch.subs)
		a.rooms.Subscribe(a.room(channel), s.conn)
		a.sendPresenceSucceeded(s, channel)
		if classify(channel)&kindCache != 0 {
			if e := a.cache.get(channel, a.p.now()); e != nil {
				s.conn.Send(e.msg)
			} else {
				s.conn.Send(encodeCacheMiss(channel))
				a.hooks.cacheMiss(channel)
			}
		}
	}
	if len(lp.conns) == 0 {
		delete(a.local, key)
		a.p.cluster.DeletePresence(a.app.ID, channel, user)
	}
}

func (a *appState) sendPresenceSucceeded(s *Session, channel string) {
	s.conn.Send(encodeEvent("pusher_internal:subscription_succeeded", channel,
		string(appendClusterPresence(nil, a.presence[channel])), ""))
}

// members returns the IDs of the channel's members, sorted.
func (ps *presenceState) members() []string {
	if ps == nil {
		return nil
	}
	ids := make([]string, 0, ps.accepted)
	for id, u := range ps.users {
		if u.accepted {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func appendClusterPresence(b []byte, ps *presenceState) []byte {
	ch := &channelState{members: make(map[string]*member)}
	for _, id := range ps.members() {
		ch.members[id] = &member{info: ps.users[id].info}
	}
	return appendPresence(b, ch)
}

// applyLocked applies one cluster entry to the presence state and returns
// the member transition it makes: +1 a new member, -1 a member gone, 0
// none.
func (a *appState) applyLocked(e broker.PresenceEntry) (delta int, cu *clusterUser) {
	ps := a.presence[e.Channel]
	if e.Deleted {
		if ps == nil {
			return 0, nil
		}
		cu = ps.users[e.User]
		if cu == nil {
			return 0, nil
		}
		if _, ok := cu.nodes[e.Node]; !ok {
			return 0, cu
		}
		delete(cu.nodes, e.Node)
		if len(cu.nodes) > 0 {
			return 0, cu
		}
		delete(ps.users, e.User)
		if len(ps.users) == 0 {
			delete(a.presence, e.Channel)
		}
		if cu.accepted {
			ps.accepted--
			return -1, cu
		}
		return 0, cu
	}
	if ps == nil {
		ps = &presenceState{users: make(map[string]*clusterUser)}
		a.presence[e.Channel] = ps
	}
	cu = ps.users[e.User]
	if cu == nil {
		cu = &clusterUser{nodes: make(map[string]struct{}), info: e.Info, accepted: ps.accepted < a.app.MaxPresenceMembers}
		ps.users[e.User] = cu
		cu.nodes[e.Node] = struct{}{}
		if cu.accepted {
			ps.accepted++
			return 1, cu
		}
		return 0, cu
	}
	cu.nodes[e.Node] = struct{}{}
	return 0, cu
}

func (a *appState) announceLocked(channel, user string, delta int, info json.RawMessage) {
	switch delta {
	case 1:
		a.rooms.Publish(a.room(channel), encodeEvent("pusher_internal:member_added", channel,
			string(appendMember(nil, user, info)), ""), nil)
	case -1:
		a.rooms.Publish(a.room(channel), encodeEvent("pusher_internal:member_removed", channel,
			string(appendMember(nil, user, nil)), ""), nil)
	}
}

// PresenceUpdate applies one change of the cluster's presence (called by
// the broker, in the cluster's order): this node's subscribers of the
// channel get member_added or member_removed for a member transition, and
// this node's connections waiting for their own entry are answered.
func (p *Protocol) PresenceUpdate(e broker.PresenceEntry) {
	a := p.states[e.App]
	if a == nil || !e.Occupancy && classify(e.Channel)&kindPresence == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.Occupancy {
		a.applyOccupancyLocked(e)
		return
	}
	delta, cu := a.applyLocked(e)
	var info json.RawMessage
	if cu != nil {
		info = cu.info
	}
	a.announceLocked(e.Channel, e.User, delta, info)
	a.counters.members.Add(int64(delta))
	if delta != 0 && a.p.cluster.Owns(e.Node) {
		if delta > 0 {
			a.hooks.memberAdded(e.Channel, e.User)
		} else {
			a.hooks.memberRemoved(e.Channel, e.User)
		}
	}
	if !e.Deleted && e.Node == p.node {
		a.completeLocked(e.Channel, e.User, cu)
	}
}

// PresenceReset replaces the cluster's presence with entries (the broker
// started over) and tells this node's subscribers the difference.
func (p *Protocol) PresenceReset(entries []broker.PresenceEntry) {
	byApp := make(map[string][]broker.PresenceEntry)
	for _, e := range entries {
		byApp[e.App] = append(byApp[e.App], e)
	}
	for id, a := range p.states {
		a.mu.Lock()
		old := a.presence
		a.presence = make(map[string]*presenceState)
		a.occupancy = make(map[string]map[string]int)
		for _, e := range byApp[id] {
			switch {
			case e.Occupancy:
				a.applyOccupancyLocked(e)
			case classify(e.Channel)&kindPresence != 0:
				a.applyLocked(e)
			}
		}
		total := 0
		for _, ps := range a.presence {
			total += ps.accepted
		}
		a.counters.members.Store(int64(total))
		for name, ps := range old {
			for _, user := range ps.members() {
				if nu := a.presence[name]; nu == nil || nu.users[user] == nil || !nu.users[user].accepted {
					a.announceLocked(name, user, -1, nil)
				}
			}
		}
		for name, ps := range a.presence {
			for _, user := range ps.members() {
				if ou := old[name]; ou == nil || ou.users[user] == nil || !ou.users[user].accepted {
					a.announceLocked(name, user, 1, ps.users[user].info)
				}
			}
			for user, cu := range ps.users {
				if _, ok := cu.nodes[p.node]; ok {
					a.completeLocked(name, user, cu)
				}
			}
		}
		a.mu.Unlock()
	}
}

// CacheUpdate stores the last event of a cache channel published on
// another node and, when it is live, delivers it to this node's
// subscribers but the socket it leaves out.
func (p *Protocol) CacheUpdate(e broker.CacheEntry) {
	a := p.states[e.App]
	if a == nil || classify(e.Channel)&kindCache == 0 {
		return
	}
	var except Conn
	if e.Except != "" {
		except = a.conn(e.Except)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := p.now()
	a.cache.expire(now)
	a.cache.store(e.Channel, e.Msg, e.Data, now.Add(CacheTTL), a.app.MaxCacheChannels, a.app.MaxCacheBytes)
	if e.Live {
		a.rooms.Publish(a.room(e.Channel), e.Msg, except)
	}
}

// DeliverRemote delivers an event another node published to room (an app's
// channel, RoomKey) to this node's subscribers but the connection with
// socket_id except. Nothing keeps msg past the call: it is not a cache
// channel's (those come through CacheUpdate), and the room frames a copy.
func (p *Protocol) DeliverRemote(room string, msg []byte, except string) {
	appID, channel, ok := strings.Cut(room, "\x00")
	if !ok {
		return
	}
	a := p.states[appID]
	if a == nil {
		return
	}
	var ex Conn
	if except != "" {
		ex = a.conn(except)
	}
	a.rooms.Publish(RoomKey(appID, channel), msg, ex)
}

// Terminate closes this node's connections of a user, asked by another
// node's HTTP API.
func (p *Protocol) Terminate(appID, user string) {
	if a := p.states[appID]; a != nil {
		a.terminate(user)
	}
}

// Up is told whether the cluster's shared state works.
func (p *Protocol) Up(up bool) {
	p.log.Debug("pusher: cluster state", "up", up)
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

func (a *appState) clusterMembers(name string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.presence[name].members()
}
