package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The Agent's side of the soak scenario: one command ("soak") that runs
// every loop at once until its duration is over, and the hostile
// connection kinds the loops open.

// SoakSpec runs the soak loops on one Agent, all at once, until Duration
// is over: the senders of phases prepared beforehand (Sends), churn
// cycles at ChurnRate, and every Round a fresh set of slow consumers in
// SlowRoom and of hostile clients in HostileRoom.
type SoakSpec struct {
	Duration       time.Duration `json:"duration"`
	Round          time.Duration `json:"round"`
	Addr           string        `json:"addr"`
	SourceIPs      []string      `json:"source_ips,omitempty"`
	ConnectTimeout time.Duration `json:"connect_timeout"`
	Concurrency    int           `json:"concurrency"`
	Prefix         string        `json:"prefix"`  // of this Agent's group and room names
	IDBase         int           `json:"id_base"` // first connection id

	// Sends are the senders of prepared phases (the honest room, the busy
	// room's flooder); their results come back in the same order.
	Sends []*SendSpec `json:"sends,omitempty"`

	ChurnRate     float64 `json:"churn_rate"`      // cycles per second; 0: no churn here
	ChurnInFlight int     `json:"churn_in_flight"` // cycles running at once, at most
	ChurnClose    string  `json:"churn_close"`     // ws, fin, abort, or mixed (each in turn)

	Slow         int           `json:"slow"`         // slow consumers (never read) per round
	SlowReaders  int           `json:"slow_readers"` // slow readers per round
	SlowReadRate int           `json:"slow_read_rate"`
	SlowRoom     string        `json:"slow_room"`
	SlowRcvBuf   int           `json:"slow_rcvbuf"`
	ProbeWait    time.Duration `json:"probe_wait"` // reading the round's slow consumers at its end

	Hostile     map[string]int `json:"hostile,omitempty"` // connections per round, by kind
	HostileRoom string         `json:"hostile_room"`      // prefix: a room per round
	HTTPPath    string         `json:"http_path"`         // where http-stall requests go
}

// SoakAgentResult is one Agent's account of a soak.
type SoakAgentResult struct {
	Sends       []*SendResult            `json:"sends"`
	Rounds      int                      `json:"rounds"`
	Churn       ChurnTally               `json:"churn"`
	Slow        SlowTally                `json:"slow"`
	SlowReaders SlowTally                `json:"slow_readers"`
	Hostile     map[string]*HostileTally `json:"hostile,omitempty"`
}

