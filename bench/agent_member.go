package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// The client side of one connection: the groups an Agent holds, their
// members, the goroutine that reads each member and how its connection
// ended, and the inspect command that reports it.

// group is a set of connections opened by one OpenSpec.
type group struct {
	spec    OpenSpec
	members []*member
	phase   atomic.Pointer[phaseState]
	// lost counts members the server ended; closed-loop senders stop
	// waiting for them.
	lost atomic.Int32

	// Pusher mode (spec.Pusher set): the prefix of a published event
	// whose data needs no decoding, and the publisher of join probes.
	pusherPrefix []byte
	syncPub      *publisher
}

// member is one client connection.
type member struct {
	index int // within the group
	id    int // global
	conn  *Conn
	raw   net.Conn // stall-handshake only

	stalledAt time.Time // when the stall began (attackers)
	closing   atomic.Bool
	closedAt  atomic.Int64 // Unix ns the server side ended it; 0 while open
	closeHow  atomic.Value // string
	done      chan struct{}

	// Slow readers: fast is closed when the probe wants the rest at full
	// speed; kept counts what was read from then on.
	fast                chan struct{}
	keptMsgs, keptBytes atomic.Int64

	// Broadcast accounting, written by the member's reader goroutine.
	received   atomic.Int64
	duplicates atomic.Int64
	corrupt    atomic.Int64
	reordered  atomic.Int64
	stray      atomic.Int64
	crossed    atomic.Int64 // received from a sender on another server instance
	lastRecv   atomic.Int64
	lastSync   atomic.Uint32 // highest room-join probe seen
	tracks     []seqTracker
	trackPhase uint16
	hasTracks  bool
}

func (m *member) open() bool { return m.closedAt.Load() == 0 && !m.closing.Load() }

// ended records how the connection ended, once.
func (m *member) ended(err error) {
	how := "closed by us"
	if !m.closing.Load() {
		how = classifyClose(err)
	}
	if m.closedAt.CompareAndSwap(0, time.Now().UnixNano()) {
		m.closeHow.Store(how)
	}
}

// classifyClose names how the server ended a connection.
func classifyClose(err error) string {
	var (
		ce *CloseError
		he *httpAnswerError
	)
	switch {
	case errors.As(err, &he):
		return "HTTP " + he.status
	case errors.As(err, &ce):
		if ce.Code == CloseNoStatus {
			return "close frame (no status)"
		}
		return fmt.Sprintf("close %d", ce.Code)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	default:
		return "error"
	}
}

// startReader starts the goroutine that watches a member. Slow consumers
// get none: they never read.
func (g *group) startReader(m *member) {
	switch g.spec.Kind {
	case KindMember:
		go g.readLoop(m)
	case KindStallHandshake:
		go watch(m, m.raw)
	case KindStallFrame:
		go watch(m, m.conn.br)
	case KindSlowReader:
		m.fast = make(chan struct{})
		go slowRead(m, g.spec.ReadRate)
	case KindHalfClose, KindGarbage, KindHTTPStall:
		if m.raw != nil {
			go watchHTTP(m, m.raw)
		} else {
			go discard(m)
		}
	default:
		close(m.done)
	}
}

// watch reads and discards until the connection ends, to notice when the
// server gives up on an attacker.
func watch(m *member, r io.Reader) {
	defer close(m.done)
	buf := make([]byte, 512)
	for {
		if _, err := r.Read(buf); err != nil {
			m.ended(err)
			return
		}
	}
}

func (g *group) readLoop(m *member) {
	defer close(m.done)
	for {
		op, p, err := m.conn.ReadMessage()
		if err != nil {
			m.ended(err)
			if !m.closing.Load() {
				g.lost.Add(1)
				if ps := g.phase.Load(); ps != nil {
					for _, a := range ps.acks {
						if a != nil {
							a.poke()
						}
					}
				}
			}
			return
		}
		switch {
		case g.spec.Pusher != nil:
			if op == OpText {
				if data, ok := g.pusherData(m, p); ok {
					g.onMessage(m, data)
				}
			}
		case op == OpText || op == OpBinary:
			g.onMessage(m, p)
		}
	}
}

// sum adds up one counter of every member of the group.
func (g *group) sum(counter func(m *member) *atomic.Int64) int64 {
	var n int64
	for _, m := range g.members {
		n += counter(m).Load()
	}
	return n
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
