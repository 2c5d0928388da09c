package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// A broadcast phase on the receiving side: prepare sets up the phase on a
// group, every member's reader accounts each message it gets (onMessage),
// and drain waits for the deliveries and reports them.

// phaseState is what receivers need during one broadcast phase.
type phaseState struct {
	tag     uint16
	senders int
	hist    ConcurrentHistogram
	acks    []*senderAcks // by global sender index; nil for remote senders
	local   []int         // global sender index of each local sender
	talkers []*member     // the local senders: the first open members (raw mode)
	base    phaseBase     // members' counters when the phase began
	// senderInst is each sender's server instance (several instances),
	// to count deliveries that crossed from one instance to another.
	senderInst []int
}

// senderAcks counts, for a sender of this process, how many local members
// have each of its messages; the closed-loop sender waits on it.
type senderAcks struct {
	counts   []atomic.Int32
	need     int32 // local members but the sender (raw mode) when the phase began
	lost     *atomic.Int32
	lostBase int32
	wake     chan struct{}
}

// needNow is need less the members the server has ended since.
func (a *senderAcks) needNow() int32 { return a.need - (a.lost.Load() - a.lostBase) }

func (a *senderAcks) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (g *group) onMessage(m *member, p []byte) {
	if nonce, ok := decodeSyncProbe(p); ok {
		if nonce > m.lastSync.Load() {
			m.lastSync.Store(nonce)
		}
		return
	}
	now := time.Now().UnixNano()
	ps := g.phase.Load()
	pl, err := DecodePayload(p)
	if err != nil {
		if errors.Is(err, errPayloadMagic) {
			m.stray.Add(1)
		} else {
			m.corrupt.Add(1)
		}
		return
	}
	if ps == nil || pl.Phase != ps.tag {
		m.stray.Add(1)
		return
	}
	if int(pl.Sender) >= ps.senders {
		m.corrupt.Add(1)
		return
	}
	if !m.hasTracks || m.trackPhase != ps.tag {
		m.tracks = make([]seqTracker, ps.senders)
		m.trackPhase = ps.tag
		m.hasTracks = true
	}
	switch m.tracks[pl.Sender].observe(pl.Seq) {
	case seqDuplicate:
		m.duplicates.Add(1)
		return
	case seqLate:
		m.reordered.Add(1)
	}
	m.received.Add(1)
	if ps.senderInst != nil {
		if _, k, _ := g.spec.pickAddr(m.id); k != ps.senderInst[pl.Sender] {
			m.crossed.Add(1)
		}
	}
	m.lastRecv.Store(now)
	ps.hist.Record(m.index, now-pl.SentNs)
	if a := ps.acks[pl.Sender]; a != nil && int(pl.Seq) < len(a.counts) {
		if a.counts[pl.Seq].Add(1) >= a.needNow() {
			a.poke()
		}
	}
}

// tally sums the members' broadcast counters.
func (g *group) tally() (d Deliveries, stray int64, last int64) {
	for _, m := range g.members {
		d.Received += m.received.Load()
		d.Duplicates += m.duplicates.Load()
		d.Corrupt += m.corrupt.Load()
		d.Reordered += m.reordered.Load()
		stray += m.stray.Load()
		last = max(last, m.lastRecv.Load())
	}
	return d, stray, last
}

// PrepareSpec sets up a broadcast phase on a group; it must reach every
// worker before any sends.
type PrepareSpec struct {
	Group        string `json:"group"`
	Phase        uint16 `json:"phase"`
	TotalSenders int    `json:"total_senders"`
	SenderIDs    []int  `json:"sender_ids"` // global index of each local sender
	// SenderInstances, with several server instances (OpenSpec.Addrs),
	// is the instance of every sender, by global index: a local sender
	// is an open member on its instance.
	SenderInstances []int `json:"sender_instances,omitempty"`
	Messages        int   `json:"messages"`
	ClosedLoop      bool  `json:"closed_loop"`
}

// PrepareResult reports the members alive when the phase starts.
type PrepareResult struct {
	Live int `json:"live"`
}

// phaseBase is the members' counters when the phase began, subtracted at
// drain time.
type phaseBase struct {
	d       Deliveries
	stray   int64
	crossed int64
}

