package pusher

import (
	"bytes"
	"strconv"

	"chatd/server/pubhook"
)

// The publish hook of an app (App.PublishHook, package pubhook): a client
// event is POSTed to the app's backend before it is delivered, and
// delivered as it is, with the data the backend gives instead, or not at
// all (the sender alone gets a pusher:error saying why).
//
// While one of its client events waits for the backend, a connection's
// frames are not read (the engine's Conn implements ReadPauser), and any
// message of it that was already read is held (Session.held) and handled
// after the decision: a connection's messages keep their order, whatever
// they are, and the engine's workers never wait for the backend. The
// decision is carried out on the hook's goroutine, under the session's
// lock, as Message would.

// ReadPauser is implemented by an engine's Conn that can stop reading a
// connection for a while (backpressure). Without it, a connection is read
// on while its client events wait for the publish hook, its messages held
// in order.
type ReadPauser interface {
	PauseRead()
	ResumeRead()
}

// newPublishHook starts app's publish hook; nil when it has none.
func newPublishHook(app *App) *pubhook.Hook {
	if app.PublishHook.URL == "" {
		return nil
	}
	cfg := app.PublishHook
	cfg.Key, cfg.Secret = app.Key, app.Secret
	return pubhook.New(cfg)
}

// PublishHooks returns the apps' publish hooks by app ID (for metrics).
func (p *Protocol) PublishHooks() map[string]*pubhook.Hook {
	out := make(map[string]*pubhook.Hook)
	for id, st := range p.states {
		if st.pubHook != nil {
			out[id] = st.pubHook
		}
	}
	return out
}

// ClosePublishHooks stops the apps' publish hooks; client events still
// waiting are dropped. Call it once connections are closed.
func (p *Protocol) ClosePublishHooks() {
	for _, st := range p.states {
		if st.pubHook != nil {
			st.pubHook.Close()
		}
	}
}

// holdMessage keeps a message read while an earlier client event waits
// for the hook. s.mu held.
func (s *Session) holdMessage(data []byte) {
	s.held = append(s.held, bytes.Clone(data))
}

// askHook hands a client event to the app's publish hook. s.mu held.
func (s *Session) askHook(h *pubhook.Hook, channel, event, data, member string) {
	user := member
	if user == "" {
		user = s.userID
	}
	s.holding = true
	h.Submit(s, pubhook.Message{Kind: "client_event", Channel: channel, Event: event, UserID: user,
		SocketID: s.socketID, Data: data}, func(d pubhook.Decision) {
		s.hookDecided(channel, event, data, member, d)
	})
	if rp, ok := s.conn.(ReadPauser); ok {
		rp.PauseRead()
	}
}

// hookDecided carries out the decision about one client event, then
// handles the messages held behind it until one waits for the hook again.
func (s *Session) hookDecided(channel, event, data, member string, d pubhook.Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	switch d.Action {
	case pubhook.Reject:
		why := d.Reason
		if why == "" {
			why = "refused by the publish hook"
		}
		s.sendError(0, "client event "+strconv.Quote(event)+" rejected: "+why)
	case pubhook.Replace:
		data = d.Data
		fallthrough
	default:
		s.relayClientEvent(channel, event, data, member)
	}
	s.holding = false
	for len(s.held) > 0 && !s.holding {
		m := s.held[0]
		s.held[0] = nil
		s.held = s.held[1:]
		s.messageLocked(m)
	}
	if len(s.held) == 0 {
		s.held = nil
	}
	if !s.holding {
		if rp, ok := s.conn.(ReadPauser); ok {
			rp.ResumeRead()
		}
	}
}