// ChurnTally counts churn cycles: two clients connect to a room of their
// own, each gets a message from the other, both leave.
type ChurnTally struct {
	Cycles     int            `json:"cycles"` // completed
	Failed     int            `json:"failed"`
	Skipped    int            `json:"skipped"` // not started: ChurnInFlight cycles were still running
	Errors     map[string]int `json:"errors,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
	Cycle      HistogramData  `json:"cycle_ns"` // first dial to both closed, completed cycles
}

// add sums two tallies.
func (c *ChurnTally) add(o ChurnTally) {
	c.Cycles += o.Cycles
	c.Failed += o.Failed
	c.Skipped += o.Skipped
	c.Errors = addCounts(c.Errors, o.Errors)
	if c.FirstError == "" {
		c.FirstError = o.FirstError
	}
	h := c.Cycle.Histogram()
	h.Merge(o.Cycle.Histogram())
	c.Cycle = h.Data()
}

// SlowTally counts the slow consumers of every round and how each ended,
// as the probe at the end of its round saw it ("open": the server had
// not closed it).
type SlowTally struct {
	Opened     int            `json:"opened"`
	Failed     int            `json:"failed"`
	Errors     map[string]int `json:"errors,omitempty"`
	Fates      map[string]int `json:"fates,omitempty"`
	Backlogged int            `json:"backlogged"` // open, with data the server had kept for it
	MaxBytes   int64          `json:"max_bytes"`  // most read from one in its probe
}

func (s *SlowTally) add(o SlowTally) {
	s.Opened += o.Opened
	s.Failed += o.Failed
	s.Errors = addCounts(s.Errors, o.Errors)
	s.Fates = addCounts(s.Fates, o.Fates)
	s.Backlogged += o.Backlogged
	s.MaxBytes = max(s.MaxBytes, o.MaxBytes)
}

// HostileTally counts the hostile clients of one kind over every round.
type HostileTally struct {
	Asked  int            `json:"asked"`
	Opened int            `json:"opened"`
	Failed int            `json:"failed"`
	Errors map[string]int `json:"errors,omitempty"`
	// Open counts the ones still open when their round ended (chatbench
	// closed them); CloseHow says how the server ended the others, and
	// CloseAfter how long after the stall (or the offending bytes).
	Open       int            `json:"open_at_round_end"`
	CloseHow   map[string]int `json:"close_how,omitempty"`
	CloseAfter []float64      `json:"close_after_s,omitempty"`
}

func (h *HostileTally) add(o *HostileTally) {
	h.Asked += o.Asked
	h.Opened += o.Opened
	h.Failed += o.Failed
	h.Errors = addCounts(h.Errors, o.Errors)
	h.Open += o.Open
	h.CloseHow = addCounts(h.CloseHow, o.CloseHow)
	h.CloseAfter = append(h.CloseAfter, o.CloseAfter...)
}

// addCounts adds b to a, allocating a only when b has something.
func addCounts(a, b map[string]int) map[string]int {
	for k, v := range b {
		if a == nil {
			a = map[string]int{}
		}
		a[k] += v
	}
	return a
}

// HostileKinds are the kinds a soak round opens, in report order.
var HostileKinds = []string{KindStallHandshake, KindStallFrame, KindHalfClose, KindGarbage, KindHTTPStall}

func (a *Agent) soak(ctx context.Context, s *SoakSpec) (*SoakAgentResult, error) {
	if s == nil || s.Duration <= 0 || s.Round <= 0 {
		return nil, errors.New("chatbench: bad soak spec")
	}
	start := time.Now()
	deadline := start.Add(s.Duration)
	// Every loop stops at the deadline by itself; this bounds what is in
	// flight then (a dial, a probe, a close handshake).
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(s.ConnectTimeout+s.ProbeWait+5*time.Second))
	defer cancel()
	res := &SoakAgentResult{Sends: make([]*SendResult, len(s.Sends)), Hostile: map[string]*HostileTally{}}
	var ids atomic.Int64
	ids.Store(int64(s.IDBase))
	nextIDs := func(n int) int { return int(ids.Add(int64(n))) - n }
	var (
		wg             sync.WaitGroup
		errMu          sync.Mutex
		firstErr       error
		slowR, hostile int
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	for i, ss := range s.Sends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := a.send(ctx, ss)
			if err != nil {
				fail(err)
			}
			res.Sends[i] = r
		}()
	}
	if s.ChurnRate > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); res.Churn = a.churnLoop(ctx, s, deadline, nextIDs) }()
	}
	if s.Slow > 0 || s.SlowReaders > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res.Slow, res.SlowReaders, slowR = a.slowLoop(ctx, s, start, deadline, nextIDs)
		}()
	}
	if len(s.Hostile) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); hostile = a.hostileLoop(ctx, s, start, deadline, nextIDs, res.Hostile) }()
	}
	wg.Wait()
	res.Rounds = max(slowR, hostile)
	return res, firstErr
}

// rounds calls round(k, end) for round k = 0, 1, ..., which runs from
// start + k*s.Round (or when round k-1 returned, if later) to end, start +
// (k+1)*s.Round or the deadline, as long as at least minLen of it is
// left; it returns how many rounds ran. Rounds keep to the soak's clock,
// the one the flooder's bursts keep to.
func rounds(ctx context.Context, s *SoakSpec, start, deadline time.Time, minLen time.Duration, round func(k int, end time.Time)) int {
	k := 0
	for ; ctx.Err() == nil; k++ {
		begin := start.Add(time.Duration(k) * s.Round)
		end := begin.Add(s.Round)
		if end.After(deadline) {
			end = deadline
		}
		if time.Until(end) < minLen || end.Sub(begin) < minLen {
			break
		}
		sleepUntil(ctx, begin)
		round(k, end)
	}
	return k
}

// sleepUntil waits until t or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// slowLoop opens s.Slow slow consumers and s.SlowReaders slow readers
// in the busy room every round and, at the round's end, probes them to
// see whether the server closed them, and how; then drops them.
func (a *Agent) slowLoop(ctx context.Context, s *SoakSpec, start, deadline time.Time, nextIDs func(int) int) (slow, readers SlowTally, n int) {
	n = rounds(ctx, s, start, deadline, s.ProbeWait+time.Second, func(k int, end time.Time) {
		var groups []string
		var tallies []*SlowTally
		defer func() {
			for _, g := range groups {
				_, _ = a.close(&CloseSpec{Group: g, Mode: CloseAbort})
			}
		}()
		for _, x := range []struct {
			kind  string
			count int
			t     *SlowTally
		}{{KindSlow, s.Slow, &slow}, {KindSlowReader, s.SlowReaders, &readers}} {
			if x.count == 0 {
				continue
			}
			group := fmt.Sprintf("%s-%s-%d", s.Prefix, x.kind, k)
			o, err := a.open(ctx, &OpenSpec{Group: group, Kind: x.kind, Count: x.count, IDBase: nextIDs(x.count), Addr: s.Addr,
				Room: s.SlowRoom, Rooms: 1, SourceIPs: s.SourceIPs, Concurrency: s.Concurrency, ConnectTimeout: s.ConnectTimeout,
				MaxTime: s.ConnectTimeout, RcvBuf: s.SlowRcvBuf, ReadRate: s.SlowReadRate})
			groups = append(groups, group)
			tallies = append(tallies, x.t)
			if err != nil {
				x.t.Failed += x.count
				x.t.Errors = addCounts(x.t.Errors, map[string]int{"open: " + err.Error(): x.count})
				continue
			}
			x.t.Opened += o.Opened
			x.t.Failed += o.Failed
			x.t.Errors = addCounts(x.t.Errors, o.Errors)
		}
		sleepUntil(ctx, end.Add(-s.ProbeWait))
		probes := make([]*ProbeResult, len(groups))
		var wg sync.WaitGroup
		for i, g := range groups {
			wg.Add(1)
			go func() { defer wg.Done(); probes[i], _ = a.probe(&ProbeSpec{Group: g, Wait: s.ProbeWait}) }()
		}
		wg.Wait()
		for i, p := range probes {
			if p == nil {
				continue
			}
			t := tallies[i]
			t.Fates = addCounts(t.Fates, p.Fates)
			t.Backlogged += p.Backlogged
			t.MaxBytes = max(t.MaxBytes, p.MaxBytes)
		}
		// The probe ends early when the server closed them all.
		sleepUntil(ctx, end)
	})
	return slow, readers, n
}

// hostileLoop opens the hostile clients every round, watches them until
// the round ends and records which ones the server closed, and how.
// Half-closed clients are then closed plainly (their FIN is already out:
// a server that missed it keeps the socket), the others with a reset.
func (a *Agent) hostileLoop(ctx context.Context, s *SoakSpec, start, deadline time.Time, nextIDs func(int) int, out map[string]*HostileTally) int {
	for _, kind := range HostileKinds {
		if s.Hostile[kind] > 0 {
			out[kind] = &HostileTally{}
		}
	}
	type opened struct{ group, kind string }
	return rounds(ctx, s, start, deadline, time.Second, func(k int, end time.Time) {
		var groups []opened
		defer func() {
			for _, g := range groups {
				mode := CloseAbort
				if g.kind == KindHalfClose {
					mode = CloseFIN
				}
				_, _ = a.close(&CloseSpec{Group: g.group, Mode: mode})
			}
		}()
		for _, kind := range HostileKinds {
			n := s.Hostile[kind]
			if n == 0 {
				continue
			}
			t := out[kind]
			t.Asked += n
			group := fmt.Sprintf("%s-%s-%d", s.Prefix, kind, k)
			// A room per round: traffic in it must not reap sockets the
			// server kept from earlier rounds, or a leak would hide.
			spec := &OpenSpec{Group: group, Kind: kind, Count: n, IDBase: nextIDs(n), Addr: s.Addr, Room: fmt.Sprintf("%s-%d", s.HostileRoom, k), Rooms: 1,
				SourceIPs: s.SourceIPs, Concurrency: s.Concurrency, ConnectTimeout: s.ConnectTimeout, MaxTime: s.ConnectTimeout}
			switch kind {
			case KindStallHandshake, KindStallFrame:
				spec.Trickle = trickleEvery
			case KindHTTPStall:
				spec.Path = s.HTTPPath
			}
			o, err := a.open(ctx, spec)
			groups = append(groups, opened{group, kind})
			if err != nil {
				t.Failed += n
				t.Errors = addCounts(t.Errors, map[string]int{"open: " + err.Error(): n})
				continue
			}
			t.Opened += o.Opened
			t.Failed += o.Failed
			t.Errors = addCounts(t.Errors, o.Errors)
		}
		sleepUntil(ctx, end)
		for _, g := range groups {
			in, err := a.inspect(g.group)
			if err != nil {
				continue
			}
			t := out[g.kind]
			t.Open += in.Open
			t.CloseHow = addCounts(t.CloseHow, in.CloseHow)
			t.CloseAfter = append(t.CloseAfter, in.CloseAfter...)
		}
	})
}

// churnLoop starts a churn cycle every 1/ChurnRate seconds until the
// deadline, never more than ChurnInFlight at once (a cycle that would
// exceed it is skipped and counted), and waits for the last ones.
func (a *Agent) churnLoop(ctx context.Context, s *SoakSpec, deadline time.Time, nextIDs func(int) int) ChurnTally {
	var (
		t    ChurnTally
		mu   sync.Mutex
		hist Histogram
		wg   sync.WaitGroup
	)
	ips := parseIPs(s.SourceIPs)
	modes := []string{s.ChurnClose}
	if s.ChurnClose == CloseMixed || s.ChurnClose == "" {
		modes = []string{CloseWS, CloseFIN, CloseAbort}
	}
	interval := time.Duration(float64(time.Second) / s.ChurnRate)
	slots := make(chan struct{}, max(1, s.ChurnInFlight))
	start := time.Now()
	for k := 0; ; k++ {
		due := start.Add(time.Duration(k) * interval)
		if !due.Before(deadline) || ctx.Err() != nil {
			break
		}
		sleepUntil(ctx, due)
		select {
		case slots <- struct{}{}:
		default:
			mu.Lock()
			t.Skipped++
			mu.Unlock()
			continue
		}
		id := nextIDs(2)
		o := DialOptions{Addr: s.Addr, Path: fmt.Sprintf("/chat/%s-churn-%d", s.Prefix, k), Timeout: s.ConnectTimeout}
		if len(ips) > 0 {
			o.LocalIP = ips[id%len(ips)]
		}
		mode := modes[k%len(modes)]
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			t0 := time.Now()
			class, err := churnCycle(ctx, o, mode)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Failed++
				t.Errors = addCounts(t.Errors, map[string]int{class: 1})
				if t.FirstError == "" {
					t.FirstError = err.Error()
				}
				return
			}
			t.Cycles++
			hist.Record(int64(time.Since(t0)))
		}()
	}
	wg.Wait()
	t.Cycle = hist.Data()
	return t
}

func parseIPs(txt []string) []net.IP {
	var ips []net.IP
	for _, s := range txt {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		}
	}
	return ips
}

// churnCycle is one churn cycle: two clients connect to the same fresh
// room, the first sends until the second has a message (the server adds a
// connection to its room some time after the upgrade, so the first copies
// may go to nobody), then the other way round, and both leave by mode. It
// returns a short class of what failed, for the report.
func churnCycle(ctx context.Context, o DialOptions, mode string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var pair [2]*member
	var got [2]chan struct{}
	defer func() {
		for _, m := range pair {
			if m != nil {
				m.closing.Store(true)
				closeMember(m, mode)
			}
		}
	}()
	for i := range pair {
		c, err := Dial(ctx, o)
		if err != nil {
			return classifyDialError(err), err
		}
		pair[i] = &member{conn: c, done: make(chan struct{})}
		got[i] = make(chan struct{}, 1)
		go readPair(pair[i], got[i])
	}
	for i := range pair {
		from, to := pair[i], pair[1-i]
		if class, err := exchange(ctx, from, to, got[1-i]); err != nil {
			return class, err
		}
	}
	return "", nil
}

// readPair reads a churn client's connection, signalling got on each
// message, until it ends.
func readPair(m *member, got chan<- struct{}) {
	defer close(m.done)
	for {
		op, _, err := m.conn.ReadMessage()
		if err != nil {
			m.ended(err)
			return
		}
		if op == OpText || op == OpBinary {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}
}

var churnMessage = []byte("chatbench soak churn")

// exchange sends from from every 100ms until to has a message.
func exchange(ctx context.Context, from, to *member, got <-chan struct{}) (string, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := from.conn.WriteMessage(OpText, churnMessage); err != nil {
			return "write failed", err
		}
		select {
		case <-got:
			return "", nil
		case <-to.done:
			how, _ := to.closeHow.Load().(string)
			return "closed by the server: " + how, fmt.Errorf("chatbench: the server ended a churn client before it got a message (%s)", how)
		case <-from.done:
			how, _ := from.closeHow.Load().(string)
			return "closed by the server: " + how, fmt.Errorf("chatbench: the server ended a churn client while it was sending (%s)", how)
		case <-ctx.Done():
			return "no message through the room", errors.New("chatbench: no message went through a fresh room within the connect timeout")
		case <-tick.C:
		}
	}
}

// slowReadRate is how fast a soak's slow readers read: far below the
// flood, so that they fall behind, but on, past the server's close.
const slowReadRate = 64 << 10

// CloseMixed, for soak churn: ws, fin and abort, one cycle each in turn.
const CloseMixed = "mixed"

// trickleEvery is how often a trickling attacker sends one more byte.
const trickleEvery = time.Second

// maxTrickle bounds the bytes one attacker trickles: the stalled frame
// announces 1000 bytes and sends 10 at once, so 900 more never finish it.
const maxTrickle = 900

// trickle sends one more byte to every open stalled attacker of ms each
// interval: mid-handshake ones extend the header line they stopped in,
// mid-frame ones add a payload byte. It stops when none is left open.
func trickle(ms []*member, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	b := []byte{'a'}
	for sent := 0; sent < maxTrickle; sent++ {
		<-tick.C
		alive := 0
		for _, m := range ms {
			if !m.open() {
				continue
			}
			alive++
			nc := m.raw
			if nc == nil {
				nc = m.conn.nc
			}
			_ = nc.SetWriteDeadline(time.Now().Add(every))
			_, _ = nc.Write(b)
		}
		if alive == 0 {
			return
		}
	}
}

var halfCloseMessage = []byte("chatbench: half-close")

// halfClose writes b and shuts the socket for writing; corked, b and the
// FIN leave in one segment.
func halfClose(nc net.Conn, cork bool, b []byte) error {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return errors.New("chatbench: half-close needs a TCP connection")
	}
	if cork {
		if err := setCork(tc); err != nil {
			return err
		}
	}
	if _, err := tc.Write(b); err != nil {
		return err
	}
	return tc.CloseWrite()
}

// setCork sets TCP_CORK: nothing leaves until the socket is uncorked or
// shut down (which sends what is queued with the FIN).
func setCork(tc *net.TCPConn) error {
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) }); err != nil {
		return err
	}
	return serr
}

// dialRaw opens a TCP connection within the connect timeout (for clients
// that never complete an upgrade).
func dialRaw(ctx context.Context, o DialOptions) (net.Conn, error) {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	return DialTCP(ctx, o)
}

// dialHostile sets up a half-close, garbage or http-stall connection:
// it connects and sends what that kind sends.
func dialHostile(ctx context.Context, m *member, kind string, o DialOptions, id int) error {
	switch kind {
	case KindHalfClose:
		// A whole message and right behind it the FIN: the client has
		// nothing more to say but still listens. RFC 6455 section 7.1.1:
		// the TCP connection is closed by the server first, after the
		// close handshake; a server that misses this FIN holds the
		// socket until some timeout. Three ways in turn: after the
		// upgrade, the message and the FIN in one segment (the socket
		// corked) or in two; or the upgrade request, the message and
		// the FIN in one segment, before the server has answered.
		switch id % 3 {
		case 0, 1:
			c, err := Dial(ctx, o)
			if err != nil {
				return err
			}
			if err := halfClose(c.nc, id%3 == 0, AppendClientFrame(nil, OpText, halfCloseMessage, mrand.Uint32())); err != nil {
				c.Close()
				return err
			}
			m.conn = c
		case 2:
			nc, err := dialRaw(ctx, o)
			if err != nil {
				return err
			}
			req, _ := UpgradeRequest(o.Addr, o.Path)
			if err := halfClose(nc, true, AppendClientFrame(req, OpText, halfCloseMessage, mrand.Uint32())); err != nil {
				nc.Close()
				return err
			}
			m.raw = nc
		}
	case KindGarbage:
		v := garbageVariants[id%len(garbageVariants)]
		if v.beforeUpgrade {
			nc, err := dialRaw(ctx, o)
			if err != nil {
				return err
			}
			if _, err := nc.Write(v.bytes()); err != nil {
				nc.Close()
				return err
			}
			m.raw = nc
			break
		}
		c, err := Dial(ctx, o)
		if err != nil {
			return err
		}
		if _, err := c.nc.Write(v.bytes()); err != nil {
			c.Close()
			return err
		}
		m.conn = c
	case KindHTTPStall:
		nc, err := dialRaw(ctx, o)
		if err != nil {
			return err
		}
		if _, err := nc.Write(httpStallRequest(o.Addr, o.Path)); err != nil {
			nc.Close()
			return err
		}
		m.raw = nc
	}
	return nil
}

// garbageVariants are what garbage clients send, one variant per
// connection in turn: after the upgrade, a frame RFC 6455 says the server
// must fail the connection for; or, instead of an HTTP request, bytes
// that are none.
var garbageVariants = []struct {
	name          string
	beforeUpgrade bool
	bytes         func() []byte
}{
	// Section 5.1: "a server MUST close the connection upon receiving a
	// frame that is not masked".
	{"unmasked frame", false, func() []byte { return []byte{0x80 | OpText, 5, 'h', 'e', 'l', 'l', 'o'} }},
	// Section 5.2: "If an unknown opcode is received, the receiving
	// endpoint MUST _Fail the WebSocket Connection_."
	{"reserved opcode 0x3", false, func() []byte { return AppendClientFrame(nil, 0x3, []byte("x"), mrand.Uint32()) }},
	// Section 5.2: RSV1 "MUST be 0 unless an extension is negotiated".
	{"RSV1 without extension", false, func() []byte {
		b := AppendClientFrame(nil, OpText, []byte("x"), mrand.Uint32())
		b[0] |= 0x40
		return b
	}},
	// Section 5.5: "All control frames MUST have a payload length of 125
	// bytes or less and MUST NOT be fragmented."
	{"126-byte ping", false, func() []byte { return AppendClientFrame(nil, OpPing, make([]byte, 126), mrand.Uint32()) }},
	{"fragmented ping", false, func() []byte {
		b := AppendClientFrame(nil, OpPing, []byte("x"), mrand.Uint32())
		b[0] &^= 0x80
		return b
	}},
	// Section 8.1: text that is not UTF-8 fails the connection (1007).
	{"invalid UTF-8 text", false, func() []byte { return AppendClientFrame(nil, OpText, []byte{0xff, 0xfe, 0xfd}, mrand.Uint32()) }},
	// Section 5.4: a continuation frame continues nothing.
	{"continuation without a message", false, func() []byte {
		return AppendClientFrame(nil, OpContinuation, []byte("x"), mrand.Uint32())
	}},
	// A header announcing 1 TiB: over any message limit (1009), to be
	// refused before a byte of it is buffered.
	{"1 TiB frame header", false, func() []byte { return appendFrameHeader(nil, OpBinary, 1<<40, mrand.Uint32()) }},
	// Not HTTP at all (a TLS ClientHello's first bytes), but a complete
	// head, so only a parser can reject it.
	{"not HTTP", true, func() []byte { return []byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http\r\n\r\n") }},
}

// httpStallRequest is a plain HTTP request that announces a body of 1000
// bytes and sends 10 of them: unless the server times the body out, the
// connection (and whatever serves it) is held for as long as the client
// likes.
func httpStallRequest(host, path string) []byte {
	return []byte("POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nUser-Agent: chatbench\r\n\r\n" + `{"name":"s`)
}

// httpAnswerError is how a plain HTTP connection ended after the server
// answered it: the status code, then the error that ended the reading.
type httpAnswerError struct {
	status string
	err    error
}

func (e *httpAnswerError) Error() string {
	return fmt.Sprintf("chatbench: the server answered %s, then: %v", e.status, e.err)
}

func (e *httpAnswerError) Unwrap() error { return e.err }

// watchHTTP is watch for a connection that sent (something instead of)
// an HTTP request: it also notes the status of a response, if the server
// sent one before it closed.
func watchHTTP(m *member, r io.Reader) {
	defer close(m.done)
	buf := make([]byte, 512)
	status := ""
	for first := true; ; first = false {
		n, err := r.Read(buf)
		if p := buf[:n]; first && len(p) >= 12 && bytes.HasPrefix(p, []byte("HTTP/1.")) {
			status = string(p[9:12])
		}
		if err != nil {
			if status != "" {
				err = &httpAnswerError{status: status, err: err}
			}
			m.ended(err)
			return
		}
	}
}

// slowRead reads a slow reader's connection at rate bytes per second
// until m.fast is closed, then as fast as it can, until the connection
// ends (or the probe's read deadline).
func slowRead(m *member, rate int) {
	defer close(m.done)
	fast := false
	for {
		_, p, err := m.conn.ReadMessage()
		if err != nil {
			m.ended(err)
			return
		}
		if fast {
			m.keptMsgs.Add(1)
			m.keptBytes.Add(int64(len(p)))
			continue
		}
		pause := time.NewTimer(time.Duration(int64(len(p)) * int64(time.Second) / int64(max(1, rate))))
		select {
		case <-m.fast:
			fast = true
		case <-pause.C:
		}
		pause.Stop()
	}
}

// discard reads and drops messages until the connection ends, to see how
// the server ends it (a close code, EOF, a reset).
func discard(m *member) {
	defer close(m.done)
	for {
		if _, _, err := m.conn.ReadMessage(); err != nil {
			m.ended(err)
			return
		}
	}
}
