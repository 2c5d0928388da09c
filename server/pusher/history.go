package pusher

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"chatd/server/history"
)

// History (package history): channels of an app that keeps history get
// every event published to them (HTTP API events and client events, not
// the protocol's pusher_internal: ones) kept with a position, sent to
// subscribers with it as an extra top-level field that pusher-js and
// Laravel Echo ignore:
//
//	{"event":"e","channel":"c","data":"...","chatd_position":"EPOCH:OFFSET"}
//
// pusher_internal:subscription_succeeded carries the channel's position
// at the moment of the subscription too, so that a client that has seen
// no event yet still knows where it stands. A subscriber that asks for it
// (chatd's recovery plugin, /js/chatd-recovery.js, adds the fields to
// pusher:subscribe) is given, right after subscription_succeeded and before
// any live event, either the events after a position it had seen
// ("chatd_since":"EPOCH:OFFSET") or the channel's last N events
// ("chatd_rewind":N); a position that cannot be honoured gets the event
// chatd:recovery_failed instead, whose data says why and where the channel
// now stands, so that the app reloads its state rather than living with a
// silent gap.

// Recovery events and fields.
const (
	EventRecoveryFailed = "chatd:recovery_failed"
	positionField       = "chatd_position"
)

// HistoryRooms is implemented by an engine's Rooms that keeps history
// (chatd's, with package history). Like the other Rooms methods, none may
// call back into this package synchronously.
type HistoryRooms interface {
	// PublishKept is Publish for a channel that keeps history: encode is
	// called with the event's position, and its result is kept within lim
	// and delivered to the room's members but except, in position order.
	// exceptID is except's socket_id, for the other nodes of a cluster.
	// stored, when not nil, waits until the cluster's stream has stored
	// the event (what an HTTP API request waits for before its 200).
	PublishKept(room string, lim history.Limits, encode func(history.Position) []byte, except Conn, exceptID string) (stored func() error)
	// SubscribeFrom is Subscribe and, atomically with it, sends first's
	// messages (first is called with the channel's position and, for a
	// Since request, why it cannot be honoured), then, if it can be, the
	// kept events req names, before any live event. In a cluster that may
	// happen later, from another goroutine, once this node holds the
	// channel's recent events (c is subscribed at once all the same).
	SubscribeFrom(room string, c Conn, lim history.Limits, req history.Request, first func(at history.Position, err error) [][]byte)
	// History returns up to n of the room's kept events (the messages as
	// encoded), oldest first, and the newest's position.
	History(room string, lim history.Limits, n int) (msgs [][]byte, at history.Position)
}

// ErrReplayTooLarge: the events missed do not fit in what the engine may
// queue for one connection; the client must reload instead.
var ErrReplayTooLarge = errors.New("history: more was missed than one connection may be sent at once")

// historyLimits returns app's history limits; Size 0 when history is off
// for it.
func (p *Protocol) historyLimits(app *App) history.Limits {
	if p.hist == nil {
		return history.Limits{}
	}
	size, ttl := app.HistorySize, app.HistoryTTL
	if size == 0 {
		size = p.histSize
	}
	if ttl == 0 {
		ttl = p.histTTL
	}
	if size <= 0 || ttl < 0 {
		return history.Limits{}
	}
	return history.Limits{Size: size, TTL: ttl}
}

// RoomHistory returns the history limits of the channel whose room key is
// room (Size 0: it keeps none).
func (p *Protocol) RoomHistory(room string) history.Limits {
	appID, _, ok := strings.Cut(room, "\x00")
	if !ok {
		return history.Limits{}
	}
	a := p.states[appID]
	if a == nil {
		return history.Limits{}
	}
	return p.historyLimits(a.app)
}

// ConnOf returns the connection with socket_id socketID of the app of
// room, or nil.
func (p *Protocol) ConnOf(room, socketID string) Conn {
	appID, _, _ := strings.Cut(room, "\x00")
	if a := p.states[appID]; a != nil && socketID != "" {
		return a.conn(socketID)
	}
	return nil
}

// WithPosition returns an encoded event with its position (a cluster's
// node adds it when the stream hands the event over).
func WithPosition(msg []byte, pos history.Position) []byte { return appendPosition(msg, pos) }

// encodeEventAt is encodeEvent with the event's position (none when pos is
// the zero Position).
func encodeEventAt(event, channel, data, userID string, pos history.Position) []byte {
	b := encodeEvent(event, channel, data, userID)
	if pos.Epoch == "" {
		return b
	}
	return appendPosition(b, pos)
}

// appendPosition puts ,"chatd_position":"E:O" before msg's closing brace.
func appendPosition(msg []byte, pos history.Position) []byte {
	b := make([]byte, 0, len(msg)+len(positionField)+len(pos.Epoch)+28)
	b = append(b, msg[:len(msg)-1]...)
	b = append(b, `,"`+positionField+`":"`...)
	b = append(b, pos.Epoch...)
	b = append(b, ':')
	b = strconv.AppendUint(b, pos.Offset, 10)
	return append(b, `"}`...)
}

// recoveryRequest is what pusher:subscribe's data asks of the history.
type recoveryRequest struct {
	req   history.Request
	asked bool   // chatd_since or chatd_rewind was given
	bad   string // why the fields are malformed ("" when fine)
}