func (a *Agent) prepare(s *PrepareSpec) (*PrepareResult, error) {
	g, err := a.group(s.Group)
	if err != nil {
		if len(s.SenderIDs) == 0 {
			return &PrepareResult{}, nil // no share of the group here
		}
		return nil, err
	}
	if len(s.SenderIDs) > len(g.members) {
		return nil, fmt.Errorf("chatbench: %d senders asked of a group of %d", len(s.SenderIDs), len(g.members))
	}
	ps := &phaseState{tag: s.Phase, senders: s.TotalSenders, acks: make([]*senderAcks, s.TotalSenders)}
	live := 0
	for _, m := range g.members {
		if m.open() {
			live++
		}
	}
	// A raw sender is a member and does not get its own messages; a
	// Pusher sender is an HTTP client and every member gets each one.
	need := live - 1
	if g.spec.Pusher != nil {
		need = live
	}
	if s.ClosedLoop {
		for _, id := range s.SenderIDs {
			ps.acks[id] = &senderAcks{counts: make([]atomic.Int32, s.Messages), need: int32(need),
				lost: &g.lost, lostBase: g.lost.Load(), wake: make(chan struct{}, 1)}
		}
	}
	for _, id := range s.SenderIDs {
		if id < 0 || id >= s.TotalSenders {
			return nil, fmt.Errorf("chatbench: sender index %d out of range", id)
		}
	}
	ps.local = append([]int(nil), s.SenderIDs...)
	if len(s.SenderInstances) > 0 {
		if len(s.SenderInstances) != s.TotalSenders || len(g.spec.Addrs) < 2 {
			return nil, fmt.Errorf("chatbench: %d sender instances for %d senders over %d server instances", len(s.SenderInstances), s.TotalSenders, len(g.spec.Addrs))
		}
		ps.senderInst = append([]int(nil), s.SenderInstances...)
	}
	if g.spec.Pusher != nil {
		// Publishers are HTTP clients; no member sends.
		d, stray, _ := g.tally()
		ps.base = phaseBase{d: d, stray: stray}
		g.phase.Store(ps)
		return &PrepareResult{Live: live}, nil
	}
	if ps.senderInst != nil {
		if err := g.pickTalkers(ps); err != nil {
			return nil, err
		}
	} else {
		for _, m := range g.members {
			if len(ps.talkers) < len(ps.local) && m.open() {
				ps.talkers = append(ps.talkers, m)
			}
		}
	}
	if len(ps.talkers) < len(ps.local) {
		return nil, fmt.Errorf("chatbench: %d senders asked of %d open members", len(ps.local), len(ps.talkers))
	}
	d, stray, _ := g.tally()
	ps.base = phaseBase{d: d, stray: stray, crossed: g.sum(func(m *member) *atomic.Int64 { return &m.crossed })}
	g.phase.Store(ps)
	return &PrepareResult{Live: live}, nil
}

// pickTalkers finds each local sender a member on its instance: the
// first open one there not yet taken.
func (g *group) pickTalkers(ps *phaseState) error {
	taken := make(map[*member]bool, len(ps.local))
	for _, id := range ps.local {
		var pick *member
		for _, m := range g.members {
			if _, k, _ := g.spec.pickAddr(m.id); k == ps.senderInst[id] && m.open() && !taken[m] {
				pick = m
				break
			}
		}
		if pick == nil {
			return fmt.Errorf("chatbench: sender %d: no open member left on server instance %d", id, ps.senderInst[id]+1)
		}
		taken[pick] = true
		ps.talkers = append(ps.talkers, pick)
	}
	return nil
}

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
	// Crossed counts the deliveries to a member on another server
	// instance than the sender's (several instances).
	Crossed int64 `json:"crossed"`
	// With several instances, Closed split: members on an instance that
	// holds one of the phase's senders, and members on the others.
	ClosedSenderInst int `json:"closed_senders_instances,omitempty"`
	ClosedOther      int `json:"closed_other_instances,omitempty"`
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
		Crossed: g.sum(func(m *member) *atomic.Int64 { return &m.crossed }) - ps.base.crossed,
		Latency: ps.hist.Snapshot().Data(),
		Waited:  time.Since(start),
	}
	res.Deliveries.Settle()
	if last > 0 {
		res.LastReceive = time.Unix(0, last)
	}
	senderInst := map[int]bool{}
	for _, k := range ps.senderInst {
		senderInst[k] = true
	}
	for _, m := range g.members {
		if m.closedAt.Load() != 0 && !m.closing.Load() {
			res.Closed++
			if len(senderInst) > 0 {
				if _, k, _ := g.spec.pickAddr(m.id); senderInst[k] {
					res.ClosedSenderInst++
				} else {
					res.ClosedOther++
				}
			}
			if res.CloseHow == nil {
				res.CloseHow = map[string]int{}
			}
			how, _ := m.closeHow.Load().(string)
			res.CloseHow[how]++
		}
	}
	return res, nil
}
