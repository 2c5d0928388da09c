package broker

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// NATS defaults.
const (
	DefaultSubjectPrefix   = "chatd"
	DefaultReconnectBuffer = 8 << 20
	// natsReconnectWait is the pause between attempts to reach NATS, at
	// start as after a loss.
	natsReconnectWait = 500 * time.Millisecond
	// natsInbox bounds the messages received but not yet delivered; past
	// it NATS drops (a slow consumer on the NATS side, counted as Lost).
	natsInbox = 1 << 16
	// maxSeqRooms bounds the rooms a node numbers its messages in; past
	// it the node forgets the numbers and draws a new sender key.
	maxSeqRooms = 1 << 16
	// msgHeader is the length of a room message's header: opcode, sender
	// key, and a sequence number of up to 10 bytes.
	msgHeader = 1 + 8 + binary.MaxVarintLen64
)

// ErrNoURL is returned by NewNATS without a server URL.
var ErrNoURL = errors.New("broker: no NATS server URL")

// NATSConfig configures a NATS broker.
type NATSConfig struct {
	// URLs are the NATS servers (nats://host:port); at least one.
	URLs []string
	// NodeID names this node in logs and in its NATS connection name.
	// The cluster's bookkeeping (presence entries, heartbeats, who speaks
	// for a silent node) uses Identity, which is unique per process: two
	// processes started with one NodeID (a rolling restart) are two nodes.
	NodeID string
	// SubjectPrefix starts every subject. Zero means "chatd".
	SubjectPrefix string
	// ReconnectBuffer bounds the bytes of room messages published while
	// NATS is unreachable that are kept to be sent once this node and the
	// others are back (nats_hold.go); what does not fit is counted in
	// Stats.Lost. nats.go's own reconnect buffer, the same size, holds the
	// rest (heartbeats, presence writes). Zero means 8 MiB.
	ReconnectBuffer int
	// Deliver receives the messages of other nodes. Required.
	Deliver Deliver
	// Congestion receives other nodes' Congested calls (on a NATS
	// goroutine, one at a time). Nil ignores them.
	Congestion Congestion
	// Logger receives connection events. Nil discards them.
	Logger *slog.Logger
}

// NATS is a Broker on core NATS. Each room is one subject,
// PREFIX.room.BASE64URL(room key) (room keys may hold '.', '*', '>' and
// anything else NATS subjects cannot), subscribed while the room has
// members on this node. A message is one NATS message: its opcode byte,
// the sender's key (8 bytes, drawn at start), its number in the room
// from that sender (uvarint, from 1), then its payload. Core NATS is at
// most once: a receiver that sees a sender's numbers in a room jump
// counts the messages skipped in Stats.Lost (a message in flight when a
// connection broke, or dropped by NATS), so nothing goes missing
// uncounted while a room stays subscribed and its sender publishes on.
type NATS struct {
	cfg    NATSConfig
	id     string // Identity
	log    *slog.Logger
	nc     *nats.Conn
	inbox  chan *nats.Msg
	prefix string
	stop   chan struct{}
	done   chan struct{}

	mu       sync.Mutex
	rooms    map[string]*natsRoom // by room key
	subjects map[string]string    // subject -> room key, for delivery
	closed   bool
	shared   *shared    // the Pusher layer's shared state (EnableShared); nil if not asked for
	hist     *histState // the history stream (EnableHistory); nil if not asked for
	onConn   []func()   // called when NATS (re)connects
	uid      string     // this process's unique ID (UniqueID)

	// The outage hold (nats_hold.go). Lock order: hmu before mu.
	holding   atomic.Bool // room messages are held: NATS is away or the other nodes not yet back
	hmu       sync.Mutex
	held      []heldMsg
	heldBytes int
	holdGen   uint64   // counts holds begun and ended: a release acts for its own hold only
	peers     []string // the nodes alive when the hold began

	// Numbering of this node's messages per room.
	smu    sync.Mutex // before hmu
	sender [8]byte
	seqs   map[string]uint64 // room -> the last number given

	published, delivered, lost, reconnects atomic.Uint64
}

type natsRoom struct {
	members int
	subject string
	sub     *nats.Subscription
	from    map[[8]byte]uint64 // sender key -> the last number received
}

