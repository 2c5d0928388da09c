package broker

// The shared state's encodings: bucket keys and length-prefixed fields.

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
)

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func dec(s string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err == nil
}

func presenceKey(app, channel, user, node string) string {
	return enc(app) + "." + enc(channel) + "." + enc(user) + "." + node
}

func occupancyKey(app, channel, node string) string {
	return enc(app) + "." + enc(channel) + "." + node
}

func parsePresenceKey(key string) (app, channel, user, node string, ok bool) {
	t := strings.Split(key, ".")
	if len(t) == 3 { // an occupancy entry
		var ok1, ok2, ok3 bool
		app, ok1 = dec(t[0])
		channel, ok2 = dec(t[1])
		node, ok3 = dec(t[2])
		return app, channel, "", node, ok1 && ok2 && ok3
	}
	if len(t) != 4 {
		return "", "", "", "", false
	}
	var ok1, ok2, ok3, ok4 bool
	app, ok1 = dec(t[0])
	channel, ok2 = dec(t[1])
	user, ok3 = dec(t[2])
	node, ok4 = dec(t[3])
	return app, channel, user, node, ok1 && ok2 && ok3 && ok4
}

// appendBytes appends s with a 4-byte length, then rest.
func appendBytes(b []byte, s string, rest ...byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	b = append(b, s...)
	return append(b, rest...)
}

// cutBytes reads a string appended by appendBytes and returns what follows.
func cutBytes(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return "", nil, false
	}
	return string(b[4 : 4+n]), b[4+n:], true
}
