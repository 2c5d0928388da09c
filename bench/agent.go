package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// An Agent holds one process's share of the client connections, in named
// groups, and carries out the coordinator's commands on them. With -procs 1
// the coordinator calls it directly; otherwise each worker process runs one
// behind a JSON pipe (see fleet.go). An Agent runs one command at a time;
// Counters may be read at any moment.
type Agent struct {
	mu     sync.Mutex
	groups map[string]*group

	connected atomic.Int64
	failed    atomic.Int64
	sent      atomic.Int64
}

// NewAgent returns an empty Agent.
func NewAgent() *Agent { return &Agent{groups: map[string]*group{}} }

// Counters is a snapshot of an Agent's progress, for the live display.
type Counters struct {
	Connected int64 `json:"connected"`
	Failed    int64 `json:"failed"`
	Sent      int64 `json:"sent"`
	Received  int64 `json:"received"`
}

// Counters returns the progress so far.
func (a *Agent) Counters() Counters {
	c := Counters{Connected: a.connected.Load(), Failed: a.failed.Load(), Sent: a.sent.Load()}
	a.mu.Lock()
	for _, g := range a.groups {
		c.Received += g.receivedTotal()
	}
	a.mu.Unlock()
	return c
}

// Connection kinds.
const (
	KindMember         = "member"          // reads everything, accounts broadcast messages
	KindSlow           = "slow"            // upgraded, never reads
	KindSlowReader     = "slow-reader"     // upgraded, reads ReadRate bytes/s until probed
	KindStallHandshake = "stall-handshake" // sends half the upgrade request, stalls
	KindStallFrame     = "stall-frame"     // upgrades, sends half a frame, stalls
	KindHalfClose      = "half-close"      // upgrades, sends a message and at once shutdown(SHUT_WR)
	KindGarbage        = "garbage"         // breaks the protocol (garbageVariants, one per connection in turn)
	KindHTTPStall      = "http-stall"      // plain HTTP request announcing a body it never finishes
)

// Request is one command from the coordinator; exactly one spec is set.
type Request struct {
	Op      string       `json:"op"`
	Open    *OpenSpec    `json:"open,omitempty"`
	Prepare *PrepareSpec `json:"prepare,omitempty"`
	Send    *SendSpec    `json:"send,omitempty"`
	Drain   *DrainSpec   `json:"drain,omitempty"`
	Group   string       `json:"group,omitempty"` // inspect, probe, close
	Close   *CloseSpec   `json:"close,omitempty"`
	Probe   *ProbeSpec   `json:"probe,omitempty"`
	Sync    *SyncSpec    `json:"sync,omitempty"`
	Soak    *SoakSpec    `json:"soak,omitempty"`
}

// Response carries the result of a Request.
type Response struct {
	Error   string           `json:"error,omitempty"`
	Open    *OpenResult      `json:"open,omitempty"`
	Prepare *PrepareResult   `json:"prepare,omitempty"`
	Send    *SendResult      `json:"send,omitempty"`
	Drain   *DrainResult     `json:"drain,omitempty"`
	Inspect *InspectResult   `json:"inspect,omitempty"`
	Probe   *ProbeResult     `json:"probe,omitempty"`
	Close   *CloseResult     `json:"close,omitempty"`
	Sync    *SyncResult      `json:"sync,omitempty"`
	Soak    *SoakAgentResult `json:"soak,omitempty"`
}

// Handle carries out one command.
func (a *Agent) Handle(ctx context.Context, req Request) Response {
	var (
		resp Response
		err  error
	)
	switch req.Op {
	case "open":
		resp.Open, err = a.open(ctx, req.Open)
	case "prepare":
		resp.Prepare, err = a.prepare(req.Prepare)
	case "send":
		resp.Send, err = a.send(ctx, req.Send)
	case "drain":
		resp.Drain, err = a.drain(ctx, req.Drain)
	case "inspect":
		resp.Inspect, err = a.inspect(req.Group)
	case "probe":
		resp.Probe, err = a.probe(req.Probe)
	case "close":
		resp.Close, err = a.close(req.Close)
	case "sync":
		resp.Sync, err = a.sync(req.Sync)
	case "soak":
		resp.Soak, err = a.soak(ctx, req.Soak)
	default:
		err = fmt.Errorf("chatbench: unknown worker command %q", req.Op)
	}
	if err != nil {
		resp.Error = err.Error()
	}
	return resp
}

