package bench

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// Close modes.
const (
	CloseAbort = "abort" // RST, as a vanished client
	CloseWS    = "ws"    // close frame 1001, wait for the server's
	CloseFIN   = "fin"   // plain TCP close
)

// CloseSpec closes and forgets a group.
type CloseSpec struct {
	Group string `json:"group"`
	Mode  string `json:"mode"`
}

// CloseResult reports a close command.
type CloseResult struct {
	Closed  int           `json:"closed"`
	Elapsed time.Duration `json:"elapsed"`
}

func (a *Agent) close(s *CloseSpec) (*CloseResult, error) {
	a.mu.Lock()
	g := a.groups[s.Group]
	delete(a.groups, s.Group)
	a.mu.Unlock()
	if g == nil {
		return &CloseResult{}, nil
	}
	if g.syncPub != nil {
		g.syncPub.close()
	}
	mode := s.Mode
	if g.spec.Kind != KindMember && mode == CloseWS {
		// Attackers and slow consumers are in no state for a close
		// handshake (half a frame sent, or nothing read): drop them.
		// A plain close (fin) they may still ask for.
		mode = CloseAbort
	}
	start := time.Now()
	var (
		wg     sync.WaitGroup
		closed atomic.Int64
	)
	// Bounded parallelism: enough to make a storm, not a goroutine per
	// connection for nothing.
	sem := make(chan struct{}, 1024)
	for _, m := range g.members {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			m.closing.Store(true)
			closeMember(m, mode)
			closed.Add(1)
		}()
	}
	wg.Wait()
	return &CloseResult{Closed: int(closed.Load()), Elapsed: time.Since(start)}, nil
}

func closeMember(m *member, mode string) {
	if m.raw != nil {
		m.raw.Close()
		<-m.done
		return
	}
	switch mode {
	case CloseWS:
		// RFC 6455 section 7.1.1: the client sends its close frame and
		// waits for the server's, which the reader goroutine consumes.
		var p [2]byte
		binary.BigEndian.PutUint16(p[:], CloseGoingAway)
		if err := m.conn.WriteMessage(OpClose, p[:]); err == nil {
			select {
			case <-m.done:
			case <-time.After(time.Second):
			}
		}
		m.conn.Close()
	case CloseFIN:
		m.conn.Close()
	default:
		m.conn.Abort()
	}
	<-m.done
}
