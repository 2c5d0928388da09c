package bench

import "fmt"

// A sync probe is a message that proves a member is in the room: servers
// add a connection to its room some time after the upgrade response, so a
// measured phase starts only once every member has received a probe sent
// through the room. Format: "cs" and an 8-digit hex nonce.
func syncProbe(nonce uint32) []byte {
	b := []byte("cs00000000")
	putHex(b[2:], uint64(nonce))
	return b
}

func decodeSyncProbe(p []byte) (uint32, bool) {
	if len(p) != 10 || p[0] != 'c' || p[1] != 's' {
		return 0, false
	}
	v, ok := parseHex(p[2:])
	return uint32(v), ok
}

// SyncSpec sends a probe from the group's first open member (if Send) and
// counts the members that have seen a probe numbered Since or later.
type SyncSpec struct {
	Group string `json:"group"`
	Nonce uint32 `json:"nonce"`
	Send  bool   `json:"send"`
	Since uint32 `json:"since"`
}

// SyncResult counts the members known to be in the room.
type SyncResult struct {
	Live int  `json:"live"`
	Seen int  `json:"seen"`
	Sent bool `json:"sent"`
}

func (a *Agent) sync(s *SyncSpec) (*SyncResult, error) {
	g, err := a.group(s.Group)
	if err != nil {
		return &SyncResult{}, nil // no share of the group here
	}
	res := &SyncResult{}
	for _, m := range g.members {
		if !m.open() {
			continue
		}
		res.Live++
		if m.lastSync.Load() >= s.Since {
			res.Seen++
		}
		if s.Send && !res.Sent && g.spec.Pusher == nil {
			res.Sent = m.conn.WriteMessage(OpText, syncProbe(s.Nonce)) == nil
		}
	}
	if s.Send && g.spec.Pusher != nil && res.Live > 0 {
		// Pusher members cannot send to a public channel: the probe is
		// published through the HTTP API like the measured messages.
		if g.syncPub == nil {
			g.syncPub = newPublisher(g.spec.Addr, g.spec.Pusher)
		}
		if err := g.syncPub.publish(syncProbe(s.Nonce)); err != nil {
			return nil, fmt.Errorf("chatbench: publishing a join probe through the HTTP API: %w", err)
		}
		res.Sent = true
	}
	return res, nil
}
