package pusher

import (
	"strconv"
	"strings"
)

// MaxChannelNameLen is the longest channel name accepted. Pusher documents
// 164 characters from the set [A-Za-z0-9_\-=@,.;].
const MaxChannelNameLen = 164

// UserChannelPrefix starts the internal channel of a signed-in user: the
// pusher SDK's sendToUser publishes to "#server-to-user-" + userID, and
// pusher-js subscribes to it after pusher:signin_success.
const UserChannelPrefix = "#server-to-user-"

// channelKind is a set of channel traits, all derived from the name prefix.
type channelKind uint8

const (
	kindPrivate   channelKind = 1 << iota // private-*: subscription needs auth
	kindPresence                          // presence-*: auth with channel_data, member list
	kindEncrypted                         // private-encrypted-*: no client events
	kindCache                             // *cache-*: last event replayed to new subscribers
	kindUser                              // #server-to-user-*: only the signed-in user
)

// authorized reports whether subscribing needs a signature.
func (k channelKind) authorized() bool { return k&(kindPrivate|kindPresence) != 0 }

// classify returns the traits of a channel from its prefix. Longer prefixes
// are tested first: "private-encrypted-cache-" is private, encrypted and cache.
func classify(name string) channelKind {
	switch {
	case strings.HasPrefix(name, "presence-cache-"):
		return kindPresence | kindCache
	case strings.HasPrefix(name, "presence-"):
		return kindPresence
	case strings.HasPrefix(name, "private-encrypted-cache-"):
		return kindPrivate | kindEncrypted | kindCache
	case strings.HasPrefix(name, "private-encrypted-"):
		return kindPrivate | kindEncrypted
	case strings.HasPrefix(name, "private-cache-"):
		return kindPrivate | kindCache
	case strings.HasPrefix(name, "private-"):
		return kindPrivate
	case strings.HasPrefix(name, "cache-"):
		return kindCache
	case strings.HasPrefix(name, UserChannelPrefix):
		return kindUser
	}
	return 0
}

// validChannelName reports whether name is a channel a client may subscribe
// to or the HTTP API may publish to: 1–164 characters of
// [A-Za-z0-9_\-=@,.;], or a user channel "#server-to-user-{id}" whose id is
// a valid user ID.
func validChannelName(name string) bool {
	if id, ok := strings.CutPrefix(name, UserChannelPrefix); ok {
		return validUserID(id, MaxChannelNameLen)
	}
	if len(name) == 0 || len(name) > MaxChannelNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !channelByte[name[i]] {
			return false
		}
	}
	return true
}

// invalidChannelMsg is the error message for a channel name that
// validChannelName refuses, from a client's pusher:subscribe or the HTTP
// API's events.
func invalidChannelMsg(name string) string {
	return "invalid channel name " + strconv.Quote(name) + ": use 1 to " + strconv.Itoa(MaxChannelNameLen) +
		" characters of A-Z a-z 0-9 _ - = @ , . ;"
}

// validUserID reports whether id can name a presence member or a signed-in
// user: 1–max bytes of valid UTF-8 without control characters.
func validUserID(id string, max int) bool {
	if len(id) == 0 || len(id) > max {
		return false
	}
	for _, r := range id {
		if r < ' ' || r == 0x7f || r == '\uFFFD' {
			return false
		}
	}
	return true
}

var channelByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-=@,.;" {
		t[c] = true
	}
	return t
}()

// validSocketID reports whether id has the form of a socket ID, "N.M" in
// decimal digits, as the pusher SDK checks it.
func validSocketID(id string) bool {
	n, m, ok := strings.Cut(id, ".")
	return ok && allDigits(n) && allDigits(m)
}

func allDigits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
