package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The recovery scenario (issue 17): members of one Pusher channel lose
// their connection on a schedule while numbered events flow, reconnect,
// and ask for what they missed the way chatd's recovery plugin
// (/js/chatd-recovery.js) does for pusher-js: pusher:subscribe with
// "chatd_since" set to the last "chatd_position" they saw. Every member
// checks that it ends with every event exactly once and in order.
//
// Members and publishers live in chatbench's own process (one goroutine
// per member, one per publisher), so a run holds at most about one
// process's open-file limit of members. The cuts are client-side: the
// member's socket is closed with a reset (SO_LINGER 0), as a phone that
// changes networks looks to the server; the member stays away -cut-down,
// then dials the same node again.
//
// Over a cluster (-instances N with -nats), member i starts on node i mod
// N, and each event goes to the HTTP API of the next node in turn. Node
// kills (-kill-every) SIGKILL one node at a time, in turn, and start it
// again on its port -kill-down later: its members see their connection
// end and reconnect at once, with chatd_since, to the next node that is
// up. A node is killed only once no publish is in flight to it, and no
// event is sent to it until it is back, so every event the HTTP API
// answered was published exactly once (a publish retried on another
// node after a kill could have been stored twice).
//
// What a member counts, per publisher, from the sequence number in each
// event's payload (the broadcast payload: phase, sender, sequence, CRC):
//   - missed: published (the HTTP API answered 200) and never received;
//   - duplicated: received more than once;
//   - out of order: received after a higher number of the same publisher
//     (a publisher waits for each answer, so its events get increasing
//     positions);
//   - position breaks: an event whose chatd_position is not the one after
//     the member's last (same epoch, offset + 1; over a cluster, -nats,
//     only a higher offset, since chatd's positions there are sequences
//     of the one JetStream stream all rooms share), unless chatd said
//     chatd:recovery_failed just before.
//
// Catch-up time: from the moment a member dials again to the moment it
// has the event at the position that subscription_succeeded gave (the
// channel's position when it subscribed again), or to
// subscription_succeeded itself when nothing was missed. After the server
// closed the connection (a node killed), from the moment the member saw it
// end (it then picks another node and dials at once): reported apart.

// chatd's recovery fields and event (server/pusher/history.go).
const (
	recoveryFailedEvent = "chatd:recovery_failed"
	positionField       = "chatd_position"
)

// Recovery defaults.
const (
	defaultCutEvery = 2 * time.Second
	defaultCutDown  = 250 * time.Millisecond
	defaultKillDown = 500 * time.Millisecond
	reconnectPause  = 100 * time.Millisecond // after a failed reconnect
)

// RecoveryResult is one recovery run.
type RecoveryResult struct {
	Members        int     `json:"members"`
	Senders        int     `json:"senders"`
	Rate           float64 `json:"rate"`
	CutEverySec    float64 `json:"cut_every_seconds"`
	CutDownSec     float64 `json:"cut_down_seconds"`
	Published      int64   `json:"events_published"` // answered 200 by the HTTP API
	SendErrors     int64   `json:"send_errors"`
	FirstSendError string  `json:"first_send_error,omitempty"`
	PublishSeconds float64 `json:"publish_seconds"`
	DrainSeconds   float64 `json:"drain_seconds"`

	Nodes          int            `json:"nodes"`      // server processes the members are spread over
	Kills          int64          `json:"node_kills"` // nodes SIGKILLed and started again
	KillEverySec   float64        `json:"kill_every_seconds,omitempty"`
	KillDownSec    float64        `json:"kill_down_seconds,omitempty"`
	Cuts           int64          `json:"cuts"`
	Reconnects     int64          `json:"reconnects"` // subscribed again after a cut or a server close
	ConnectFails   int64          `json:"reconnect_failures"`
	FirstConnErr   string         `json:"first_reconnect_error,omitempty"`
	ServerClosed   int64          `json:"server_closed"`       // disconnects chatbench did not cause
	Replayed       int64          `json:"events_replayed"`     // received between subscription_succeeded and caught up
	ReplayMax      int64          `json:"events_replayed_max"` // the most one reconnect was replayed
	Received       int64          `json:"events_received"`
	Missed         int64          `json:"missed"`
	Duplicates     int64          `json:"duplicates"`
	OutOfOrder     int64          `json:"out_of_order"`
	Corrupt        int64          `json:"corrupt"`
	Stray          int64          `json:"stray"`
	PositionBreaks int64          `json:"position_breaks"`
	CleanMembers   int            `json:"clean_members"` // every event once, in order
	NoPosition     int64          `json:"events_without_position"`
	RecoveryFailed int64          `json:"recovery_failed"`
	FailedCodes    map[string]int `json:"recovery_failed_codes,omitempty"`
	CatchUp        Latency        `json:"catch_up"`
	CatchUpHist    HistogramData  `json:"catch_up_hist_ns"`
	// After a server close (a node killed): from the end of the connection
	// to caught up on another node.
	KillCatchUp     Latency       `json:"catch_up_after_server_close"`
	KillCatchUpHist HistogramData `json:"catch_up_after_server_close_hist_ns"`

	ServerCPU float64 `json:"server_cpu_seconds"`
	RSSBefore int64   `json:"server_rss_before"`
	RSSPeak   int64   `json:"server_rss_peak"`
	RSSAfter  int64   `json:"server_rss_after"`

	PerMember []RecoveryMember `json:"per_member"`
}