func parseRecovery(since *string, rewind json.RawMessage) recoveryRequest {
	var r recoveryRequest
	if since != nil {
		r.asked = true
		pos, err := history.ParsePosition(*since)
		if err != nil {
			r.bad = "chatd_since " + strconv.Quote(*since) + " is not a position (EPOCH:OFFSET as chatd sent it)"
			return r
		}
		r.req.Since = &pos
		return r
	}
	if rewind != nil {
		r.asked = true
		n, err := strconv.ParseUint(string(rewind), 10, 31)
		if err != nil {
			r.bad = "chatd_rewind " + string(rewind) + " is not a whole number of events from 0 up"
			return r
		}
		r.req.Last = int(n)
	}
	return r
}

// recoveryFailed is the event telling a subscriber its position could not
// be honoured: data {"reason", "code", "position"} with the channel's
// position now, from which it goes on.
func recoveryFailed(channel string, at history.Position, err error) []byte {
	code := "bad_request"
	switch {
	case errors.Is(err, history.ErrEpoch):
		code = "epoch_changed"
	case errors.Is(err, history.ErrTooOld):
		code = "too_old"
	case errors.Is(err, history.ErrFuture):
		code = "future"
	case errors.Is(err, history.ErrOff):
		code = "history_off"
	case errors.Is(err, history.ErrUnavailable):
		code = "unavailable"
	case errors.Is(err, ErrReplayTooLarge):
		code = "too_large"
	}
	d, _ := json.Marshal(struct {
		Code     string `json:"code"`
		Reason   string `json:"reason"`
		Position string `json:"position,omitempty"`
	}{code, err.Error(), positionString(at)})
	return encodeEventAt(EventRecoveryFailed, channel, string(d), "", at)
}

func positionString(p history.Position) string {
	if p.Epoch == "" {
		return ""
	}
	return p.String()
}

// errBadRecovery carries a malformed request's reason to recoveryFailed.
type errBadRecovery string

func (e errBadRecovery) Error() string { return string(e) }

// subscribeKept joins s to room and sends subscription_succeeded (data)
// with the channel's position, then what rr asks for, through the
// engine's HistoryRooms. a.mu is held.
func (a *appState) subscribeKept(s *Session, room, channel, data string, lim history.Limits, rr recoveryRequest) {
	req := rr.req
	if rr.bad != "" {
		req = history.Request{}
	}
	a.p.hist.SubscribeFrom(room, s.conn, lim, req, func(at history.Position, err error) [][]byte {
		msgs := [][]byte{encodeEventAt("pusher_internal:subscription_succeeded", channel, data, "", at)}
		switch {
		case rr.bad != "":
			msgs = append(msgs, recoveryFailed(channel, at, errBadRecovery(rr.bad)))
		case err != nil:
			msgs = append(msgs, recoveryFailed(channel, at, err))
		}
		if len(msgs) > 1 {
			a.p.recoveryFailed.Add(1)
		}
		return msgs
	})
}

// publishKept encodes an event with its position, keeps it and delivers
// it (appState.deliver on a channel that keeps history); it returns the
// message as encoded.
func (a *appState) publishKept(room string, lim history.Limits, event, channel, data, userID string, except Conn, exceptID string) (msg []byte, stored func() error) {
	stored = a.p.hist.PublishKept(room, lim, func(pos history.Position) []byte {
		msg = encodeEventAt(event, channel, data, userID, pos)
		return msg
	}, except, exceptID)
	return msg, stored
}

// apiHistory serves GET /apps/{app_id}/channels/{channel}/history?limit=N:
// the channel's kept events, newest last, each with its name, data,
// user_id (client events on presence channels) and position.
func (p *Protocol) apiHistory(req *apiRequest) (any, *apiError) {
	name := req.r.PathValue("channel")
	if !validChannelName(name) {
		return nil, badRequest("%s", invalidChannelMsg(name))
	}
	lim := p.historyLimits(req.st.app)
	if lim.Size <= 0 {
		return nil, &apiError{404, "app " + strconv.Quote(req.st.app.ID) + " keeps no history (history_size 0)"}
	}
	n := lim.Size
	if v := req.query.Get("limit"); v != "" {
		l, err := strconv.ParseUint(v, 10, 31)
		if err != nil || l == 0 {
			return nil, badRequest("limit %q is not a whole number from 1 up", v)
		}
		n = min(int(l), lim.Size)
	}
	msgs, at := p.hist.History(req.st.room(name), lim, n)
	type kept struct {
		Event    string `json:"event"`
		Data     string `json:"data"`
		UserID   string `json:"user_id,omitempty"`
		Position string `json:"position"`
	}
	events := make([]kept, 0, len(msgs))
	for _, m := range msgs {
		var e struct {
			Event    string `json:"event"`
			Data     string `json:"data"`
			UserID   string `json:"user_id"`
			Position string `json:"chatd_position"`
		}
		if json.Unmarshal(m, &e) == nil {
			events = append(events, kept{e.Event, e.Data, e.UserID, e.Position})
		}
	}
	return map[string]any{"channel": name, "position": positionString(at), "events": events}, nil
}
