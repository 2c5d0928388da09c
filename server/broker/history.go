package broker

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// History in a cluster (EnableHistory): the messages of rooms that keep
// history travel through one JetStream stream instead of core NATS
// subjects, so that every node delivers a room's messages in the stream's
// order and a room's recent messages are kept once, for the whole cluster,
// in NATS:
//
//   - Stream HISTORY_STREAM (file storage, the configured replicas),
//     subjects PREFIX.hist.BASE64URL(room key), at most Size messages per
//     subject, none older than TTL, MaxBytes in all, the oldest discarded
//     first; direct gets allowed.
//   - A node publishes a room's message to the stream (asynchronously: a
//     failed publish is counted in Stats.Lost) and does not deliver it
//     itself: every node, the publisher's included, delivers the room's
//     messages from an ordered consumer of the room's subject, started
//     when the room gets its first member on the node and stopped with
//     its last. The consumer starts at the room's first kept message: the
//     messages up to the last one at that moment (the warm-up) are handed
//     over with warm set, for the node's history only; HistoryReady
//     follows; then every later message is live. An ordered consumer
//     resumes after the last message it delivered when NATS comes back, so
//     a node cut off catches up.
//   - A room with no message in the stream gets a marker (an empty message
//     with the header Chatd-Marker), so that a position always names a
//     message of the room's subject: a position is honoured only while its
//     message is kept, since deletion goes oldest first.
//   - The position of a message is the stream's epoch (its creation time:
//     a stream created again is another epoch) and its stream sequence.
//
// The raw sender is named by headers (Chatd-Node, this process's unique
// ID, and Chatd-Member, its join number in the room), so that its own node
// leaves it out; a Pusher event carries its socket_id in its payload, as on
// core NATS.

// HistoryStream is the name of the history stream.
const HistoryStream = "CHATD_HISTORY"

// Headers of history messages.
const (
	HeaderNode   = "Chatd-Node"
	HeaderMember = "Chatd-Member"
	HeaderMarker = "Chatd-Marker"
	HeaderLocal  = "Chatd-Local" // the sending node delivered it to its own members already (NATS was away)
	// HeaderCount numbers the messages one node (Chatd-Node) publishes to
	// one room: 1, 2, ... A consumer that sees a number skipped lost
	// messages (the stream dropped them before it delivered them, or a
	// publish failed).
	HeaderCount = "Chatd-Count"
)

// HistoryConfig configures the cluster's history stream.
type HistoryConfig struct {
	Size     int           // messages kept per room (MaxMsgsPerSubject)
	TTL      time.Duration // none older (MaxAge)
	MaxBytes int64         // all rooms together
	Replicas int           // copies in a JetStream cluster; zero means 1
	// Keeps reports whether a room keeps history (its messages go through
	// the stream). Called from Interest and Publish, on any goroutine.
	Keeps func(room string) bool
	// Handler gets the rooms' messages.
	Handler HistoryHandler
}

// HistoryHandler receives what the history stream carries for the rooms
// this node has members in. Calls for one room come from one goroutine,
// in the stream's order; calls for different rooms may run concurrently.
type HistoryHandler interface {
	// HistoryMessage is a room's message at position (epoch, seq). node and
	// member name a raw sender (node is this node's UniqueID when it was
	// sent from here); marker: a position with no message. warm: sent
	// before this node's interest began (keep it, deliver it to nobody).
	// local: its node delivered it to its own members when it was sent.
	// stamp: when the stream stored it (unix ns). payload is the opcode
	// byte and the message; valid during the call.
	HistoryMessage(room, epoch string, seq uint64, stamp int64, node string, member uint64, marker, local bool, payload []byte, warm bool)
	// HistoryReady: the room's messages up to seq are all handed over.
	HistoryReady(room, epoch string, seq uint64)
	// HistoryWaitingSince returns when the earliest join still waiting
	// for the room began (unix ns; 0: none): messages stamped from a
	// little before then are delivered live, not warm (HistoryReady comes
	// before the first of them).
	HistoryWaitingSince(room string) int64
	// HistoryUp is told whether the stream can be used (JetStream there).
	HistoryUp(up bool, reason string)
	// HistoryGap: messages of room (missed of them) will never be handed
	// over: the stream deleted them before this node's consumer got them
	// (it lagged more than the room's transport window), or their publish
	// failed. Called on the room's goroutine, before the next message.
	HistoryGap(room string, missed uint64)
	// HistoryBehind: this node's consumer of room is more than half the
	// stream's per-room window behind (on), or has caught up again (off);
	// while on it is said again every CongestionRefresh. Called on the
	// room's goroutine.
	HistoryBehind(room string, on bool)
	// HistoryStopped: this node stopped following room (Interest ended);
	// called from Interest, synchronously, under whatever locks its caller
	// holds. Until the next HistoryReady its cache may miss messages.
	HistoryStopped(room string)
}