// RecoveryMember is one member's account.
type RecoveryMember struct {
	ID             int            `json:"id"`
	Received       int64          `json:"received"`
	Missed         int64          `json:"missed"`
	Duplicates     int64          `json:"duplicates"`
	OutOfOrder     int64          `json:"out_of_order"`
	Corrupt        int64          `json:"corrupt,omitempty"`
	PositionBreaks int64          `json:"position_breaks,omitempty"`
	Cuts           int64          `json:"cuts"`
	Reconnects     int64          `json:"reconnects"`
	Replayed       int64          `json:"replayed"`
	RecoveryFailed map[string]int `json:"recovery_failed,omitempty"`
	LastPosition   string         `json:"last_position,omitempty"`
}

// clean reports whether the member got every event once, in order.
func (m RecoveryMember) clean() bool {
	return m.Missed == 0 && m.Duplicates == 0 && m.OutOfOrder == 0 && m.Corrupt == 0 && m.PositionBreaks == 0
}

// recoveryRun is what a run's members and publishers share.
type recoveryRun struct {
	cfg      *Config
	addrs    []string // the nodes
	down     []atomic.Bool
	guard    []sync.RWMutex // held shared by a publish to the node, exclusively by its kill
	spec     PusherSpec
	tag      uint16
	ips      []net.IP
	messages int    // per sender
	prefix   []byte // of a published event: pusherFast

	// sparse: offsets of one channel grow but skip (a cluster's positions
	// are sequences of the one stream all rooms share); otherwise each
	// event's offset is the last one's plus one.
	sparse bool

	stopping    atomic.Bool
	catchUp     ConcurrentHistogram
	killCatchUp ConcurrentHistogram

	errMu        sync.Mutex
	connFails    int64
	firstConnErr string
}

// follows reports whether offset next may come right after last.
func (rc *recoveryRun) follows(last, next uint64) bool {
	if rc.sparse {
		return next > last
	}
	return next == last+1
}

// pick returns the first node from "from" on (in turn) that is up, or
// from itself if none is.
func (rc *recoveryRun) pick(from int) int {
	n := len(rc.addrs)
	for i := 0; i < n; i++ {
		if k := (from + i) % n; !rc.down[k].Load() {
			return k
		}
	}
	return from % n
}

// pickPublish is pick for a publish: it returns a node that is up with its
// guard held shared (release it with rc.guard[k].RUnlock), or -1 when no
// node is up.
func (rc *recoveryRun) pickPublish(from int) int {
	n := len(rc.addrs)
	for i := 0; i < n; i++ {
		k := (from + i) % n
		if rc.down[k].Load() {
			continue
		}
		rc.guard[k].RLock()
		if !rc.down[k].Load() {
			return k
		}
		rc.guard[k].RUnlock()
	}
	return -1
}

func (rc *recoveryRun) connFailed(err error) {
	rc.errMu.Lock()
	defer rc.errMu.Unlock()
	rc.connFails++
	if rc.firstConnErr == "" {
		rc.firstConnErr = err.Error()
	}
}

