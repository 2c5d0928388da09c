package pusher

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// The wire format: every message is one JSON object
//
//	{"event":"...","channel":"...","data":"<JSON text as a string>"}
//
// "channel" is present on channel events only. The protocol reference
// ("Double encoding") has data sent as a string holding JSON for
// connection_established, subscription_succeeded, member_added/removed and
// channel events; pusher:error, pusher:signin_success and
// pusher:subscription_error carry a JSON object. pusher-js accepts both
// (it JSON-parses a string data when it can).

// clientMessage is one message received from a client.
type clientMessage struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

var (
	errNotObject = errors.New("message is not a JSON object")
	errNoEvent   = errors.New("message has no event")
)

// parseMessage decodes a client message. The result does not alias b.
func parseMessage(b []byte) (clientMessage, error) {
	var m clientMessage
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return m, errNotObject
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, err
	}
	if m.Event == "" {
		return m, errNoEvent
	}
	return m, nil
}

// dataString returns a message's data as the string to forward: the value
// of a JSON string, else the JSON text itself (clients send client-event
// data as an object; Pusher delivers data as a string).
func dataString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	return string(raw), nil
}

// decodeData decodes a pusher:* event's data into v; the data may be the
// object itself or a string holding it.
func decodeData(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		raw = []byte(s)
	}
	return json.Unmarshal(raw, v)
}

// encodeEvent returns {"event":event,"channel":channel,"data":data} with
// data as a JSON string, plus "user_id" when userID is set; channel is left
// out when empty. It makes exactly one allocation, sized up front.
func encodeEvent(event, channel, data, userID string) []byte {
	n := len(`{"event":,"data":}`) + quotedLen(event) + quotedLen(data)
	if channel != "" {
		n += len(`,"channel":`) + quotedLen(channel)
	}
	if userID != "" {
		n += len(`,"user_id":`) + quotedLen(userID)
	}
	b := appendEventHead(make([]byte, 0, n), event, channel)
	b = appendQuoted(b, data)
	if userID != "" {
		b = append(b, `,"user_id":`...)
		b = appendQuoted(b, userID)
	}
	return append(b, '}')
}

// encodeObjectEvent returns {"event":event,"channel":channel,"data":object}
// where object is JSON text embedded as is.
func encodeObjectEvent(event, channel string, object []byte) []byte {
	b := appendEventHead(make([]byte, 0, 40+len(event)+len(channel)+len(object)), event, channel)
	b = append(b, object...)
	return append(b, '}')
}

// appendEventHead appends the start every message shares:
// {"event":event,"channel":channel,"data": with the channel left out when
// empty.
func appendEventHead(b []byte, event, channel string) []byte {
	b = append(b, `{"event":`...)
	b = appendQuoted(b, event)
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = appendQuoted(b, channel)
	}
	return append(b, `,"data":`...)
}

// encodeError returns a pusher:error with data {"code":code,"message":msg};
// code 0 is left out (the protocol makes it optional).
func encodeError(code int, msg string) []byte {
	b := make([]byte, 0, 32+len(msg))
	b = append(b, '{')
	if code != 0 {
		b = append(b, `"code":`...)
		b = strconv.AppendInt(b, int64(code), 10)
		b = append(b, ',')
	}
	b = append(b, `"message":`...)
	b = appendQuoted(b, msg)
	b = append(b, '}')
	return encodeObjectEvent("pusher:error", "", b)
}

// encodeSubscriptionError returns a pusher:subscription_error for channel,
// with data {"type":typ,"error":msg,"status":status} as pusher-js builds it
// for a failed authorization.
func encodeSubscriptionError(channel, typ, msg string, status int) []byte {
	b := make([]byte, 0, 48+len(typ)+len(msg))
	b = append(b, `{"type":`...)
	b = appendQuoted(b, typ)
	b = append(b, `,"error":`...)
	b = appendQuoted(b, msg)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, '}')
	return encodeObjectEvent("pusher:subscription_error", channel, b)
}

// Messages without per-connection content, shared by every connection.
var (
	msgPong = []byte(`{"event":"pusher:pong","data":"{}"}`)
	msgPing = []byte(`{"event":"pusher:ping","data":"{}"}`)
)

const hexDigits = "0123456789abcdef"

// plainByte marks the bytes copied as they are into a JSON string: ASCII
// other than control characters, quote and backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// quotedLen returns len(appendQuoted(nil, s)).
func quotedLen(s string) int {
	n := 2 + len(s)
	for i := 0; i < len(s); {
		c := s[i]
		if plainByte[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			if c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' {
				n++ // \x
			} else {
				n += 5 // \u00XX
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6 - size // \uXXXX
		}
		i += size
	}
	return n
}

// appendQuoted appends s as a JSON string literal, escaping as
// encoding/json does without HTML escaping: quote, backslash and control
// characters, U+2028 and U+2029 (line terminators in JavaScript), and
// invalid UTF-8 as U+FFFD.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plainByte[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