type histState struct {
	cfg    HistoryConfig
	js     jetstream.JetStream
	prefix string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	stream jetstream.Stream // nil until established
	epoch  string
	rooms  map[string]*histRoom
	reason string // why the stream is not usable ("" when it is)
	failed bool   // the last attempt to establish it failed

	published, lost atomic.Uint64
	gaps            atomic.Uint64 // messages consumers found skipped

	sent sync.Map // room -> *sentCount: this node's numbering per room
}

// sentCount numbers a room's messages published by this node; mu keeps
// the numbers in publish order.
type sentCount struct {
	mu sync.Mutex
	n  uint64
}

type histRoom struct {
	members int
	cancel  context.CancelFunc
}

// UniqueID is this process's identity in history messages (random per
// process: two processes started with one -node-id still differ).
func (b *NATS) UniqueID() string { return b.uid }

// EnableHistory creates (or updates) the history stream, now if NATS is
// up and again each time it comes back, and from then on carries the
// messages of the rooms cfg.Keeps names through it.
func (b *NATS) EnableHistory(cfg HistoryConfig) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	h := &histState{cfg: cfg, prefix: b.cfg.SubjectPrefix + ".hist.", rooms: make(map[string]*histRoom),
		reason: "connecting to NATS"}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	js, err := jetstream.New(b.nc,
		jetstream.WithPublishAsyncMaxPending(1<<16),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			h.lost.Add(1)
			b.log.Debug("history publish failed", "err", err)
		}))
	if err != nil {
		h.reason = err.Error()
	}
	h.js = js
	b.mu.Lock()
	b.hist = h
	b.mu.Unlock()
	h.wg.Add(1)
	go b.historyLoop(h)
}

// historyLoop establishes the stream whenever NATS (re)connects.
func (b *NATS) historyLoop(h *histState) {
	defer h.wg.Done()
	kick := make(chan struct{}, 1)
	b.onConnect(func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-kick:
		case <-retry.C:
		}
		if !b.nc.IsConnected() || h.js == nil {
			continue
		}
		if err := b.establishHistory(h); err != nil {
			reason := "history stream unavailable (the NATS server needs JetStream: nats-server -js): " + err.Error()
			h.mu.Lock()
			changed := h.reason != reason
			h.reason, h.failed = reason, true
			h.mu.Unlock()
			if changed {
				b.log.Error("cluster history unavailable: rooms are served without history until it is", "node", b.cfg.NodeID, "err", err)
				h.cfg.Handler.HistoryUp(false, reason)
			}
			retry.Reset(2 * time.Second)
		}
	}
}

func (b *NATS) establishHistory(h *histState) error {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	st, err := h.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              HistoryStream,
		Description:       "chatd: the recent messages of rooms and channels that keep history",
		Subjects:          []string{h.prefix + ">"},
		Storage:           jetstream.FileStorage,
		Replicas:          h.cfg.Replicas,
		MaxMsgsPerSubject: int64(transportWindow(h.cfg.Size)),
		MaxAge:            h.cfg.TTL,
		MaxBytes:          h.cfg.MaxBytes,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
	})
	if err != nil {
		return err
	}
	epoch := "js" + strconv.FormatInt(st.CachedInfo().Created.UnixNano(), 36)
	h.mu.Lock()
	old := h.epoch
	h.stream, h.epoch = st, epoch
	wasDown := h.reason != ""
	h.reason, h.failed = "", false
	h.mu.Unlock()
	if old != "" && old != epoch {
		b.log.Warn("the history stream was created again: a new epoch, positions of the old one are not honoured", "epoch", epoch)
	}
	if wasDown {
		b.log.Info("cluster history up", "node", b.cfg.NodeID, "stream", HistoryStream, "epoch", epoch)
		h.cfg.Handler.HistoryUp(true, "")
	}
	// Rooms whose consumer could not start meanwhile are retried by their
	// own loops.
	return nil
}

// transportWindow is how many messages the stream keeps per room: more
// than the history a client is given (size, the nodes' caches), because the
// stream carries the live messages too, and a node's consumer may lag a
// burst: a message dropped for the per-room limit before every node
// delivered it would be lost to some (HistoryGap). Before that, a node
// whose consumer falls half a window behind says so (HistoryBehind), so
// that the room's producers are held back.
func transportWindow(size int) int { return max(100*size, 10_000) }