// recoveryMember is one member: its goroutine connects, reads, and after
// each cut reconnects with the last position it saw.
type recoveryMember struct {
	id   int
	rc   *recoveryRun
	node int // the node it dials (its goroutine only)

	mu       sync.Mutex
	conn     *Conn // open; nil while away
	caught   bool  // conn has caught up: it may be cut
	cutting  bool  // the scheduler aborted conn
	cuts     int64
	subbed   chan struct{} // closed once the first subscription is over
	subOnce  sync.Once
	distinct atomic.Int64

	// The member's goroutine only (read after it ends).
	havePos          bool
	epoch            string
	offset           uint64
	seen             [][]uint64 // per sender: a bit per sequence number
	high             []int64    // per sender: highest sequence seen, -1 none
	dups, ooo        int64
	corrupt, stray   int64
	posBreaks, noPos int64
	reconnects       int64
	serverClosed     int64
	replayed         int64
	replayMax        int64
	failed           map[string]int
	afterFailure     bool // the next event may start a new epoch
}

func newRecoveryMember(id int, rc *recoveryRun) *recoveryMember {
	m := &recoveryMember{id: id, rc: rc, subbed: make(chan struct{})}
	if len(rc.addrs) > 0 {
		m.node = id % len(rc.addrs)
	}
	words := (rc.messages + 63) / 64
	m.seen = make([][]uint64, rc.cfg.Senders)
	m.high = make([]int64, rc.cfg.Senders)
	for s := range m.seen {
		m.seen[s] = make([]uint64, words)
		m.high[s] = -1
	}
	return m
}

// pusherMessage is an event as chatd sends it, with its position.
type pusherMessage struct {
	pusherEnvelope
	Position string `json:"chatd_position"`
}

// parsePosition splits "EPOCH:OFFSET".
func parsePosition(s string) (epoch string, offset uint64, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return s[:i], n, true
}

// parsePositionBytes is parsePosition without allocating.
func parsePositionBytes(b []byte) (epoch []byte, offset uint64, ok bool) {
	i := bytes.LastIndexByte(b, ':')
	if i <= 0 || i == len(b)-1 || len(b)-i-1 > 19 {
		return nil, 0, false
	}
	for _, c := range b[i+1:] {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		offset = offset*10 + uint64(c-'0')
	}
	return b[:i], offset, true
}

// positionTail is what follows an event's data when it has a position.
var positionTail = []byte(`,"` + positionField + `":"`)

// fastEvent takes a published event in the form chatd encodes it,
// {"event":"msg","channel":CH,"data":"PAYLOAD"} with ,"chatd_position":"P"
// before the closing brace, apart without JSON decoding or allocating (a
// thousand members of a busy channel in one process must not make the
// client the bottleneck). ok is false for anything else; data and pos
// point into p.
func fastEvent(prefix, p []byte) (data, pos []byte, ok bool) {
	if !bytes.HasPrefix(p, prefix) {
		return nil, nil, false
	}
	rest := p[len(prefix):]
	i := bytes.IndexByte(rest, '"')
	if i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return nil, nil, false
	}
	data, tail := rest[:i], rest[i+1:]
	switch {
	case len(tail) == 1 && tail[0] == '}':
		return data, nil, true
	case bytes.HasPrefix(tail, positionTail) && bytes.HasSuffix(tail, []byte(`"}`)):
		pos = tail[len(positionTail) : len(tail)-2]
		if bytes.IndexByte(pos, '"') >= 0 || bytes.IndexByte(pos, '\\') >= 0 {
			return nil, nil, false
		}
		return data, pos, true
	}
	return nil, nil, false
}