// NewNATS connects to NATS. It does not wait for the servers: if none is
// reachable it says so in the log and keeps trying every 500 ms, and
// messages published meanwhile wait in the reconnect buffer.
func NewNATS(cfg NATSConfig) (*NATS, error) {
	if len(cfg.URLs) == 0 {
		return nil, ErrNoURL
	}
	if cfg.Deliver == nil {
		return nil, errors.New("broker: NATSConfig.Deliver is nil")
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if cfg.ReconnectBuffer == 0 {
		cfg.ReconnectBuffer = DefaultReconnectBuffer
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	b := &NATS{
		cfg:      cfg,
		id:       cfg.NodeID + "#" + hex.EncodeToString(rnd[:]),
		log:      log,
		inbox:    make(chan *nats.Msg, natsInbox),
		prefix:   cfg.SubjectPrefix + ".room.",
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		rooms:    make(map[string]*natsRoom),
		subjects: make(map[string]string),
		seqs:     make(map[string]uint64),
	}
	var uid [9]byte
	_, _ = rand.Read(uid[:])
	b.uid = base64.RawURLEncoding.EncodeToString(uid[:])
	_, _ = rand.Read(b.sender[:])
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","),
		nats.Name("chatd "+b.id),
		// A node delivers its own members' messages itself.
		nats.NoEcho(),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(natsReconnectWait),
		nats.ReconnectBufSize(cfg.ReconnectBuffer),
		nats.ConnectHandler(func(*nats.Conn) {
			log.Info("connected to NATS", "node", cfg.NodeID)
			b.kickShared()
			b.connected()
			b.backOnNATS()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.lostNATS()
			log.Warn("lost NATS; reconnecting", "node", cfg.NodeID, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.reconnects.Add(1)
			log.Info("reconnected to NATS", "node", cfg.NodeID, "url", nc.ConnectedUrlRedacted())
			b.kickShared()
			b.connected()
			b.backOnNATS()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				b.lost.Add(1)
				return
			}
			log.Warn("NATS error", "node", cfg.NodeID, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("broker: NATS %s: %w", strings.Join(cfg.URLs, ","), err)
	}
	b.nc = nc
	if cfg.Congestion != nil {
		if _, err := nc.Subscribe(cfg.SubjectPrefix+".cong", b.congestion); err != nil {
			return nil, fmt.Errorf("broker: NATS subscribe: %w", err)
		}
	}
	if !nc.IsConnected() {
		log.Warn("NATS not reachable yet; retrying", "urls", strings.Join(cfg.URLs, ","), "every", natsReconnectWait,
			"buffered meanwhile", cfg.ReconnectBuffer)
	}
	go b.deliverLoop()
	return b, nil
}

// Abandon drops the NATS connection at once, without withdrawing
// presence or saying goodbye: what a node killed with SIGKILL does. For
// tests of the cluster's fault handling; Close still releases the rest.
func (b *NATS) Abandon() { b.nc.Close() }

// onConnect registers f, called (on NATS's goroutine) each time NATS
// connects or reconnects, and now if it is connected.
func (b *NATS) onConnect(f func()) {
	b.mu.Lock()
	b.onConn = append(b.onConn, f)
	b.mu.Unlock()
	if b.nc != nil && b.nc.IsConnected() {
		f()
	}
}

func (b *NATS) connected() {
	b.mu.Lock()
	fs := append([]func(){}, b.onConn...)
	b.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// NodeID returns the node's configured ID (its name in logs).
func (b *NATS) NodeID() string { return b.cfg.NodeID }

// Identity returns the node's identity in the cluster: its NodeID, '#',
// and 8 hex digits drawn when the process started. Presence entries,
// heartbeats and answers to cluster-wide queries name this, so a second
// process started with the same NodeID (a rolling restart with -reuse-port
// and a fixed -node-id) neither takes the first one's entries for stale
// ones of its own nor withdraws them when it stops.
func (b *NATS) Identity() string { return b.id }

// kickShared has the shared state established again (NATS is back).
func (b *NATS) kickShared() {
	if sh := b.getShared(); sh != nil {
		select {
		case sh.kick <- struct{}{}:
		default:
		}
	}
}

func (b *NATS) subject(room string) string {
	return b.prefix + base64.RawURLEncoding.EncodeToString([]byte(room))
}

// Interest implements Broker.
func (b *NATS) Interest(room string, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	r := b.rooms[room]
	if r == nil {
		r = &natsRoom{subject: b.subject(room)}
		b.rooms[room] = r
	}
	if on {
		r.members++
	} else {
		r.members--
	}
	switch {
	case r.members > 0 && r.sub == nil:
		sub, err := b.nc.ChanSubscribe(r.subject, b.inbox)
		if err != nil {
			b.log.Warn("NATS subscribe failed", "room", room, "err", err)
			return
		}
		// The inbox channel bounds what waits; NATS's own limits must not
		// drop earlier.
		_ = sub.SetPendingLimits(-1, -1)
		r.sub = sub
		b.subjects[r.subject] = room
	case r.members <= 0 && r.sub != nil:
		_ = r.sub.Unsubscribe()
		r.sub = nil
		delete(b.subjects, r.subject)
	}
	if r.members == 0 && r.sub == nil {
		delete(b.rooms, room)
	}
	if b.hist != nil {
		b.hist.interest(b, room, on)
	}
}

// Publish implements Broker.
func (b *NATS) Publish(room string, op byte, payload []byte) { b.PublishParts(room, op, payload) }

// PublishParts is Publish of a payload given in parts (a header and the
// message), put together in the one buffer the NATS message needs.
func (b *NATS) PublishParts(room string, op byte, parts ...[]byte) {
	n := msgHeader
	for _, p := range parts {
		n += len(p)
	}
	subject := b.subject(room)
	b.smu.Lock()
	defer b.smu.Unlock()
	if len(b.seqs) >= maxSeqRooms {
		// Forget the numbers; receivers take the new key for a new sender.
		clear(b.seqs)
		_, _ = rand.Read(b.sender[:])
	}
	seq := b.seqs[room] + 1
	b.seqs[room] = seq
	msg := make([]byte, 0, n)
	msg = append(msg, op)
	msg = append(msg, b.sender[:]...)
	msg = binary.AppendUvarint(msg, seq)
	for _, p := range parts {
		msg = append(msg, p...)
	}
	// Under smu: numbers go out in order.
	b.publishMsg(subject, msg)
}

func (b *NATS) deliverLoop() {
	defer close(b.done)
	for {
		var m *nats.Msg
		select {
		case m = <-b.inbox:
		case <-b.stop:
			return
		}
		if len(m.Data) < 1+8+1 {
			continue
		}
		var sender [8]byte
		copy(sender[:], m.Data[1:9])
		seq, n := binary.Uvarint(m.Data[9:])
		if n <= 0 {
			continue
		}
		b.mu.Lock()
		room, ok := b.subjects[m.Subject]
		if ok {
			b.countGapLocked(b.rooms[room], sender, seq)
		}
		b.mu.Unlock()
		if !ok {
			continue // the room's last member left meanwhile
		}
		b.delivered.Add(1)
		b.cfg.Deliver(room, m.Data[0], m.Data[9+n:])
	}
}

// countGapLocked records message seq of sender in r and counts as lost
// the sender's messages it skipped. The first message of a sender since
// the room was subscribed only sets where counting starts. b.mu held.
func (b *NATS) countGapLocked(r *natsRoom, sender [8]byte, seq uint64) {
	if r == nil {
		return
	}
	if r.from == nil {
		r.from = make(map[[8]byte]uint64)
	}
	last, seen := r.from[sender]
	if seen && seq > last+1 {
		b.lost.Add(seq - last - 1)
	}
	if seq > last {
		if !seen && len(r.from) >= 256 {
			clear(r.from) // senders that restarted long ago
		}
		r.from[sender] = seq
	}
}

// Backpressure across nodes: how often a node says again that a room is
// still behind, and how long another node believes it without hearing it.
const (
	CongestionRefresh = 100 * time.Millisecond
	CongestionTTL     = 3 * CongestionRefresh
)

// Congested implements Broker: one core NATS message on PREFIX.cong to
// every node, '+' or '-', the node's identity (length-prefixed), the room.
func (b *NATS) Congested(room string, on bool) {
	what := byte('-')
	if on {
		what = '+'
	}
	msg := append(appendBytes([]byte{what}, b.id), room...)
	_ = b.nc.Publish(b.cfg.SubjectPrefix+".cong", msg)
}

func (b *NATS) congestion(m *nats.Msg) {
	if len(m.Data) < 1 {
		return
	}
	node, room, ok := cutBytes(m.Data[1:])
	if !ok || node == b.id {
		return
	}
	b.cfg.Congestion(string(room), node, m.Data[0] == '+')
}

// Stats implements Broker.
func (b *NATS) Stats() Stats {
	b.mu.Lock()
	rooms := len(b.subjects)
	sh := b.shared
	h := b.hist
	b.mu.Unlock()
	st := Stats{
		Connected: b.nc.IsConnected(),
		SharedUp:  true,
		Rooms:     rooms,
		Published: b.published.Load(),
		Delivered: b.delivered.Load(),
		Lost:      b.lost.Load(),
		Reconnect: b.reconnects.Load(),
	}
	if sh != nil {
		sh.stats(&st)
	}
	if h != nil {
		h.stats(&st)
	}
	return st
}

// Close implements Broker: what was published is flushed (for up to a
// second), then the connection closes.
func (b *NATS) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	sh := b.shared
	h := b.hist
	b.mu.Unlock()
	if h != nil {
		h.close()
	}
	if sh != nil {
		sh.close()
	}
	b.closeHold()
	if b.nc.IsConnected() {
		_ = b.nc.FlushTimeout(time.Second)
	}
	b.nc.Close()
	// The inbox stays open: NATS's reader may still hold a message for it.
	close(b.stop)
	<-b.done
	return nil
}