// HistoryUp reports whether the history stream is established, and if
// not, why.
func (b *NATS) HistoryUp() (bool, string) {
	h := b.getHist()
	if h == nil {
		return false, "history is off"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reason == "", h.reason
}

// KeptUsable reports whether history messages go through the stream now:
// NATS is connected and the stream has not failed to be established (it
// may be on its way: joins then wait for it).
func (b *NATS) KeptUsable() bool {
	h := b.getHist()
	if h == nil || !b.nc.IsConnected() {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.failed
}

func (b *NATS) getHist() *histState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hist
}

func (h *histState) subject(room string) string {
	return h.prefix + base64.RawURLEncoding.EncodeToString([]byte(room))
}

// KeptPublish publishes a message of a room that keeps history to the
// stream; member is the raw sender's join number (0 for Pusher events,
// whose payload names the socket to leave out). It does not wait; the
// returned future (nil if the message could not even be sent) says when
// the stream has stored it.
func (b *NATS) KeptPublish(room string, member uint64, local bool, op byte, parts ...[]byte) jetstream.PubAckFuture {
	h := b.getHist()
	if h == nil || h.js == nil {
		return nil
	}
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	data := make([]byte, 1, n)
	data[0] = op
	for _, p := range parts {
		data = append(data, p...)
	}
	m := &nats.Msg{Subject: h.subject(room), Data: data, Header: nats.Header{}}
	m.Header.Set(HeaderNode, b.uid)
	if member != 0 {
		m.Header.Set(HeaderMember, strconv.FormatUint(member, 10))
	}
	if local {
		m.Header.Set(HeaderLocal, "1")
	}
	v, _ := h.sent.LoadOrStore(room, &sentCount{})
	sc := v.(*sentCount)
	sc.mu.Lock()
	sc.n++
	m.Header.Set(HeaderCount, strconv.FormatUint(sc.n, 10))
	f, err := h.js.PublishMsgAsync(m, jetstream.WithStallWait(50*time.Millisecond))
	sc.mu.Unlock()
	if err != nil {
		h.lost.Add(1)
		return nil
	}
	h.published.Add(1)
	return f
}

// KeptInFlight returns how many history messages this node published that
// the stream has not yet confirmed.
func (b *NATS) KeptInFlight() int {
	h := b.getHist()
	if h == nil || h.js == nil {
		return 0
	}
	return h.js.PublishAsyncPending()
}

// WaitStored waits until the stream stored what KeptPublish sent (or up
// to timeout).
func WaitStored(f jetstream.PubAckFuture, timeout time.Duration) error {
	if f == nil {
		return errors.New("broker: the history stream could not be reached")
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-t.C:
		return errors.New("broker: the history stream did not confirm in time")
	}
}

// historyInterest starts or stops the room's consumer (NATS.Interest).
// b.mu is held.
func (h *histState) interest(b *NATS, room string, on bool) {
	if h.cfg.Keeps == nil || !h.cfg.Keeps(room) {
		return
	}
	r := h.rooms[room]
	if r == nil {
		r = &histRoom{}
		h.rooms[room] = r
	}
	if on {
		r.members++
	} else {
		r.members--
	}
	switch {
	case r.members > 0 && r.cancel == nil:
		ctx, cancel := context.WithCancel(h.ctx)
		r.cancel = cancel
		h.wg.Add(1)
		go b.followRoom(ctx, h, room)
	case r.members <= 0:
		if r.cancel != nil {
			r.cancel()
			h.cfg.Handler.HistoryStopped(room)
		}
		delete(h.rooms, room)
	}
}

// followRoom runs the room's ordered consumer until ctx ends, starting it
// again if it fails to start.
func (b *NATS) followRoom(ctx context.Context, h *histState, room string) {
	defer h.wg.Done()
	subj := h.subject(room)
	for {
		cc, err := b.startFollow(ctx, h, room, subj)
		if err == nil {
			<-ctx.Done()
			cc.Stop()
			return
		}
		if ctx.Err() != nil {
			return
		}
		b.log.Debug("history: following a room failed; retrying", "room", room, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (b *NATS) startFollow(ctx context.Context, h *histState, room, subj string) (jetstream.ConsumeContext, error) {
	h.mu.Lock()
	st, epoch := h.stream, h.epoch
	h.mu.Unlock()
	if st == nil {
		return nil, errors.New("history stream not established")
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var last uint64
	msg, err := st.GetLastMsgForSubject(rctx, subj)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		m := &nats.Msg{Subject: subj, Header: nats.Header{}}
		m.Header.Set(HeaderMarker, "1")
		ack, err := h.js.PublishMsg(rctx, m)
		if err != nil {
			return nil, err
		}
		last = ack.Sequence
	case err != nil:
		return nil, err
	default:
		last = msg.Sequence
	}
	cons, err := st.OrderedConsumer(rctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subj},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, err
	}
	handler := h.cfg.Handler
	ready := false
	var prev uint64               // the last message handed over
	counts := map[string]uint64{} // the last HeaderCount seen, per sending node
	window := uint64(transportWindow(h.cfg.Size))
	behind := false
	var said time.Time // when behind was last said
	return cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		seq := md.Sequence.Stream
		if !ready && seq > last {
			ready = true
			handler.HistoryReady(room, epoch, last)
		}
		if !ready && prev != 0 {
			// A join waiting since before this message was stored must
			// get it live: the cache is ready up to the previous one.
			if w := handler.HistoryWaitingSince(room); w != 0 && md.Timestamp.UnixNano() >= w-int64(time.Second) {
				ready = true
				handler.HistoryReady(room, epoch, prev)
			}
		}
		prev = seq
		hdr := m.Headers()
		member, _ := strconv.ParseUint(hdr.Get(HeaderMember), 10, 64)
		marker := hdr.Get(HeaderMarker) != ""
		if !marker && len(m.Data()) == 0 {
			return
		}
		if n, err := strconv.ParseUint(hdr.Get(HeaderCount), 10, 64); err == nil && n > 0 {
			from := hdr.Get(HeaderNode)
			if p, ok := counts[from]; ok && n > p+1 {
				h.gaps.Add(n - p - 1)
				handler.HistoryGap(room, n-p-1)
			}
			if n > counts[from] {
				counts[from] = n
			}
		}
		handler.HistoryMessage(room, epoch, seq, md.Timestamp.UnixNano(), hdr.Get(HeaderNode), member, marker, hdr.Get(HeaderLocal) != "", m.Data(), !ready)
		if ready {
			// How far this node's feed is behind the stream: producers are
			// held back past half the window, before the stream drops what
			// the feed has not delivered.
			switch pending := md.NumPending; {
			case !behind && pending > window/2:
				behind, said = true, time.Now()
				handler.HistoryBehind(room, true)
			case behind && pending < window/8:
				behind = false
				handler.HistoryBehind(room, false)
			case behind && time.Since(said) >= CongestionRefresh:
				said = time.Now()
				handler.HistoryBehind(room, true)
			}
		}
		if !ready && seq == last {
			ready = true
			handler.HistoryReady(room, epoch, last)
		}
	})
}

// historyStats adds the stream's counters to st.
func (h *histState) stats(st *Stats) {
	st.Published += h.published.Load()
	st.Lost += h.lost.Load() + h.gaps.Load()
}

func (h *histState) close() {
	h.cancel()
	h.wg.Wait()
}

// KeptMsg is a kept message read back (KeptLast).
type KeptMsg struct {
	Seq     uint64
	Payload []byte // the opcode byte, then the message
}

// KeptLast reads up to n of room's newest kept messages from the stream,
// oldest first (markers left out), with the stream's epoch and the
// sequence of the room's last message (0: none).
func (b *NATS) KeptLast(ctx context.Context, room string, n int) (msgs []KeptMsg, epoch string, last uint64, err error) {
	h := b.getHist()
	if h == nil {
		return nil, "", 0, errors.New("history is off")
	}
	h.mu.Lock()
	st, epoch := h.stream, h.epoch
	h.mu.Unlock()
	if st == nil {
		return nil, "", 0, errors.New("history stream not established")
	}
	subj := h.subject(room)
	lm, err := st.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, epoch, 0, nil
	}
	if err != nil {
		return nil, "", 0, err
	}
	last = lm.Sequence
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, "", 0, err
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, "", 0, err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			return nil, "", 0, err
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		if m.Headers().Get(HeaderMarker) == "" && len(m.Data()) > 0 {
			msgs = append(msgs, KeptMsg{Seq: md.Sequence.Stream, Payload: append([]byte(nil), m.Data()...)})
			if len(msgs) > n {
				msgs = msgs[1:]
			}
		}
		if md.Sequence.Stream >= last {
			return msgs, epoch, last, nil
		}
	}
}
