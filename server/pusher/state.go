package pusher

import (
	"encoding/json"

	"chatd/server/broker"
	"chatd/server/history"
	"chatd/server/pubhook"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CacheTTL is how long a cache channel remembers its last event (within
// the app's MaxCacheChannels and MaxCacheBytes).
const CacheTTL = 30 * time.Minute

// appState is the protocol state of one app: occupied channels with their
// presence members, signed-in users, the last events of cache channels and
// the socket_id index.
//
// mu guards channels, users and cache. Rooms and Conn.Send are called with mu
// held where the order matters (subscribe, unsubscribe, close, and deliver
// on cache channels), so that member_added/member_removed,
// subscription_succeeded and cache replays reach every connection in the
// order they were decided. sockMu guards sockets and is a leaf: nothing is
// called and no other lock is taken while it is held.
type appState struct {
	p     *Protocol
	app   *App
	rooms Rooms

	mu       sync.Mutex
	channels map[string]*channelState // occupied channels (user channels are not listed)
	users    map[string][]*Session    // signed-in user ID -> its connections
	cache    eventCache               // cache channel -> last event
	watchers map[string][]*Session    // watched user ID -> connections watching it (watchlist.go)
	hooks    *appHooks                // webhooks and subscription counts (webhook_events.go); nil if none
	pubHook  *pubhook.Hook            // the publish hook (publishhook.go); nil if none

	// In a cluster (cluster.go): presence channels as the cluster knows
	// them, and this node's connections in them by channel NUL user.
	presence  map[string]*presenceState
	local     map[string]*localPresence
	occupancy map[string]map[string]int // channel -> node -> its subscribers (occupancy webhooks and subscription counts only)

	sockMu  sync.RWMutex
	sockets map[string]*Session // socket_id -> connection

	counters appCounters
}

// channelState is an occupied channel.
type channelState struct {
	subs    int                // subscribed connections
	members map[string]*member // presence channels: user ID -> member
}

// memberIDs returns the user IDs of the channel's presence members, sorted.
func (ch *channelState) memberIDs() []string { return slices.Sorted(maps.Keys(ch.members)) }

// member is one user of a presence channel, however many connections
// (browser tabs) it has there: the first adds it, the last removes it.
type member struct {
	info  json.RawMessage // user_info from the first connection; nil if none
	conns int
}

// subscribeError is a refused subscription, sent as
// pusher:subscription_error.
type subscribeError struct {
	typ    string // AuthError, InvalidChannel, LimitReached
	msg    string
	status int // HTTP-like: 400 invalid, 401 unauthorized, 403 over a limit
}

func newAppState(p *Protocol, app *App) *appState {
	return &appState{
		p: p, app: app, rooms: p.rooms,
		channels:  make(map[string]*channelState),
		users:     make(map[string][]*Session),
		sockets:   make(map[string]*Session),
		presence:  make(map[string]*presenceState),
		local:     make(map[string]*localPresence),
		occupancy: make(map[string]map[string]int),
		pubHook:   newPublishHook(app),
	}
}

func (a *appState) room(channel string) string { return RoomKey(a.app.ID, channel) }

// subscribe joins s to sub.channel and sends subscription_succeeded (with
// the member list on presence channels), then member_added to the others
// when sub.userID is a new member, then the cached event or cache_miss on
// cache channels. again means s is already subscribed: only the replies are
// sent again.
func (a *appState) subscribe(s *Session, sub subscription, info json.RawMessage, again bool, rr recoveryRequest) *subscribeError {
	if sub.kind&kindPresence != 0 && a.p.cluster != nil {
		return a.subscribePresenceClustered(s, sub, info, again)
	}
	room := a.room(sub.channel)
	a.mu.Lock()
	defer a.mu.Unlock()

	if sub.kind&kindUser != 0 {
		a.rooms.Subscribe(room, s.conn)
		s.conn.Send(encodeEvent("pusher_internal:subscription_succeeded", sub.channel, "{}", ""))
		return nil
	}

	ch := a.channels[sub.channel]
	var added *member
	join := false
	if !again || ch == nil {
		if sub.kind&kindPresence != 0 {
			var m *member
			if ch != nil {
				m = ch.members[sub.userID]
			}
			if m == nil {
				if ch != nil && len(ch.members) >= a.app.MaxPresenceMembers {
					return &subscribeError{"LimitReached",
						"presence channel " + sub.channel + " is full: it has the maximum of " +
							strconv.Itoa(a.app.MaxPresenceMembers) + " members", 403}
				}
				m = &member{info: info}
				added = m
				a.counters.members.Add(1)
			}
			m.conns++
			if ch == nil {
				ch = &channelState{}
				a.channels[sub.channel] = ch
				a.occupiedLocked(sub.channel, true)
			}
			if ch.members == nil {
				ch.members = make(map[string]*member)
			}
			ch.members[sub.userID] = m
		} else if ch == nil {
			ch = &channelState{}
			a.channels[sub.channel] = ch
			a.occupiedLocked(sub.channel, true)
		}
		ch.subs++
		a.hooks.subscriptionCount(sub.channel, ch.subs)
		a.counters.subs.Add(1)
		join = true
	}

	data := "{}"
	if sub.kind&kindPresence != 0 {
		data = string(appendPresence(nil, ch))
	}
	recovered := false
	switch lim := a.p.historyLimits(a.app); {
	case join && lim.Size > 0:
		// Joined, told its position and given what it asked for in one
		// step, before any live event (history.go).
		a.subscribeKept(s, room, sub.channel, data, lim, rr)
		recovered = rr.asked
	case join:
		a.rooms.Subscribe(room, s.conn)
		fallthrough
	default:
		s.conn.Send(encodeEvent("pusher_internal:subscription_succeeded", sub.channel, data, ""))
		if join && rr.asked {
			s.conn.Send(recoveryFailed(sub.channel, history.Position{}, history.ErrOff))
			a.p.recoveryFailed.Add(1)
		}
	}
	if added != nil {
		a.rooms.Publish(room, encodeEvent("pusher_internal:member_added", sub.channel,
			string(appendMember(nil, sub.userID, added.info)), ""), s.conn)
		a.hooks.memberAdded(sub.channel, sub.userID)
	}
	// A subscriber that recovered or rewound has the cache channel's last
	// event among what it was given (or was told it could not be).
	if sub.kind&kindCache != 0 && !recovered {
		if e := a.cache.get(sub.channel, a.p.now()); e != nil {
			s.conn.Send(e.msg)
		} else {
			s.conn.Send(encodeCacheMiss(sub.channel))
			a.hooks.cacheMiss(sub.channel)
		}
	}
	return nil
}

// unsubscribe removes s from sub.channel.
func (a *appState) unsubscribe(s *Session, sub subscription) {
	a.mu.Lock()
	a.unsubscribeLocked(s, sub)
	a.mu.Unlock()
}

// unsubscribeLocked removes s from sub.channel and announces
// member_removed when s was the last connection of its presence member.
func (a *appState) unsubscribeLocked(s *Session, sub subscription) {
	c := s.conn
	if sub.kind&kindPresence != 0 && a.p.cluster != nil {
		a.unsubscribePresenceClustered(c, s, sub)
		return
	}
	room := a.room(sub.channel)
	a.rooms.Unsubscribe(room, c)
	if sub.kind&kindUser != 0 {
		return
	}
	ch := a.channels[sub.channel]
	if ch == nil {
		return
	}
	if sub.kind&kindPresence != 0 {
		if m := ch.members[sub.userID]; m != nil {
			m.conns--
			if m.conns <= 0 {
				delete(ch.members, sub.userID)
				a.counters.members.Add(-1)
				a.rooms.Publish(room, encodeEvent("pusher_internal:member_removed", sub.channel,
					string(appendMember(nil, sub.userID, nil)), ""), nil)
				a.hooks.memberRemoved(sub.channel, sub.userID)
			}
		}
	}
	ch.subs--
	a.hooks.subscriptionCount(sub.channel, ch.subs)
	a.counters.subs.Add(-1)
	if ch.subs <= 0 {
		delete(a.channels, sub.channel)
		a.occupiedLocked(sub.channel, false)
	}
}

// deliver hands an event for channel (data is its data, for the HTTP
// API's info=cache; userID the sender on presence channels) to the
// channel's room, for every subscriber but `except` (the connection with
// socket_id exceptID, which may be on another node). On a channel that
// keeps history the event is encoded with its position and kept. On a
// cache channel it first stores the event in the cache, subscribed or
// not, as Pusher does; it does both under a.mu, so that a connection
// subscribing meanwhile gets the event exactly once: live if it joined
// first, from the cache if after. Other channels need no lock. In a
// cluster the event also goes, once, to the other nodes.
func (a *appState) deliver(channel, event, data, userID string, except Conn, exceptID string) (stored func() error) {
	room := a.room(channel)
	cl := a.p.cluster
	cache := classify(channel)&kindCache != 0
	if cache {
		a.mu.Lock()
	}
	var msg []byte
	if lim := a.p.historyLimits(a.app); lim.Size > 0 {
		// Kept, and in a cluster carried by the history stream.
		msg, stored = a.publishKept(room, lim, event, channel, data, userID, except, exceptID)
	} else {
		msg = encodeEvent(event, channel, data, userID)
		a.rooms.Publish(room, msg, except)
		if cl != nil {
			cl.Publish(room, msg, exceptID)
		}
	}
	if !cache {
		return stored
	}
	now := a.p.now()
	a.cache.expire(now)
	a.cache.store(channel, msg, data, now.Add(CacheTTL), a.app.MaxCacheChannels, a.app.MaxCacheBytes)
	a.mu.Unlock()
	if cl != nil {
		cl.PutCache(broker.CacheEntry{App: a.app.ID, Channel: channel, Node: a.p.node, Except: exceptID, Data: data, Msg: msg})
	}
	return stored
}

// close forgets a closed connection: its subscriptions (announcing
// member_removed where it was a member's last connection), its signed-in
// user and its socket_id.
func (a *appState) close(s *Session) {
	a.mu.Lock()
	for _, sub := range s.subs {
		a.unsubscribeLocked(s, sub)
	}
	if s.userID != "" {
		a.removeUserLocked(s.userID, s)
	}
	a.mu.Unlock()

	a.sockMu.Lock()
	if a.sockets[s.socketID] == s {
		delete(a.sockets, s.socketID)
	}
	a.sockMu.Unlock()
}

// addSocket registers s under its socket_id; false if the ID is taken.
func (a *appState) addSocket(s *Session) bool {
	a.sockMu.Lock()
	defer a.sockMu.Unlock()
	if _, taken := a.sockets[s.socketID]; taken {
		return false
	}
	a.sockets[s.socketID] = s
	return true
}

// conn returns the connection with the given socket_id, or nil.
func (a *appState) conn(socketID string) Conn {
	a.sockMu.RLock()
	s := a.sockets[socketID]
	a.sockMu.RUnlock()
	if s == nil {
		return nil
	}
	return s.conn
}

func (a *appState) addUser(id string, s *Session) {
	a.mu.Lock()
	a.users[id] = append(a.users[id], s)
	if len(a.users[id]) == 1 {
		a.userOnline(id)
	}
	a.mu.Unlock()
}

func (a *appState) removeUserLocked(id string, s *Session) {
	a.unwatch(s)
	if removeSession(a.users, id, s) {
		a.userOffline(id)
	}
}

// removeSession takes s out of m[key] (order not kept) and reports whether
// that left the key without sessions (it is then deleted).
func removeSession(m map[string][]*Session, key string, s *Session) (empty bool) {
	list := m[key]
	if i := slices.Index(list, s); i >= 0 {
		list[i] = list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
	}
	if len(list) == 0 {
		delete(m, key)
		return true
	}
	m[key] = list
	return false
}

// terminate closes every connection of this node signed in as user id,
// with CodeUnauthorized so that pusher-js does not reconnect on its own.
func (a *appState) terminate(id string) {
	const reason = "Connection terminated by the application"
	for _, c := range a.userConns(id) {
		c.Send(encodeError(CodeUnauthorized, reason))
		c.Close(CodeUnauthorized, reason)
	}
}

// userConns returns the connections signed in as user id.
func (a *appState) userConns(id string) []Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	list := a.users[id]
	conns := make([]Conn, len(list))
	for i, s := range list {
		conns[i] = s.conn
	}
	return conns
}

// channelInfo is a snapshot of one occupied channel for the HTTP API.
type channelInfo struct {
	name  string
	subs  int
	users int
}

// occupied returns the occupied channels whose name starts with prefix,
// sorted by name (in a cluster: on any node).
func (a *appState) occupied(prefix string) []channelInfo {
	if a.p.cluster != nil {
		return a.clusterOccupied(prefix)
	}
	a.mu.Lock()
	list := make([]channelInfo, 0, len(a.channels))
	for name, ch := range a.channels {
		if strings.HasPrefix(name, prefix) {
			list = append(list, channelInfo{name, ch.subs, len(ch.members)})
		}
	}
	a.mu.Unlock()
	slices.SortFunc(list, func(x, y channelInfo) int { return strings.Compare(x.name, y.name) })
	return list
}

// channel returns a snapshot of one channel; zero counts if unoccupied
// (in a cluster: summed over the nodes).
func (a *appState) channel(name string) channelInfo {
	if a.p.cluster != nil {
		return a.clusterChannel(name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	info := channelInfo{name: name}
	if ch := a.channels[name]; ch != nil {
		info.subs, info.users = ch.subs, len(ch.members)
	}
	return info
}

// members returns the user IDs of a presence channel, sorted.
func (a *appState) members(name string) []string {
	if a.p.cluster != nil {
		return a.clusterMembers(name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ch := a.channels[name]; ch != nil {
		return ch.memberIDs()
	}
	return nil
}

// cached returns the data of a cache channel's last event and its
// remaining time to live.
func (a *appState) cached(name string) (data string, ttl time.Duration, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.p.now()
	e := a.cache.get(name, now)
	if e == nil {
		return "", 0, false
	}
	return e.data, e.expires.Sub(now), true
}

// cacheStats adds the app's cache counters to st.
func (a *appState) cacheStats(st *Stats) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st.CacheChannels += len(a.cache.entries)
	st.CacheBytes += int64(a.cache.bytes)
	st.CacheEvictions += a.cache.evictions
	st.CacheExpirations += a.cache.expirations
}

// appendPresence appends the data of a presence subscription_succeeded:
// {"presence":{"ids":[...],"hash":{id:user_info},"count":n}}, IDs sorted.
func appendPresence(b []byte, ch *channelState) []byte {
	ids := ch.memberIDs()
	b = append(b, `{"presence":{"ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(b, id)
	}
	b = append(b, `],"hash":{`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(b, id)
		b = append(b, ':')
		b = appendInfo(b, ch.members[id].info)
	}
	b = append(b, `},"count":`...)
	b = strconv.AppendInt(b, int64(len(ids)), 10)
	return append(b, `}}`...)
}

// appendMember appends {"user_id":id,"user_info":info} (member_added) or,
// with a nil info, {"user_id":id} (member_removed).
func appendMember(b []byte, id string, info json.RawMessage) []byte {
	b = append(b, `{"user_id":`...)
	b = appendQuoted(b, id)
	if info != nil {
		b = append(b, `,"user_info":`...)
		b = append(b, info...)
	}
	return append(b, '}')
}

func appendInfo(b []byte, info json.RawMessage) []byte {
	if info == nil {
		return append(b, "null"...)
	}
	return append(b, info...)
}

// encodeCacheMiss returns the pusher:cache_miss event of a cache channel
// without a cached event.
func encodeCacheMiss(channel string) []byte {
	b := make([]byte, 0, 48+len(channel))
	b = append(b, `{"event":"pusher:cache_miss","channel":`...)
	b = appendQuoted(b, channel)
	return append(b, '}')
}
