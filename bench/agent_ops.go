package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// DrainSpec waits for a phase's deliveries to arrive.
type DrainSpec struct {
	Group    string        `json:"group"`
	Expected int64         `json:"expected"` // this worker's share
	Idle     time.Duration `json:"idle"`     // give up after this long without progress
	Max      time.Duration `json:"max"`      // and after this long in all
}

// DrainResult is one worker's receive-side account of a phase.
type DrainResult struct {
	Deliveries  Deliveries     `json:"deliveries"`
	Stray       int64          `json:"stray"` // messages of other phases or not from chatbench
	Latency     HistogramData  `json:"latency_ns"`
	LastReceive time.Time      `json:"last_receive"`
	Closed      int            `json:"closed"` // members the server closed
	CloseHow    map[string]int `json:"close_how,omitempty"`
	Waited      time.Duration  `json:"waited"`
}

func (a *Agent) drain(ctx context.Context, s *DrainSpec) (*DrainResult, error) {
	g, err := a.group(s.Group)
	if err != nil {
		return &DrainResult{}, nil // no share of the group here
	}
	ps := g.phase.Load()
	if ps == nil {
		return nil, errors.New("chatbench: drain before prepare")
	}
	start := time.Now()
	idle := s.Idle
	if idle <= 0 {
		idle = 2 * time.Second
	}
	maxWait := s.Max
	if maxWait <= 0 {
		maxWait = time.Minute
	}
	var (
		lastCount    int64 = -1
		lastProgress       = time.Now()
	)
	for {
		d, _, _ := g.tally()
		got := d.Received - ps.base.d.Received
		if got >= s.Expected {
			break
		}
		if got != lastCount {
			lastCount = got
			lastProgress = time.Now()
		}
		if time.Since(lastProgress) > idle || time.Since(start) > maxWait || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	d, stray, last := g.tally()
	res := &DrainResult{
		Deliveries: Deliveries{
			Expected:   s.Expected,
			Received:   d.Received - ps.base.d.Received,
			Duplicates: d.Duplicates - ps.base.d.Duplicates,
			Corrupt:    d.Corrupt - ps.base.d.Corrupt,
			Reordered:  d.Reordered - ps.base.d.Reordered,
		},
		Stray:   stray - ps.base.stray,
		Latency: ps.hist.Snapshot().Data(),
		Waited:  time.Since(start),
	}
	res.Deliveries.Settle()
	if last > 0 {
		res.LastReceive = time.Unix(0, last)
	}
	for _, m := range g.members {
		if m.closedAt.Load() != 0 && !m.closing.Load() {
			res.Closed++
			if res.CloseHow == nil {
				res.CloseHow = map[string]int{}
			}
			how, _ := m.closeHow.Load().(string)
			res.CloseHow[how]++
		}
	}
	return res, nil
}

// InspectResult says which connections of a group are still open, and how
// and when the others ended (attackers: measured from the stall).
type InspectResult struct {
	Total      int            `json:"total"`
	Open       int            `json:"open"`
	CloseHow   map[string]int `json:"close_how,omitempty"`
	CloseAfter []float64      `json:"close_after_s,omitempty"` // seconds from stall to close
	// OpenPerAddr counts the open ones per server instance (spec.Addrs).
	OpenPerAddr []int `json:"open_per_addr,omitempty"`
}

func (a *Agent) inspect(name string) (*InspectResult, error) {
	g, err := a.group(name)
	if err != nil {
		// This worker got no share of the group.
		return &InspectResult{}, nil
	}
	res := &InspectResult{Total: len(g.members)}
	if len(g.spec.Addrs) > 0 {
		res.OpenPerAddr = make([]int, len(g.spec.Addrs))
	}
	for _, m := range g.members {
		at := m.closedAt.Load()
		if at == 0 {
			res.Open++
			if res.OpenPerAddr != nil {
				_, k, _ := g.spec.pickAddr(m.id)
				res.OpenPerAddr[k]++
			}
			continue
		}
		if res.CloseHow == nil {
			res.CloseHow = map[string]int{}
		}
		how, _ := m.closeHow.Load().(string)
		res.CloseHow[how]++
		res.CloseAfter = append(res.CloseAfter, time.Unix(0, at).Sub(m.stalledAt).Seconds())
	}
	return res, nil
}

// ProbeSpec reads what the server left for slow consumers (once per
// group).
type ProbeSpec struct {
	Group string        `json:"group"`
	Wait  time.Duration `json:"wait"` // read for at most this long
}

// ProbeResult says what happened to connections that never read: how
// the server ended them (or "open" when it still had not after Wait), and
// how many bytes it had queued for them.
type ProbeResult struct {
	Total    int            `json:"total"`
	Fates    map[string]int `json:"fates"`
	Messages int64          `json:"messages"`
	Bytes    int64          `json:"bytes"`
	MaxBytes int64          `json:"max_bytes"`
	// Backlogged counts the ones still open that had data waiting: the
	// server kept buffering for them.
	Backlogged int `json:"backlogged"`
}

func (a *Agent) probe(s *ProbeSpec) (*ProbeResult, error) {
	g, err := a.group(s.Group)
	if err != nil {
		return nil, err
	}
	if g.spec.Kind != KindSlow && g.spec.Kind != KindSlowReader {
		return nil, fmt.Errorf("chatbench: probe is for slow consumers, group %q holds %s", s.Group, g.spec.Kind)
	}
	wait := s.Wait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	res := &ProbeResult{Total: len(g.members), Fates: map[string]int{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	deadline := time.Now().Add(wait)
	for _, m := range g.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.conn.nc.SetReadDeadline(deadline)
			var msgs, bytes int64
			fate := ""
			if m.fast != nil {
				// A slow reader reads on by itself, now at full speed,
				// until the connection ends or the deadline.
				close(m.fast)
				<-m.done
				msgs, bytes = m.keptMsgs.Load(), m.keptBytes.Load()
				fate, _ = m.closeHow.Load().(string)
				if fate == "timeout" {
					fate = "open"
				}
			}
			for fate == "" {
				_, p, err := m.conn.ReadMessage()
				if err != nil {
					fate = classifyClose(err)
					if fate == "timeout" {
						fate = "open"
					}
					break
				}
				msgs++
				bytes += int64(len(p))
			}
			mu.Lock()
			res.Fates[fate]++
			if fate == "open" && msgs > 0 {
				res.Backlogged++
			}
			res.Messages += msgs
			res.Bytes += bytes
			res.MaxBytes = max(res.MaxBytes, bytes)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res, nil
}

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
