package server

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"

	"chatd/server/pubhook"
	"chatd/server/pusher"

	"github.com/gobwas/ws"
)

// The publish hook of raw rooms (Config.PublishHook, package pubhook): a
// raw member's message is POSTed to the backend before its fan-out, and
// published as it is, replaced, or dropped as the answer says.
//
// The poller's workers never wait for the backend. A message is handed to
// the hook and its connection is not read again (Desc.PauseRead) until
// every message it handed over is decided, so one connection's messages
// keep their order and a slow backend slows only the connections whose
// messages wait on it, through TCP flow control as with room
// backpressure. The decision runs on one of the hook's goroutines: it
// publishes into the member's room there (rawProto.publishRaw, so rooms
// that keep history keep what was published, replacement included) and
// reads the connection again after its last waiting message.
//
// The backend sees {"kind":"raw","room":name,"user_id":sub,
// "socket_id":connection ID,"data":text}; a binary frame's data is
// base64 with "encoding":"base64" (and a replacement for it is decoded
// the same way). A rejected message is dropped; its sender is told
// nothing (raw clients have no error frame to tell them with).

type rawPublishHook struct {
	h *pubhook.Hook
}

// newRawPublishHook starts the raw rooms' hook; its POSTs are signed with
// the first Pusher app's key and secret unless Config.PublishHook names
// its own (cmd/chatd: the -app-* app, else the default app).
func newRawPublishHook(s *Server) *rawPublishHook {
	cfg := s.cfg.PublishHook
	if cfg.Secret == "" {
		app := pusher.DefaultApp()
		if s.cfg.Apps != nil && len(s.cfg.Apps.List()) > 0 {
			app = *s.cfg.Apps.List()[0]
		}
		cfg.Key, cfg.Secret = app.Key, app.Secret
	}
	return &rawPublishHook{h: pubhook.New(cfg)}
}

// guarded applies raw auth's read-only right and the publish hook to a
// message of c; it reports whether the message was taken care of (dropped
// or handed to the hook) and must not be published now.
func (p *rawProto) guarded(c *Conn, op ws.OpCode, payload []byte) bool {
	a := p.s.access
	id := a.identity(c)
	if id == nil {
		return false
	}
	if !id.publish {
		a.readOnly.Add(1)
		return true
	}
	if a.hook == nil {
		return false
	}
	m := pubhook.Message{Kind: "raw", Room: id.room, UserID: id.user, SocketID: strconv.FormatUint(id.id, 10)}
	binary := op == ws.OpBinary
	if binary {
		m.Data = base64.StdEncoding.EncodeToString(payload)
		m.Encoding = "base64"
	} else {
		m.Data = string(payload) // payload is the decoder's: valid during this call only
	}
	a.hook.h.Submit(c, m, func(d pubhook.Decision) { p.decided(c, id, op, m.Data, binary, d) })
	// Not read again until decided (Desc.read stops after this read).
	c.d.PauseRead()
	return true
}

// decided carries out the hook's decision about one of c's messages, on
// a hook goroutine; c's connection is still open (pubhook.Hook.Cancel in
// rawProto.onClose).
func (p *rawProto) decided(c *Conn, id *rawIdentity, op ws.OpCode, data string, binary bool, d pubhook.Decision) {
	s := p.s
	if d.Action == pubhook.Replace {
		data = d.Data
	}
	var payload []byte
	publish := d.Action != pubhook.Reject
	switch {
	case !publish:
		s.log.Debug("raw message rejected by the publish hook", "user", id.user, "room", id.room, "conn_id", id.id, "reason", d.Reason, "failure", d.Failure.String())
	case binary:
		var err error
		if payload, err = base64.StdEncoding.DecodeString(data); err != nil {
			s.logLimited("publish hook: a replacement for a binary message is not base64; dropped", "user", id.user, "room", id.room)
			publish = false
		}
	default:
		payload = []byte(data)
		if !utf8.Valid(payload) {
			op = ws.OpBinary
		}
	}
	if publish && c.room != nil && p.publishRaw(c, op, payload) {
		c.room.flush()
	}
	if d.Last {
		c.d.ResumeRead()
		if c.room != nil {
			c.room.holdBack(c)
		}
	}
}

// PauseRead implements pusher.ReadPauser: the Pusher protocol stops
// reading a connection whose client event waits for the publish hook.
func (c *Conn) PauseRead() { c.d.PauseRead() }

// ResumeRead implements pusher.ReadPauser.
func (c *Conn) ResumeRead() { c.d.ResumeRead() }
