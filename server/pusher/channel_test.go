package pusher

import (
	"strings"
	"testing"
)

func TestValidChannelName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"my-channel", true},
		{"private-App.Models.User.1", true},
		{"presence-room_1=@,.;", true},
		{"A", true},
		{strings.Repeat("a", MaxChannelNameLen), true},
		{strings.Repeat("a", MaxChannelNameLen+1), false},
		{"", false},
		{"with space", false},
		{"slash/", false},
		{"colon:", false},
		{"hash#", false},
		{"nul\x00", false},
		{"ünicode", false},
		{"#server-to-user-42", true},
		{"#server-to-user-", false},
		{"#server-to-user-a\nb", false},
		{"#other", false},
	}
	for _, tt := range tests {
		if got := validChannelName(tt.name); got != tt.ok {
			t.Errorf("validChannelName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		want channelKind
	}{
		{"news", 0},
		{"privatex", 0},
		{"cache-score", kindCache},
		{"private-chat", kindPrivate},
		{"private-cache-x", kindPrivate | kindCache},
		{"private-encrypted-x", kindPrivate | kindEncrypted},
		{"private-encrypted-cache-x", kindPrivate | kindEncrypted | kindCache},
		{"presence-room", kindPresence},
		{"presence-cache-room", kindPresence | kindCache},
		{"#server-to-user-1", kindUser},
	}
	for _, tt := range tests {
		if got := classify(tt.name); got != tt.want {
			t.Errorf("classify(%q) = %b, want %b", tt.name, got, tt.want)
		}
	}
}

func TestValidSocketID(t *testing.T) {
	for id, ok := range map[string]bool{
		"1234.1234": true, "0.0": true, "1234": false, "1.2.3": false, "a.1": false, ".1": false, "1.": false, "": false,
	} {
		if got := validSocketID(id); got != ok {
			t.Errorf("validSocketID(%q) = %v, want %v", id, got, ok)
		}
	}
}