// CloseAll closes every connection (used when a worker exits).
func (a *Agent) CloseAll() {
	a.mu.Lock()
	names := make([]string, 0, len(a.groups))
	for n := range a.groups {
		names = append(names, n)
	}
	a.mu.Unlock()
	for _, n := range names {
		_, _ = a.close(&CloseSpec{Group: n, Mode: CloseAbort})
	}
}

func (a *Agent) group(name string) (*group, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.groups[name]
	if g == nil {
		return nil, fmt.Errorf("chatbench: no connection group %q", name)
	}
	return g, nil
}

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

// classifyDialError turns a failed connection attempt into a short class
// for the report.
func classifyDialError(err error) string {
	var pe *pusherJoinError
	if errors.As(err, &pe) {
		return "pusher: " + pe.class
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free source port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF during handshake"
	case errors.Is(err, ErrHandshake):
		msg := err.Error()
		if i := strings.Index(msg, "answered "); i >= 0 {
			return "handshake: " + msg[i+len("answered "):]
		}
		if strings.Contains(msg, "timeout") || strings.Contains(msg, "deadline") {
			return "timeout"
		}
		return "handshake failed"
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "other"
	}
}

// OpenSpec asks an Agent to open Count connections of one kind.
type OpenSpec struct {
	Group  string `json:"group"`
	Kind   string `json:"kind"`
	Count  int    `json:"count"`
	IDBase int    `json:"id_base"` // global id of the first
	Addr   string `json:"addr"`
	// Addrs, when set, are the server's instances: connection id modulo
	// len(Addrs) picks the instance (round-robin), and the rest of the id
	// divided by len(Addrs) picks its room and source address, so that
	// every instance sees the same mix of rooms and addresses.
	Addrs          []string      `json:"addrs,omitempty"`
	Room           string        `json:"room"`
	Rooms          int           `json:"rooms"` // >1: member id%Rooms picks room Room-k
	SourceIPs      []string      `json:"source_ips,omitempty"`
	Concurrency    int           `json:"concurrency"`
	ConnectTimeout time.Duration `json:"connect_timeout"`
	MaxTime        time.Duration `json:"max_time"` // the whole batch; 0: no cap
	RcvBuf         int           `json:"rcvbuf,omitempty"`
	// Path, when set, is the request path instead of /chat/{room}
	// (http-stall connections).
	Path string `json:"path,omitempty"`
	// ReadRate, for slow readers: bytes per second they read.
	ReadRate int `json:"read_rate,omitempty"`
	// Trickle, for stall-handshake and stall-frame connections: after
	// stalling, send one more byte this often (never enough to finish),
	// as slowloris does to defeat timeouts that only count silence.
	Trickle time.Duration `json:"trickle,omitempty"`
	// Pusher, for members: connect to /app/{key}, subscribe to the
	// channel, and let the senders publish through the HTTP API.
	Pusher *PusherSpec `json:"pusher,omitempty"`
}