// subscribe dials, waits for connection_established, subscribes (with
// chatd_since when the member has a position) and waits for
// subscription_succeeded, whose position it returns ("" when it has none).
func (m *recoveryMember) subscribe(ctx context.Context) (*Conn, string, error) {
	cfg := m.rc.cfg
	o := DialOptions{Addr: m.rc.addrs[m.node], Path: pusherPath(m.rc.spec.Key), Timeout: cfg.ConnectTimeout}
	if len(m.rc.ips) > 0 {
		o.LocalIP = m.rc.ips[m.id%len(m.rc.ips)]
	}
	c, err := Dial(ctx, o)
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(cfg.ConnectTimeout)
	_ = c.nc.SetDeadline(deadline)
	fail := func(stage string, err error) (*Conn, string, error) {
		c.Abort()
		return nil, "", fmt.Errorf("%s: %w", stage, err)
	}
	data := map[string]any{"channel": m.rc.spec.Channel}
	if m.havePos {
		data["chatd_since"] = m.epoch + ":" + strconv.FormatUint(m.offset, 10)
	}
	sub, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": data})
	established := false
	for {
		op, p, err := c.ReadMessage()
		if err != nil {
			return fail("waiting for subscription_succeeded", err)
		}
		if op != OpText {
			continue
		}
		var e pusherMessage
		if err := json.Unmarshal(p, &e); err != nil {
			return fail("subscribing", fmt.Errorf("%q is not a Pusher message: %v", p, err))
		}
		switch {
		case e.Event == "pusher:connection_established" && !established:
			established = true
			if err := c.WriteMessage(OpText, sub); err != nil {
				return fail("sending pusher:subscribe", err)
			}
		case e.Event == "pusher_internal:subscription_succeeded" && e.Channel == m.rc.spec.Channel:
			_ = c.nc.SetDeadline(time.Time{})
			return c, e.Position, nil
		case e.Event == "pusher:ping":
			if err := c.WriteMessage(OpText, pusherPong); err != nil {
				return fail("answering pusher:ping", err)
			}
		case e.Event == "pusher:error" || e.Event == "pusher:subscription_error":
			_, text := pusherErrorText(&e.pusherEnvelope)
			return fail("subscribing", errors.New(text))
		}
	}
}

// firstDone marks the member's first subscription over (caught up, or
// failed).
func (m *recoveryMember) firstDone() { m.subOnce.Do(func() { close(m.subbed) }) }

