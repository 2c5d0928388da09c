package pusher

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxEventNameLen is the longest event name accepted, from clients and from
// the HTTP API (the pusher SDK enforces the same 200).
const MaxEventNameLen = 200

// Session is the protocol state of one open connection. The engine calls
// Message for each text frame, Closed once when the connection is gone, and
// Ping / ActivityTimeout from its timers.
type Session struct {
	app      *appState
	conn     Conn
	socketID string

	mu     sync.Mutex // guards the fields below; taken before appState.mu
	closed bool
	subs   []subscription // at most App.MaxChannelsPerConn
	userID string         // set by pusher:signin
	events gcra           // client event rate limit

	watchlist []string // the signed-in user's watchlist (watchlist.go)

	// The publish hook (publishhook.go): a client event of this
	// connection waits for the app's backend, and the messages read
	// meanwhile wait behind it.
	holding bool
	held    [][]byte
}

// subscription is one channel a connection is subscribed to.
type subscription struct {
	channel string
	kind    channelKind
	userID  string // presence channels: the member this connection counts for
}

// SocketID returns the connection's socket_id.
func (s *Session) SocketID() string { return s.socketID }

// App returns the app the connection belongs to.
func (s *Session) App() *App { return s.app.app }

// ActivityTimeout returns the app's activity timeout, as advertised in
// pusher:connection_established: a client pings when it has received
// nothing for that long. The engine should send Ping to a connection from
// which it has received nothing (no frame of any kind) for
// ActivityTimeout, and close it with CodePongTimeout (4201) when nothing
// arrives within PongTimeout after that ping.
func (s *Session) ActivityTimeout() time.Duration { return s.app.app.ActivityTimeout }

// MaxMessageBytes is the app's App.MaxMessageBytes: the largest frame the
// engine should accept on this connection, so that a client event within
// the app's MaxEventBytes reaches Message (and one over it gets pusher:error
// from Message rather than a close by the engine). chatd's engine reads it
// once the session is open and accepts frames of up to the larger of it and
// its own MaxMessage.
func (s *Session) MaxMessageBytes() int { return s.app.app.MaxMessageBytes() }

// Ping sends a pusher:ping; the client answers pusher:pong. Engines may
// send a WebSocket ping frame instead or as well (pusher-js in a browser
// cannot see protocol pings, but answers them).
func (s *Session) Ping() { s.conn.Send(msgPing) }

// UserID returns the user the connection signed in as, or "".
func (s *Session) UserID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userID
}

