package pusher

// Presence channels in a cluster: every node's entries, the members they
// make, and this node's connections waiting for the cluster.

import (
	"encoding/json"
	"slices"
	"strconv"

	"chatd/server/broker"
)

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

func (a *appState) clusterMembers(name string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.presence[name].members()
}