// run is the member's life until the run stops: subscribe, read, and
// after a disconnect, reconnect and recover.
func (m *recoveryMember) run(ctx context.Context) error {
	defer m.firstDone()
	first := true
	var lost time.Time // when the server ended the last connection (zero: a cut, or none)
	for !m.rc.stopping.Load() {
		start := time.Now()
		c, at, err := m.subscribe(ctx)
		if err != nil {
			if first {
				return err
			}
			m.rc.connFailed(err)
			m.node = m.rc.pick(m.node + 1) // that one may be down
			select {
			case <-time.After(reconnectPause):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if !first {
			m.reconnects++
		}
		// stopAll sets stopping before it takes mu to abort conn: either
		// it finds conn here, or this finds stopping set.
		m.mu.Lock()
		m.conn = c
		stop := m.rc.stopping.Load()
		m.mu.Unlock()
		if stop {
			c.Abort()
			return nil
		}
		m.read(c, at, start, first, lost)
		first = false
		m.firstDone()
		m.mu.Lock()
		m.conn, m.caught = nil, false
		cut := m.cutting
		m.cutting = false
		m.mu.Unlock()
		c.Abort()
		if m.rc.stopping.Load() {
			return nil
		}
		if !cut {
			// The server ended it (a node killed): on to the next node
			// that is up, at once.
			m.serverClosed++
			lost = time.Now()
			m.node = m.rc.pick(m.node + 1)
			continue
		}
		lost = time.Time{}
		select {
		case <-time.After(m.rc.cfg.CutDown):
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// read handles c's messages until it fails. at is the channel's position
// at subscription_succeeded: the member is caught up once it has the
// event there.
func (m *recoveryMember) read(c *Conn, at string, start time.Time, first bool, lost time.Time) {
	catching := true
	targetEpoch, target, ok := parsePosition(at)
	if ok && !m.havePos {
		// The first subscription (or one after a server without
		// positions): the member stands where the channel does.
		m.havePos, m.epoch, m.offset = true, targetEpoch, target
	}
	reached := func() bool { return !ok || (m.epoch == targetEpoch && m.offset >= target) }
	ready := func() {
		catching = false
		m.mu.Lock()
		m.caught = true
		m.mu.Unlock()
		if first {
			m.firstDone()
		}
	}
	replayed := int64(0) // events received on c before it caught up
	defer func() { m.replayMax = max(m.replayMax, replayed) }()
	caughtUp := func() {
		switch {
		case first:
		case !lost.IsZero():
			m.rc.killCatchUp.Record(m.id, time.Since(lost).Nanoseconds())
		default:
			m.rc.catchUp.Record(m.id, time.Since(start).Nanoseconds())
		}
		ready()
	}
	if reached() {
		caughtUp()
	}
	for {
		op, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if op != OpText {
			m.stray++
			continue
		}
		if data, pos, ok := fastEvent(m.rc.prefix, p); ok {
			m.event(data, pos)
			if catching {
				m.replayed++
				replayed++
				if reached() {
					caughtUp()
				}
			}
			continue
		}
		var e pusherMessage
		if err := json.Unmarshal(p, &e); err != nil {
			m.corrupt++
			continue
		}
		switch {
		case e.Event == "pusher:ping":
			_ = c.WriteMessage(OpText, pusherPong)
		case e.Event == pusherEventName && e.Channel == m.rc.spec.Channel:
			data, err := e.dataBytes()
			if err != nil {
				m.corrupt++
				continue
			}
			m.event(data, []byte(e.Position))
			if catching {
				m.replayed++
				replayed++
				if reached() {
					caughtUp()
				}
			}
		case e.Event == recoveryFailedEvent && e.Channel == m.rc.spec.Channel:
			m.recoveryFailed(&e)
			if catching {
				// Not caught up, and never will be: chatd said what came
				// meanwhile is lost. Live events go on from here.
				ready()
			}
		default:
			m.stray++
		}
	}
}

// event accounts for one published event: its data, and its
// chatd_position (empty: none).
func (m *recoveryMember) event(data, position []byte) {
	p, err := DecodePayload(data)
	if err != nil || p.Phase != m.rc.tag || int(p.Sender) >= len(m.seen) || int(p.Seq) >= m.rc.messages {
		m.corrupt++
		return
	}
	w, bit := p.Seq/64, uint64(1)<<(p.Seq%64)
	switch {
	case m.seen[p.Sender][w]&bit != 0:
		m.dups++
	default:
		m.seen[p.Sender][w] |= bit
		m.distinct.Add(1)
		if int64(p.Seq) < m.high[p.Sender] {
			m.ooo++
		} else {
			m.high[p.Sender] = int64(p.Seq)
		}
	}
	ep, off, ok := parsePositionBytes(position)
	if !ok {
		m.noPos++
		return
	}
	if m.havePos && !m.afterFailure && (string(ep) != m.epoch || !m.rc.follows(m.offset, off)) {
		m.posBreaks++
	}
	m.afterFailure = false
	if string(ep) != m.epoch {
		m.epoch = string(ep)
	}
	m.havePos, m.offset = true, off
}

// recoveryFailed notes chatd:recovery_failed; its data's position is
// where the channel stands, from which live events go on.
func (m *recoveryMember) recoveryFailed(e *pusherMessage) {
	var d struct {
		Code     string `json:"code"`
		Position string `json:"position"`
	}
	if data, err := e.dataBytes(); err == nil {
		_ = json.Unmarshal(data, &d)
	}
	if d.Code == "" {
		d.Code = "?"
	}
	if m.failed == nil {
		m.failed = map[string]int{}
	}
	m.failed[d.Code]++
	if ep, off, ok := parsePosition(d.Position); ok {
		m.havePos, m.epoch, m.offset = true, ep, off
	} else {
		m.afterFailure = true
	}
}

// cut aborts the member's connection if it is open and caught up.
func (m *recoveryMember) cut() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil || !m.caught || m.cutting {
		return false
	}
	m.cutting = true
	m.cuts++
	_ = m.conn.Abort()
	return true
}

// stop aborts whatever connection the member has open.
func (m *recoveryMember) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil {
		_ = m.conn.Abort()
	}
}

// account is the member's report, given which events were published.
func (m *recoveryMember) account(published [][]bool) RecoveryMember {
	a := RecoveryMember{ID: m.id, Duplicates: m.dups, OutOfOrder: m.ooo, Corrupt: m.corrupt, PositionBreaks: m.posBreaks,
		Cuts: m.cuts, Reconnects: m.reconnects, Replayed: m.replayed, RecoveryFailed: m.failed}
	for s, ok := range published {
		for seq, sent := range ok {
			got := m.seen[s][seq/64]&(1<<(seq%64)) != 0
			if got {
				a.Received++
			} else if sent {
				a.Missed++
			}
		}
	}
	if m.havePos {
		a.LastPosition = m.epoch + ":" + strconv.FormatUint(m.offset, 10)
	}
	return a
}

// recoveryPublisher publishes sender s's events on schedule.
func (rc *recoveryRun) publish(ctx context.Context, s int, start time.Time, ok []bool, sendErrs *atomic.Int64, firstErr *atomic.Value) error {
	cfg := rc.cfg
	pubs := make([]*publisher, len(rc.addrs))
	for k, addr := range rc.addrs {
		pubs[k] = newPublisher(addr, &rc.spec)
		defer pubs[k].close()
	}
	buf := make([]byte, cfg.Size)
	interval := time.Duration(float64(time.Second) * float64(cfg.Senders) / cfg.Rate)
	offset := time.Duration(float64(time.Second) * float64(s) / cfg.Rate)
	end := start.Add(cfg.Duration)
	for seq := 0; seq < rc.messages; seq++ {
		due := start.Add(offset + time.Duration(seq)*interval)
		if due.After(end) {
			return nil
		}
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil
			}
		}
		k := rc.pickPublish(s + seq)
		for k < 0 { // every node down: wait for one
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
			k = rc.pickPublish(s + seq)
		}
		EncodePayload(buf, Payload{Phase: rc.tag, Sender: uint32(s), Seq: uint32(seq), SentNs: time.Now().UnixNano()})
		err := pubs[k].publish(buf)
		rc.guard[k].RUnlock()
		if err == nil {
			ok[seq] = true
			continue
		}
		var pe *publishError
		if errors.As(err, &pe) {
			return err // the server refuses: wrong app, secret, size
		}
		sendErrs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	return nil
}

func (r *runner) recovery(ctx context.Context) (*RecoveryResult, error) {
	cfg := r.cfg
	addrs := r.t.addrs()
	if len(addrs) == 0 {
		return nil, errors.New("recovery: no server")
	}
	r.phase++
	rc := &recoveryRun{
		cfg: cfg, addrs: addrs, sparse: cfg.NATS != "", down: make([]atomic.Bool, len(addrs)), guard: make([]sync.RWMutex, len(addrs)), tag: r.phase, messages: cfg.Messages, prefix: pusherFast(cfg.Channel),
		spec: PusherSpec{AppID: cfg.AppID, Key: cfg.AppKey, Secret: cfg.AppSecret, Channel: cfg.Channel},
	}
	for _, ip := range cfg.sourceIPs() {
		rc.ips = append(rc.ips, net.ParseIP(ip))
	}
	res := &RecoveryResult{Members: cfg.Conns, Senders: cfg.Senders, Rate: cfg.Rate, Nodes: len(addrs),
		CutEverySec: cfg.CutEvery.Seconds(), CutDownSec: cfg.CutDown.Seconds(),
		KillEverySec: cfg.KillEvery.Seconds(), KillDownSec: cfg.KillDown.Seconds()}

	// Members: all subscribed before the first event, so that each must
	// end with every event.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	members := make([]*recoveryMember, cfg.Conns)
	errs := make(chan error, cfg.Conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, cfg.Concurrency)
	var subscribed atomic.Int64
	stopSubs := r.prog.track("members subscribe", int64(cfg.Conns), subscribed.Load)
	for i := range members {
		m := newRecoveryMember(i, rc)
		members[i] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			go func() {
				<-m.subbed
				subscribed.Add(1)
				<-sem
			}()
			if err := m.run(ctx); err != nil {
				errs <- fmt.Errorf("member %d: %w", m.id, err)
			}
		}()
	}
	stopAll := func() {
		rc.stopping.Store(true)
		cancel()
		for _, m := range members {
			m.stop()
		}
		wg.Wait()
	}
	for _, m := range members {
		<-m.subbed
	}
	stopSubs()
	select {
	case err := <-errs:
		stopAll()
		return nil, fmt.Errorf("not every member subscribed: %w", err)
	default:
	}

	before, beforeEach, have := r.t.sampleEach()
	// CPU of processes killed meanwhile (less what they had used before);
	// a process started again counts from its start.
	base := make([]time.Duration, len(beforeEach))
	for i, x := range beforeEach {
		base[i] = x.CPU
	}
	var retired time.Duration
	samp := startSampler(r.t.pids(), nil)
	published := make([][]bool, cfg.Senders)
	var sendErrs atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	pubErr := make(chan error, cfg.Senders)
	var pwg sync.WaitGroup
	for s := range published {
		published[s] = make([]bool, cfg.Messages)
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			if err := rc.publish(ctx, s, start, published[s], &sendErrs, &firstErr); err != nil {
				pubErr <- err
				cancel()
			}
		}()
	}
	// Cuts: one member every CutEvery/N, round-robin, while events flow.
	pubDone := make(chan struct{})
	go func() { pwg.Wait(); close(pubDone) }()
	tick := max(cfg.CutEvery/time.Duration(cfg.Conns), time.Millisecond)
	ticker := time.NewTicker(tick)
	// Node kills: one node every KillEvery, in turn, while events flow.
	killErr := make(chan error, 1)
	killDone := make(chan struct{})
	go func() {
		defer close(killDone)
		if cfg.KillEvery <= 0 {
			return
		}
		t := time.NewTicker(cfg.KillEvery)
		defer t.Stop()
		for k := 0; ; k++ {
			select {
			case <-t.C:
			case <-pubDone:
				return
			case <-ctx.Done():
				return
			}
			i := k % len(addrs)
			rc.down[i].Store(true)
			rc.guard[i].Lock() // no publish in flight to it
			cpu := r.t.killInstance(i)
			rc.guard[i].Unlock()
			if have && i < len(base) {
				retired += max(0, cpu-base[i])
				base[i] = 0
			}
			res.Kills++
			select {
			case <-time.After(cfg.KillDown):
			case <-ctx.Done():
				return
			}
			if err := r.t.restartInstance(ctx, i, cfg.ServerTimeout); err != nil {
				killErr <- err
				cancel()
				return
			}
			rc.down[i].Store(false)
		}
	}()
	total := int64(float64(cfg.Messages*cfg.Senders) / cfg.Rate * 1000)
	stopPub := r.prog.track("publish and cut", total, func() int64 { return time.Since(start).Milliseconds() })
cutting:
	for k := 0; ; k++ {
		select {
		case <-ticker.C:
			members[k%len(members)].cut()
		case <-pubDone:
			break cutting
		}
	}
	ticker.Stop()
	<-killDone
	stopPub()
	res.PublishSeconds = time.Since(start).Seconds()
	select {
	case err := <-killErr:
		stopAll()
		samp.stop()
		return nil, err
	case err := <-pubErr:
		stopAll()
		samp.stop()
		return nil, err
	default:
	}
	var want int64
	for _, ok := range published {
		for _, sent := range ok {
			if sent {
				want++
			}
		}
	}
	res.Published, res.SendErrors = want, sendErrs.Load()
	if v := firstErr.Load(); v != nil {
		res.FirstSendError = v.(string)
	}

	// Drain: until every member has every event, or no progress for
	// -drain-timeout.
	drainStart := time.Now()
	got := func() int64 {
		var n int64
		for _, m := range members {
			n += min(m.distinct.Load(), want)
		}
		return n
	}
	stopDrain := r.prog.track("catch up", want*int64(len(members)), got)
	last, lastAt := got(), time.Now()
	for last < want*int64(len(members)) && time.Since(lastAt) < cfg.DrainTimeout && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if n := got(); n > last {
			last, lastAt = n, time.Now()
		}
	}
	stopDrain()
	res.DrainSeconds = time.Since(drainStart).Seconds()
	after, afterEach, haveAfter := r.t.sampleEach()
	peak, _ := samp.stop() // of the processes it began with, until one was killed
	stopAll()
	if have && haveAfter && len(afterEach) == len(base) {
		cpu := retired
		for i, x := range afterEach {
			cpu += x.CPU - base[i]
		}
		res.ServerCPU = cpu.Seconds()
		res.RSSBefore, res.RSSAfter = before.RSS, after.RSS
		res.RSSPeak = max(before.RSS, after.RSS, peak)
	}

	for _, m := range members {
		a := m.account(published)
		res.PerMember = append(res.PerMember, a)
		if a.clean() {
			res.CleanMembers++
		}
		res.Cuts += a.Cuts
		res.Reconnects += a.Reconnects
		res.Received += a.Received
		res.Missed += a.Missed
		res.Duplicates += a.Duplicates
		res.OutOfOrder += a.OutOfOrder
		res.Corrupt += a.Corrupt
		res.PositionBreaks += a.PositionBreaks
		res.Replayed += a.Replayed
		res.ReplayMax = max(res.ReplayMax, m.replayMax)
		res.Stray += m.stray
		res.NoPosition += m.noPos
		res.ServerClosed += m.serverClosed
		for code, n := range a.RecoveryFailed {
			res.RecoveryFailed += int64(n)
			res.FailedCodes = addCounts(res.FailedCodes, map[string]int{code: n})
		}
	}
	res.ConnectFails, res.FirstConnErr = rc.connFails, rc.firstConnErr
	h := rc.catchUp.Snapshot()
	res.CatchUp, res.CatchUpHist = Summarize(h), h.Data()
	h = rc.killCatchUp.Snapshot()
	res.KillCatchUp, res.KillCatchUpHist = Summarize(h), h.Data()
	return res, nil
}