// Closed releases everything the connection held: it leaves its channels
// (sending member_removed where it was a presence member's last
// connection) and forgets its socket_id and signed-in user. Idempotent;
// Message calls after Closed are ignored.
func (s *Session) Closed() {
	if h := s.app.pubHook; h != nil {
		h.Cancel(s) // first: its callbacks take s.mu
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.app.counters.conns.Add(-1)
	s.app.close(s)
	s.subs = nil
}

// Message handles one text frame from the client. data is only read during
// the call. Calls for one session should come one at a time (the engine
// runs one read job per connection); they are serialized anyway.
func (s *Session) Message(data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.holding {
		s.holdMessage(data)
		return
	}
	s.messageLocked(data)
}

// messageLocked is Message with s.mu held.
func (s *Session) messageLocked(data []byte) {
	m, err := parseMessage(data)
	if err != nil {
		s.sendError(0, "invalid message: "+err.Error())
		return
	}
	switch m.Event {
	case "pusher:ping":
		s.conn.Send(msgPong)
	case "pusher:pong":
		// Any frame counts as activity; the engine has noted it already.
	case "pusher:subscribe":
		s.subscribe(m.Data)
	case "pusher:unsubscribe":
		s.unsubscribe(m.Data)
	case "pusher:signin":
		s.signin(m.Data)
	default:
		switch {
		case strings.HasPrefix(m.Event, "client-"):
			s.clientEvent(m)
		case strings.HasPrefix(m.Event, "pusher:"), strings.HasPrefix(m.Event, "pusher_internal:"):
			s.sendError(0, "unsupported event "+strconv.Quote(m.Event))
		default:
			s.sendError(0, "client event "+strconv.Quote(m.Event)+" rejected: client event names must start with client-")
		}
	}
}

func (s *Session) sendError(code int, msg string) {
	s.app.p.log.Debug("pusher: protocol error", "app", s.app.app.ID, "socket_id", s.socketID, "code", code, "error", msg)
	s.conn.Send(encodeError(code, msg))
}

func (s *Session) sendSubscribeError(channel string, e *subscribeError) {
	s.app.p.log.Debug("pusher: subscription refused", "app", s.app.app.ID, "socket_id", s.socketID, "channel", channel, "error", e.msg)
	if e.typ == "AuthError" {
		s.app.counters.authSub.Add(1)
	}
	s.conn.Send(encodeSubscriptionError(channel, e.typ, e.msg, e.status))
}

func (s *Session) find(channel string) int {
	return slices.IndexFunc(s.subs, func(sub subscription) bool { return sub.channel == channel })
}

// subscribeData is the data of pusher:subscribe.
type subscribeData struct {
	Channel     string          `json:"channel"`
	Auth        string          `json:"auth"`
	ChannelData json.RawMessage `json:"channel_data"`
	// chatd's recovery plugin (history.go): resume after a position, or
	// the last N events on a first subscription.
	Since  *string         `json:"chatd_since"`
	Rewind json.RawMessage `json:"chatd_rewind"`
}

// memberData is a presence channel's channel_data.
type memberData struct {
	UserID   json.RawMessage `json:"user_id"`
	UserInfo json.RawMessage `json:"user_info"`
}

func (s *Session) subscribe(raw json.RawMessage) {
	var d subscribeData
	if err := decodeData(raw, &d); err != nil {
		s.sendError(0, "invalid pusher:subscribe data: "+err.Error())
		return
	}
	app := s.app.app
	name := d.Channel
	if !validChannelName(name) {
		s.sendSubscribeError(name, &subscribeError{"InvalidChannel", invalidChannelMsg(name), 400})
		return
	}
	kind := classify(name)
	again := s.find(name) >= 0
	if !again && len(s.subs) >= app.MaxChannelsPerConn {
		s.sendSubscribeError(name, &subscribeError{"LimitReached",
			"too many channels: a connection may subscribe to at most " + strconv.Itoa(app.MaxChannelsPerConn), 403})
		return
	}
	sub := subscription{channel: name, kind: kind}
	var info json.RawMessage
	switch {
	case kind&kindUser != 0:
		if s.userID == "" || name != UserChannelPrefix+s.userID {
			s.sendSubscribeError(name, &subscribeError{"AuthError", "only the connection signed in as that user may subscribe to " + name, 401})
			return
		}
	case kind.authorized():
		channelData, err := dataString(d.ChannelData)
		if err != nil {
			s.sendSubscribeError(name, &subscribeError{"AuthError", "invalid channel_data: " + err.Error(), 401})
			return
		}
		if !verifyAuth(d.Auth, ChannelAuth(app, s.socketID, name, channelData)) {
			s.sendSubscribeError(name, &subscribeError{"AuthError", "invalid signature: auth must be " + app.Key +
				":HMAC-SHA256-hex(secret, \"" + s.socketID + ":" + name + presenceSuffix(kind) + "\")", 401})
			return
		}
		if kind&kindPresence != 0 {
			var e *subscribeError
			sub.userID, info, e = parseMember(app, channelData)
			if e != nil {
				s.sendSubscribeError(name, e)
				return
			}
		}
	}
	if again {
		// Re-subscribing keeps the first subscription (and the member it
		// counts for); only the confirmation is sent again.
		sub = s.subs[s.find(name)]
	}
	if e := s.app.subscribe(s, sub, info, again, parseRecovery(d.Since, d.Rewind)); e != nil {
		s.sendSubscribeError(name, e)
		return
	}
	if !again {
		s.subs = append(s.subs, sub)
	}
}

func presenceSuffix(k channelKind) string {
	if k&kindPresence != 0 {
		return ":<channel_data>"
	}
	return ""
}

// parseMember validates a presence channel_data: user_id a non-empty string
// (or a number, as PHP apps send it) of at most MaxPresenceIDLen bytes,
// user_info optional JSON of at most MaxUserInfoBytes.
func parseMember(app *App, channelData string) (string, json.RawMessage, *subscribeError) {
	var md memberData
	if err := json.Unmarshal([]byte(channelData), &md); err != nil {
		return "", nil, &subscribeError{"AuthError", "presence channel_data is not a JSON object with user_id: " + err.Error(), 400}
	}
	var id string
	raw := bytes.TrimSpace(md.UserID)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		if err := json.Unmarshal(raw, &id); err != nil {
			return "", nil, &subscribeError{"AuthError", "invalid user_id: " + err.Error(), 400}
		}
	case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		id = string(raw)
	}
	if !validUserID(id, app.MaxPresenceIDLen) {
		return "", nil, &subscribeError{"AuthError", "presence channel_data needs a user_id string of 1 to " +
			strconv.Itoa(app.MaxPresenceIDLen) + " bytes", 400}
	}
	var info json.RawMessage
	if t := bytes.TrimSpace(md.UserInfo); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, t); err != nil {
			return "", nil, &subscribeError{"AuthError", "invalid user_info: " + err.Error(), 400}
		}
		if buf.Len() > app.MaxUserInfoBytes {
			return "", nil, &subscribeError{"LimitReached", "user_info is " + strconv.Itoa(buf.Len()) +
				" bytes; the limit is " + strconv.Itoa(app.MaxUserInfoBytes), 403}
		}
		info = buf.Bytes()
	}
	return id, info, nil
}