// OpenResult reports one open command.
type OpenResult struct {
	Opened     int            `json:"opened"`
	Failed     int            `json:"failed"`
	Errors     map[string]int `json:"errors,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
	Connect    HistogramData  `json:"connect_ns"`
	Start      time.Time      `json:"start"`
	End        time.Time      `json:"end"`
	// OpenedPerAddr counts the connections opened to each of Addrs.
	OpenedPerAddr []int `json:"opened_per_addr,omitempty"`
}

// pickAddr returns the instance a connection id goes to, and the id's
// rank among that instance's connections.
func (s *OpenSpec) pickAddr(id int) (addr string, instance, rank int) {
	if len(s.Addrs) == 0 {
		return s.Addr, 0, id
	}
	n := len(s.Addrs)
	return s.Addrs[id%n], id % n, id / n
}

func roomPath(room string, rooms, id int) string {
	if rooms > 1 {
		return fmt.Sprintf("/chat/%s-%d", room, id%rooms)
	}
	return "/chat/" + room
}

func (a *Agent) open(ctx context.Context, s *OpenSpec) (*OpenResult, error) {
	if s == nil || s.Count < 0 {
		return nil, errors.New("chatbench: bad open spec")
	}
	a.mu.Lock()
	g := a.groups[s.Group]
	if g == nil {
		g = &group{spec: *s}
		if s.Pusher != nil {
			g.pusherPrefix = pusherFast(s.Pusher.Channel)
		}
		a.groups[s.Group] = g
	}
	a.mu.Unlock()
	if g.spec.Kind != s.Kind {
		return nil, fmt.Errorf("chatbench: group %q holds %s connections, not %s", s.Group, g.spec.Kind, s.Kind)
	}
	if (g.spec.Pusher == nil) != (s.Pusher == nil) {
		return nil, fmt.Errorf("chatbench: group %q mixes raw and Pusher connections", s.Group)
	}
	if s.Pusher != nil && s.Kind != KindMember {
		return nil, fmt.Errorf("chatbench: Pusher mode has members only, not %s connections", s.Kind)
	}
	if s.MaxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.MaxTime)
		defer cancel()
	}
	ips := make([]net.IP, len(s.SourceIPs))
	for i, txt := range s.SourceIPs {
		if ips[i] = net.ParseIP(txt); ips[i] == nil {
			return nil, fmt.Errorf("chatbench: bad source address %q", txt)
		}
	}
	conc := s.Concurrency
	if conc <= 0 || conc > s.Count {
		conc = max(1, s.Count)
	}
	var (
		hist    Histogram
		mu      sync.Mutex
		errs    = map[string]int{}
		first   string
		opened  []*member
		next    atomic.Int64
		wg      sync.WaitGroup
		started = time.Now()
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= s.Count || ctx.Err() != nil {
					return
				}
				id := s.IDBase + i
				addr, _, rank := s.pickAddr(id)
				o := DialOptions{Addr: addr, Path: roomPath(s.Room, s.Rooms, rank), Timeout: s.ConnectTimeout, RcvBuf: s.RcvBuf}
				if s.Pusher != nil {
					o.Path = pusherPath(s.Pusher.Key)
				}
				if s.Path != "" {
					o.Path = s.Path
				}
				if len(ips) > 0 {
					o.LocalIP = ips[rank%len(ips)]
				}
				t0 := time.Now()
				m, err := dialMember(ctx, s.Kind, o, s.Pusher, id)
				lat := time.Since(t0)
				mu.Lock()
				if err != nil {
					a.failed.Add(1)
					c := classifyDialError(err)
					errs[c]++
					if first == "" {
						first = err.Error()
					}
				} else {
					a.connected.Add(1)
					m.id = id
					hist.Record(int64(lat))
					opened = append(opened, m)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Members are kept in id order so that senders are the lowest ids.
	sort.Slice(opened, func(i, j int) bool { return opened[i].id < opened[j].id })
	a.mu.Lock()
	base := len(g.members)
	for k, m := range opened {
		m.index = base + k
		g.members = append(g.members, m)
	}
	a.mu.Unlock()
	for _, m := range opened {
		g.startReader(m)
	}
	if s.Trickle > 0 && len(opened) > 0 && (s.Kind == KindStallHandshake || s.Kind == KindStallFrame) {
		go trickle(opened, s.Trickle)
	}
	res := &OpenResult{Opened: len(opened), Failed: s.Count - len(opened), FirstError: first, Connect: hist.Data(), Start: started, End: time.Now()}
	if len(s.Addrs) > 0 {
		res.OpenedPerAddr = make([]int, len(s.Addrs))
		for _, m := range opened {
			_, k, _ := s.pickAddr(m.id)
			res.OpenedPerAddr[k]++
		}
	}
	if len(errs) > 0 {
		res.Errors = errs
	}
	if n := s.Count - len(opened) - sumCounts(errs); n > 0 {
		if res.Errors == nil {
			res.Errors = map[string]int{}
		}
		res.Errors["cancelled"] += n
	}
	return res, nil
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// dialMember opens connection id and, for attackers, sets up the stall
// or sends what they send; a Pusher member is subscribed to its channel
// before it counts as open, within the same connect timeout.
func dialMember(ctx context.Context, kind string, o DialOptions, ps *PusherSpec, id int) (*member, error) {
	m := &member{done: make(chan struct{})}
	start := time.Now()
	switch kind {
	case KindMember, KindSlow, KindSlowReader:
		c, err := Dial(ctx, o)
		if err != nil {
			return nil, err
		}
		if ps != nil {
			timeout := o.Timeout
			if timeout <= 0 {
				timeout = 10 * time.Second
			}
			deadline := start.Add(timeout)
			if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
				deadline = dl
			}
			if err := pusherJoin(c, ps.Channel, deadline); err != nil {
				c.Abort()
				return nil, err
			}
		}
		m.conn = c
	case KindStallHandshake:
		nc, err := dialRaw(ctx, o)
		if err != nil {
			return nil, err
		}
		// Half of the upgrade request: the request line and part of the
		// headers, never the blank line that ends them.
		req, _ := UpgradeRequest(o.Addr, o.Path)
		if _, err := nc.Write(req[:len(req)/2]); err != nil {
			nc.Close()
			return nil, err
		}
		m.raw = nc
	case KindStallFrame:
		c, err := Dial(ctx, o)
		if err != nil {
			return nil, err
		}
		// A binary frame announcing 1000 payload bytes, then only 10 of them.
		frame := appendFrameHeader(nil, OpBinary, 1000, 0x01020304)
		frame = append(frame, make([]byte, 10)...)
		if _, err := c.nc.Write(frame); err != nil {
			c.Close()
			return nil, err
		}
		m.conn = c
	case KindHalfClose, KindGarbage, KindHTTPStall:
		if err := dialHostile(ctx, m, kind, o, id); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("chatbench: unknown connection kind %q", kind)
	}
	m.stalledAt = time.Now()
	return m, nil
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

// phaseState is what receivers need during one broadcast phase.
type phaseState struct {
	tag     uint16
	senders int
	hist    ConcurrentHistogram
	acks    []*senderAcks // by global sender index; nil for remote senders
	local   []int         // global sender index of each local sender
	talkers []*member     // the local senders: the first open members (raw mode)
	base    phaseBase     // members' counters when the phase began
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
	m.lastRecv.Store(now)
	ps.hist.Record(m.index, now-pl.SentNs)
	if a := ps.acks[pl.Sender]; a != nil && int(pl.Seq) < len(a.counts) {
		if a.counts[pl.Seq].Add(1) >= a.needNow() {
			a.poke()
		}
	}
}

func (g *group) receivedTotal() int64 {
	var n int64
	for _, m := range g.members {
		n += m.received.Load()
	}
	return n
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
	Messages     int    `json:"messages"`
	ClosedLoop   bool   `json:"closed_loop"`
}

// PrepareResult reports the members alive when the phase starts.
type PrepareResult struct {
	Live int `json:"live"`
}

// phaseBase is the members' counters when the phase began, subtracted at
// drain time.
type phaseBase struct {
	d     Deliveries
	stray int64
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
	if g.spec.Pusher != nil {
		// Publishers are HTTP clients; no member sends.
		d, stray, _ := g.tally()
		ps.base = phaseBase{d: d, stray: stray}
		g.phase.Store(ps)
		return &PrepareResult{Live: live}, nil
	}
	for _, m := range g.members {
		if len(ps.talkers) < len(ps.local) && m.open() {
			ps.talkers = append(ps.talkers, m)
		}
	}
	if len(ps.talkers) < len(ps.local) {
		return nil, fmt.Errorf("chatbench: %d senders asked of %d open members", len(ps.local), len(ps.talkers))
	}
	d, stray, _ := g.tally()
	ps.base = phaseBase{d: d, stray: stray}
	g.phase.Store(ps)
	return &PrepareResult{Live: live}, nil
}

// SendSpec runs the senders of a prepared phase.
type SendSpec struct {
	Group         string  `json:"group"`
	Messages      int     `json:"messages"` // per sender
	Size          int     `json:"size"`
	Binary        bool    `json:"binary"`
	RatePerSender float64 `json:"rate_per_sender"` // messages/s; 0: closed loop
	// Open loop: messages fall due Burst at a time (0 or 1: one by one),
	// the first ones Offset after the start.
	Burst      int           `json:"burst,omitempty"`
	Offset     time.Duration `json:"offset,omitempty"`
	Window     int           `json:"window"`      // closed loop: messages in flight per sender
	Duration   time.Duration `json:"duration"`    // stop sending after this
	AckTimeout time.Duration `json:"ack_timeout"` // closed loop: give up waiting after this
}

// SendResult reports the sending side of a phase.
type SendResult struct {
	Sent        int64     `json:"sent"`
	SendErrors  int64     `json:"send_errors"`
	FirstError  string    `json:"first_error,omitempty"`
	AckTimeouts int64     `json:"ack_timeouts"`
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
}

func (a *Agent) send(ctx context.Context, s *SendSpec) (*SendResult, error) {
	g, err := a.group(s.Group)
	if err != nil {
		return &SendResult{}, nil // no share of the group here
	}
	ps := g.phase.Load()
	if ps == nil {
		return nil, errors.New("chatbench: send before prepare")
	}
	if s.Size < PayloadHeaderSize {
		return nil, fmt.Errorf("chatbench: message size %d is below the %d-byte header", s.Size, PayloadHeaderSize)
	}
	pusher := g.spec.Pusher
	if pusher != nil && s.Binary {
		return nil, errors.New("chatbench: Pusher events are JSON text: no binary payloads")
	}
	// The local senders were picked at prepare time, with the global
	// indexes the coordinator gave.
	senders := ps.local
	res := &SendResult{First: time.Now()}
	var (
		wg              sync.WaitGroup
		sent, errs, tos atomic.Int64
		errMu           sync.Mutex
	)
	failed := func(err error) {
		errs.Add(1)
		errMu.Lock()
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
		errMu.Unlock()
	}
	deadline := time.Now().Add(s.Duration)
	if s.Duration <= 0 {
		deadline = time.Now().Add(24 * time.Hour)
	}
	op := OpText
	if s.Binary {
		op = OpBinary
	}
	for k, sid := range senders {
		// Raw: the sender is a member and writes a frame. Pusher: the
		// sender is a keep-alive HTTP client of the HTTP API.
		var m *member
		if pusher == nil {
			m = ps.talkers[k]
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var write func([]byte) error
			if m != nil {
				write = func(b []byte) error { return m.conn.WriteMessage(op, b) }
			} else {
				pub := newPublisher(g.spec.Addr, pusher)
				defer pub.close()
				write = pub.publish
			}
			buf := make([]byte, s.Size)
			var interval time.Duration
			start := time.Now()
			if s.RatePerSender > 0 {
				interval = time.Duration(float64(time.Second) / s.RatePerSender)
				// Stagger senders over one interval so they do not fire together.
				if n := len(senders); n > 1 {
					start = start.Add(interval * time.Duration(k) / time.Duration(n))
				}
			}
			burst := max(1, s.Burst)
			acks := ps.acks[sid]
			window := max(1, s.Window)
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for seq := 0; seq < s.Messages; seq++ {
				if ctx.Err() != nil || time.Now().After(deadline) || (m != nil && !m.open()) {
					return
				}
				stamp := time.Now()
				if interval > 0 {
					due := start.Add(s.Offset + time.Duration(seq-seq%burst)*interval)
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
					// Open loop: latency counts from when the message was
					// due, so a sender that fell behind does not hide the
					// server's delay (coordinated omission).
					stamp = due
				} else if acks != nil && acks.need > 0 && seq >= window {
					if !waitAck(acks, seq-window, s.AckTimeout, timer, deadline) {
						tos.Add(1)
					}
					stamp = time.Now()
				}
				EncodePayload(buf, Payload{Phase: ps.tag, Sender: uint32(sid), Seq: uint32(seq), SentNs: stamp.UnixNano()})
				if err := write(buf); err != nil {
					failed(err)
					return
				}
				sent.Add(1)
				a.sent.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Last = time.Now()
	res.Sent, res.SendErrors, res.AckTimeouts = sent.Load(), errs.Load(), tos.Load()
	return res, nil
}

// waitAck waits until message seq of a sender reached every local member,
// for at most timeout; false on timeout.
func waitAck(a *senderAcks, seq int, timeout time.Duration, timer *time.Timer, deadline time.Time) bool {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	limit := time.Now().Add(timeout)
	if deadline.Before(limit) {
		limit = deadline
	}
	for a.counts[seq].Load() < a.needNow() {
		d := time.Until(limit)
		if d <= 0 {
			return false
		}
		timer.Reset(d)
		select {
		case <-a.wake:
		case <-timer.C:
		}
	}
	return true
}