// recoveryDetails lists the members that did not end clean (at most 10)
// and what went wrong around the run.
func (res *RecoveryResult) details() []string {
	var out []string
	var bad []RecoveryMember
	for _, m := range res.PerMember {
		if !m.clean() {
			bad = append(bad, m)
		}
	}
	sort.Slice(bad, func(i, j int) bool { return bad[i].Missed+bad[i].Duplicates > bad[j].Missed+bad[j].Duplicates })
	if len(bad) > 0 {
		out = append(out, fmt.Sprintf("%d of %d members did not end with every event exactly once, in order", len(bad), res.Members))
	}
	for i, m := range bad {
		if i == 10 {
			out = append(out, fmt.Sprintf("... and %d more (see -json per_member)", len(bad)-10))
			break
		}
		out = append(out, fmt.Sprintf("member %d: received %d, missed %d, duplicated %d, out of order %d, corrupt %d, position breaks %d; cut %d times, reconnected %d, replayed %d; recovery failed: %s",
			m.ID, m.Received, m.Missed, m.Duplicates, m.OutOfOrder, m.Corrupt, m.PositionBreaks, m.Cuts, m.Reconnects, m.Replayed, formatCounts(m.RecoveryFailed)))
	}
	if res.RecoveryFailed > 0 {
		out = append(out, "chatd:recovery_failed by code: "+formatCounts(res.FailedCodes))
	}
	if res.SendErrors > 0 {
		out = append(out, fmt.Sprintf("publish errors %d (first: %s)", res.SendErrors, res.FirstSendError))
	}
	if res.ConnectFails > 0 {
		out = append(out, fmt.Sprintf("failed reconnects %d, retried after %v (first: %s)", res.ConnectFails, reconnectPause, res.FirstConnErr))
	}
	if res.NoPosition > 0 {
		out = append(out, fmt.Sprintf("%d events came without %s: the server keeps no history for this channel, so a reconnect cannot ask for what it missed", res.NoPosition, positionField))
	}
	if res.Kills > 0 {
		out = append(out, fmt.Sprintf("%d node kills over %d nodes (SIGKILL, started again %v later); %d connections ended by the server, each member then reconnected to the next node up; catch-up after a server close p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d)",
			res.Kills, res.Nodes, time.Duration(res.KillDownSec*float64(time.Second)), res.ServerClosed, res.KillCatchUp.P50, res.KillCatchUp.P99, res.KillCatchUp.Max, res.KillCatchUp.Count))
	}
	if (res.ServerClosed > 0 && res.Kills == 0) || res.Stray > 0 {
		out = append(out, fmt.Sprintf("closed by the server %d, stray messages %d", res.ServerClosed, res.Stray))
	}
	return out
}