func (s *Session) unsubscribe(raw json.RawMessage) {
	var d struct {
		Channel string `json:"channel"`
	}
	if err := decodeData(raw, &d); err != nil {
		s.sendError(0, "invalid pusher:unsubscribe data: "+err.Error())
		return
	}
	i := s.find(d.Channel)
	if i < 0 {
		return // not subscribed: unsubscribing is idempotent
	}
	sub := s.subs[i]
	s.subs = slices.Delete(s.subs, i, i+1)
	s.app.unsubscribe(s, sub)
}

// clientEvent relays a client-* event to the other subscribers of a
// private or presence channel (Pusher: "Triggering Client Events").
func (s *Session) clientEvent(m clientMessage) {
	app := s.app.app
	reject := func(why string) {
		s.sendError(0, "client event "+strconv.Quote(m.Event)+" rejected: "+why)
	}
	switch kind := classify(m.Channel); {
	case !app.ClientEvents:
		reject("client events are not enabled for this app")
		return
	case len(m.Event) > MaxEventNameLen:
		reject("event name longer than " + strconv.Itoa(MaxEventNameLen) + " bytes")
		return
	case kind&(kindPrivate|kindPresence) == 0:
		reject("client events are only allowed on private and presence channels")
		return
	case kind&kindEncrypted != 0:
		reject("client events are not allowed on encrypted channels")
		return
	}
	i := s.find(m.Channel)
	if i < 0 {
		reject("not subscribed to channel " + strconv.Quote(m.Channel))
		return
	}
	data, err := dataString(m.Data)
	if err != nil {
		reject("invalid data: " + err.Error())
		return
	}
	if len(data) > app.MaxEventBytes {
		reject("data is " + strconv.Itoa(len(data)) + " bytes; the limit is " + strconv.Itoa(app.MaxEventBytes))
		return
	}
	if !s.allowClientEvent(app.ClientEventsPerSecond) {
		s.sendError(CodeClientEventRateLimited, "Client event rejected due to rate limit (at most "+
			strconv.Itoa(app.ClientEventsPerSecond)+" per second)")
		return
	}
	if h := s.app.pubHook; h != nil {
		s.askHook(h, m.Channel, m.Event, data, s.subs[i].userID)
		return
	}
	s.relayClientEvent(m.Channel, m.Event, data, s.subs[i].userID)
}

// relayClientEvent delivers a client event; on presence channels the
// recipients learn who sent it (member). s.mu held.
func (s *Session) relayClientEvent(channel, event, data, member string) {
	s.app.deliver(channel, event, data, member, s.conn, s.socketID)
	s.app.hooks.clientEvent(channel, event, data, s.socketID, member)
	s.app.counters.clientEvents.Add(1)
}

// allowClientEvent limits client events to perSecond per second, with
// bursts of up to perSecond.
func (s *Session) allowClientEvent(perSecond int) bool {
	interval := time.Second / time.Duration(perSecond)
	ok, _ := s.events.allow(s.app.p.now().Sub(s.app.p.epoch), interval, time.Second-interval)
	return ok
}

// signinData is the data of pusher:signin.
type signinData struct {
	Auth     string `json:"auth"`
	UserData string `json:"user_data"`
}

// signin authenticates the connection as a user (Pusher "User
// authentication"): it may then subscribe to its #server-to-user- channel,
// and the HTTP API can terminate its connections.
func (s *Session) signin(raw json.RawMessage) {
	var d signinData
	if err := decodeData(raw, &d); err != nil {
		s.sendError(CodeUnauthorized, "invalid pusher:signin data: "+err.Error())
		return
	}
	app := s.app.app
	if !verifyAuth(d.Auth, UserAuth(app, s.socketID, d.UserData)) {
		s.app.counters.authSub.Add(1)
		s.sendError(CodeUnauthorized, "invalid signature: auth must be "+app.Key+
			":HMAC-SHA256-hex(secret, \""+s.socketID+"::user::<user_data>\")")
		return
	}
	var user struct {
		ID        json.RawMessage `json:"id"`
		Watchlist json.RawMessage `json:"watchlist"`
	}
	var id string
	if err := json.Unmarshal([]byte(d.UserData), &user); err != nil || json.Unmarshal(user.ID, &id) != nil ||
		!validUserID(id, app.MaxPresenceIDLen) {
		s.sendError(CodeUnauthorized, "user_data must be a JSON object with an id string of 1 to "+
			strconv.Itoa(app.MaxPresenceIDLen)+" bytes")
		return
	}
	if s.userID != "" && s.userID != id {
		s.sendError(CodeUnauthorized, "connection is already signed in as another user")
		return
	}
	watchlist, err := parseWatchlist(app, user.Watchlist)
	if err != nil {
		s.sendError(CodeUnauthorized, "invalid user_data: "+err.Error())
		return
	}
	first := s.userID == ""
	if first {
		s.userID, s.watchlist = id, watchlist
		s.app.addUser(id, s)
	}
	obj := appendQuoted([]byte(`{"user_data":`), d.UserData)
	s.conn.Send(encodeObjectEvent("pusher:signin_success", "", append(obj, '}')))
	if first {
		s.app.watch(s)
	}
}
