package history

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"time"
)

// Defaults for zero Config and Limits fields.
const (
	DefaultSize     = 100
	DefaultTTL      = 10 * time.Minute
	DefaultMaxBytes = 64 << 20
	// entryOverhead is what one kept message costs beyond its bytes: the
	// slice header and the time in its ring slot.
	entryOverhead = 32
	// streamOverhead is what one stream costs beyond its messages.
	streamOverhead = 160
)

// Reasons a position cannot be honoured. Each is a sentence a client can
// show; errors.Is tells them apart.
var (
	ErrEpoch  = errors.New("history: the stream's epoch changed (restarted or forgotten): messages may be missing")
	ErrTooOld = errors.New("history: the position is older than the oldest message kept: messages are missing")
	ErrFuture = errors.New("history: the position is beyond the stream's last message")
	ErrOff    = errors.New("history: this room or channel keeps no history")
	// ErrUnavailable: history is kept, but cannot be reached right now (a
	// cluster's stream while NATS is away).
	ErrUnavailable = errors.New("history: unavailable right now (the cluster's stream cannot be reached)")
	ErrBadPos      = errors.New("history: malformed position")
	ErrClosed      = errors.New("history: store closed")
	errNoBuild     = errors.New("history: encode returned nothing")
)

// Position names one message: its offset within the stream's epoch.
// Offset 0 is the position before the first message.
type Position struct {
	Epoch  string
	Offset uint64
}

// String is "epoch:offset", the form clients send back (ParsePosition).
func (p Position) String() string { return p.Epoch + ":" + strconv.FormatUint(p.Offset, 10) }

// ParsePosition parses "epoch:offset". An epoch is 1-64 characters of
// [A-Za-z0-9._-]; an offset a decimal number.
func ParsePosition(s string) (Position, error) {
	i := len(s) - 1
	for i >= 0 && s[i] != ':' {
		i--
	}
	if i < 0 {
		return Position{}, ErrBadPos
	}
	return MakePosition(s[:i], s[i+1:])
}

// MakePosition checks an epoch and a decimal offset given apart.
func MakePosition(epoch, offset string) (Position, error) {
	if !validEpoch(epoch) {
		return Position{}, ErrBadPos
	}
	n, err := strconv.ParseUint(offset, 10, 64)
	if err != nil {
		return Position{}, ErrBadPos
	}
	return Position{Epoch: epoch, Offset: n}, nil
}

func validEpoch(e string) bool {
	if len(e) < 1 || len(e) > 64 {
		return false
	}
	for i := 0; i < len(e); i++ {
		b := e[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '.', b == '_', b == '-':
		default:
			return false
		}
	}
	return true
}

// Limits bound one stream. Size ≤ 0 keeps nothing (history off for it).
type Limits struct {
	Size int           // messages kept
	TTL  time.Duration // none older; zero means DefaultTTL
}

// Config configures a Store. The zero value is usable.
type Config struct {
	// MaxBytes bounds all streams together; zero means 64 MiB.
	MaxBytes int64
	// Now is the clock; nil means time.Now (tests set it).
	Now func() time.Time
	// SweepInterval: how often expired messages are dropped and empty
	// streams forgotten. Zero means one second; negative: no sweeper
	// goroutine (tests call Sweep).
	SweepInterval time.Duration
	// InUse reports whether the room of a stream has members; an empty
	// stream whose room has members is kept, so that the positions its
	// members were given stay valid. Called with the store's lock held.
	// Nil means no room has members.
	InUse func(key string) bool
	// Gated: streams are fed from elsewhere (a cluster's stream, by Put)
	// and a stream answers Join only once Ready says it holds everything
	// up to a position; joins before that wait (their callback is called
	// from Ready). Forgetting a gated stream whose room has members only
	// drops its messages.
	Gated bool
}

// Stats are a store's gauges and counters.
type Stats struct {
	Streams  int    // streams kept
	Messages int    // messages kept
	Bytes    int64  // bytes counted against MaxBytes
	Appended uint64 // messages appended
	Evicted  uint64 // streams forgotten because MaxBytes was reached
	Expired  uint64 // messages dropped for their age
	Replayed uint64 // messages handed to joiners
	Failed   uint64 // recovery requests that could not be honoured
}

// Store is the memory history of many streams. Safe for concurrent use.
type Store struct {
	cfg   Config
	epoch string // this store's prefix of every stream's epoch

	mu      sync.Mutex
	streams map[string]*stream
	lru     stream // sentinel of the list of streams, most recently published first
	bytes   int64
	made    uint64 // streams created, for epochs
	closed  bool
	stats   Stats

	stop chan struct{}
	done chan struct{}
}

type stream struct {
	key     string
	epoch   string
	next    uint64 // the offset the next message gets (Append); Put: last + 1
	ring    []entry
	head, n int
	ttl     time.Duration
	// sparse: positions are given by Put (a cluster's stream sequence),
	// not consecutive: a position is honoured only if its message is still
	// kept, since what came between it and the oldest kept is unknown.
	sparse    bool
	ready     bool          // Gated stores: Ready was called since the stream was made or unreadied
	pending   []pendingJoin // Gated stores: joins waiting for Ready
	prev, nxt *stream
}

type pendingJoin struct {
	lim   Limits
	req   Request
	join  func(frames [][]byte, at Position, err error)
	until int64 // a position ahead of the stream waits until then (unix ns) for it to arrive
	// joined: when a join without a position began to wait for the
	// stream's feed (unix ns); it is given, besides what it asked for,
	// every message kept from joinMargin before then (see Ready).
	joined int64
}

// joinMargin: a join that waited for its stream's feed is given the
// messages stamped from this long before it began to wait. Which of the
// messages published around a join "came after it" is a matter of clocks
// across nodes; erring early means none published after it is missed.
const joinMargin = time.Second

// lagWait is how long a join from a position the stream has not reached
// waits (Gated stores: this node's feed may lag the cluster's stream).
const lagWait = 3 * time.Second

type entry struct {
	frame []byte // nil: a marker, a position that is never replayed
	at    int64  // unix nanoseconds when appended
	off   uint64
}

// New returns a store; its sweeper runs until Close.
func New(cfg Config) *Store {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Second
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &Store{cfg: cfg, epoch: hex.EncodeToString(b[:]), streams: make(map[string]*stream)}
	s.lru.prev, s.lru.nxt = &s.lru, &s.lru
	if cfg.SweepInterval > 0 {
		s.StartSweeper()
	}
	return s
}

// StartSweeper starts the goroutine that calls Sweep every
// Config.SweepInterval (one second if it is not positive), until Close.
// Once only; New does it unless SweepInterval is negative.
func (s *Store) StartSweeper() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil || s.closed {
		return
	}
	if s.cfg.SweepInterval <= 0 {
		s.cfg.SweepInterval = time.Second
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.sweeper()
}

// Close stops the sweeper and forgets everything.
func (s *Store) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.streams = nil
	s.lru.prev, s.lru.nxt = &s.lru, &s.lru
	s.bytes = 0
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		close(s.stop)
		<-s.done
	}
}

func (s *Store) sweeper() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Append gives the next message of stream key its position, calls encode
// with it (nil encode: the message is stored as given by frame), keeps
// the result within lim and calls deliver with it, all under the store's
// lock (see the package doc). With lim.Size ≤ 0 nothing is kept and no
// position is given: encode gets the zero Position and deliver is still
// called, so callers need no second path.
func (s *Store) Append(key string, lim Limits, encode func(Position) []byte, deliver func(frame []byte)) Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lim.Size <= 0 || s.closed {
		deliver(encode(Position{}))
		return Position{}
	}
	st := s.streamLocked(key, true)
	pos := Position{Epoch: st.epoch, Offset: st.next}
	frame := encode(pos)
	st.next++
	now := s.cfg.Now().UnixNano()
	st.ttl = ttlOf(lim)
	s.expireLocked(st, now)
	s.pushLocked(st, lim, entry{frame: frame, at: now, off: pos.Offset})
	s.stats.Appended++
	deliver(frame)
	for s.bytes > s.cfg.MaxBytes && s.lru.prev != st {
		s.forgetLocked(s.lru.prev)
		s.stats.Evicted++
	}
	return pos
}

// pushLocked adds e at the end of st's ring, dropping the oldest past
// lim.Size.
func (s *Store) pushLocked(st *stream, lim Limits, e entry) {
	if len(st.ring) < lim.Size && st.n == len(st.ring) {
		// Grow the ring as messages come, up to Size: a room that says
		// little costs little. Unroll first so that head is 0.
		st.unroll()
		grown := min(max(2*len(st.ring), 4), lim.Size)
		ring := make([]entry, grown)
		copy(ring, st.ring)
		st.ring = ring
	}
	for st.n > lim.Size || (st.n > 0 && st.n == len(st.ring)) {
		s.dropOldestLocked(st)
	}
	st.ring[(st.head+st.n)%len(st.ring)] = e
	st.n++
	s.bytes += int64(len(e.frame)) + entryOverhead
	s.touchLocked(st)
}

func ttlOf(lim Limits) time.Duration {
	if lim.TTL <= 0 {
		return DefaultTTL
	}
	return lim.TTL
}

// unroll moves the ring's entries to its start.
func (st *stream) unroll() {
	if st.head == 0 {
		return
	}
	r := make([]entry, len(st.ring))
	for i := 0; i < st.n; i++ {
		r[i] = st.ring[(st.head+i)%len(st.ring)]
	}
	st.ring, st.head = r, 0
}

func (s *Store) streamLocked(key string, create bool) *stream {
	st := s.streams[key]
	if st == nil && create {
		s.made++
		st = &stream{key: key, epoch: s.epoch + "-" + strconv.FormatUint(s.made, 36), next: 1}
		s.streams[key] = st
		s.bytes += streamOverhead + int64(len(key))
		st.prev, st.nxt = &s.lru, s.lru.nxt
		st.prev.nxt, st.nxt.prev = st, st
	}
	return st
}

// touchLocked makes st the most recently published stream.
func (s *Store) touchLocked(st *stream) {
	if s.lru.nxt == st {
		return
	}
	st.prev.nxt, st.nxt.prev = st.nxt, st.prev
	st.prev, st.nxt = &s.lru, s.lru.nxt
	st.prev.nxt, st.nxt.prev = st, st
}

func (s *Store) dropOldestLocked(st *stream) {
	e := &st.ring[st.head]
	s.bytes -= int64(len(e.frame)) + entryOverhead
	*e = entry{}
	st.head = (st.head + 1) % len(st.ring)
	st.n--
}

func (s *Store) expireLocked(st *stream, now int64) {
	cut := now - int64(st.ttl)
	for st.n > 0 && st.ring[st.head].at <= cut {
		s.dropOldestLocked(st)
		s.stats.Expired++
	}
}

// forgetLocked drops a stream and its messages; the next message of its
// key starts a new epoch.
func (s *Store) forgetLocked(st *stream) {
	for st.n > 0 {
		s.dropOldestLocked(st)
	}
	if s.cfg.Gated && (len(st.pending) > 0 || (s.cfg.InUse != nil && s.cfg.InUse(st.key))) {
		return // its feed goes on; positions before now are too old
	}
	st.prev.nxt, st.nxt.prev = st.nxt, st.prev
	delete(s.streams, st.key)
	s.bytes -= streamOverhead + int64(len(st.key))
}

// Sweep drops expired messages and forgets streams left empty.
func (s *Store) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now().UnixNano()
	for st := s.lru.prev; st != &s.lru; {
		prev := st.prev
		if st.ready && len(st.pending) > 0 {
			s.retryPendingLocked(st, true)
		}
		s.expireLocked(st, now)
		if st.n == 0 && (s.cfg.InUse == nil || !s.cfg.InUse(st.key)) {
			s.forgetLocked(st)
		}
		st = prev
	}
}

// Request is what a joiner asks for: the messages after Since (when set),
// or else the last Last messages.
type Request struct {
	Since *Position
	Last  int
}

// Join calls join under the store's lock with the messages req names of
// stream key, in order, and the stream's position at that moment (the
// last message's; offset 0 and the epoch the stream will have if it holds
// nothing). err says why a Since position cannot be honoured; the frames
// are then nil. The slices are valid only during the call; the frames
// themselves are immutable and may be kept.
func (s *Store) Join(key string, lim Limits, req Request, join func(frames [][]byte, at Position, err error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || lim.Size <= 0 {
		var err error
		if req.Since != nil {
			err = ErrOff
			s.stats.Failed++
		}
		join(nil, Position{}, err)
		return
	}
	st := s.streamLocked(key, true)
	if s.cfg.Gated && !st.ready {
		st.pending = append(st.pending, pendingJoin{lim: lim, req: req, join: join, joined: s.cfg.Now().UnixNano()})
		return
	}
	s.joinLocked(st, lim, req, join, 0, 0)
}

func (s *Store) joinLocked(st *stream, lim Limits, req Request, join func(frames [][]byte, at Position, err error), until, joined int64) {
	st.ttl = ttlOf(lim)
	s.expireLocked(st, s.cfg.Now().UnixNano())
	at := Position{Epoch: st.epoch, Offset: st.next - 1}
	if now := s.cfg.Now().UnixNano(); s.cfg.Gated && req.Since != nil && req.Since.Epoch == st.epoch && req.Since.Offset > at.Offset {
		// This node's feed may lag: wait for the position a while.
		if until == 0 {
			until = now + int64(lagWait)
		}
		if now < until {
			st.pending = append(st.pending, pendingJoin{lim: lim, req: req, join: join, until: until})
			return
		}
	}
	var from uint64 // replay offsets > from
	var err error
	switch {
	case req.Since != nil && req.Since.Epoch != st.epoch:
		err = ErrEpoch
	case req.Since != nil && req.Since.Offset > at.Offset:
		err = ErrFuture
	case req.Since != nil && !st.honours(req.Since.Offset, at.Offset):
		err = ErrTooOld
	case req.Since != nil:
		from = req.Since.Offset
	default:
		n := min(max(req.Last, 0), st.n)
		from = 0
		if n < st.n {
			from = st.ring[(st.head+st.n-n-1)%len(st.ring)].off
		}
		if n == 0 {
			from = at.Offset
		}
		if joined != 0 {
			// It waited for the feed: what was stamped from just before
			// it began waiting came after it as far as it can tell.
			cut := joined - int64(joinMargin)
			for i := 0; i < st.n; i++ {
				if e := &st.ring[(st.head+i)%len(st.ring)]; e.at >= cut && e.off <= from {
					from = min(from, e.off-1)
					break
				}
			}
		}
	}
	if err != nil {
		s.stats.Failed++
		join(nil, at, err)
		return
	}
	var frames [][]byte
	for i := 0; i < st.n; i++ {
		e := &st.ring[(st.head+i)%len(st.ring)]
		if e.off > from && e.frame != nil {
			frames = append(frames, e.frame)
		}
	}
	s.stats.Replayed += uint64(len(frames))
	join(frames, at, nil)
}

// Ready says that stream key (Gated stores) now holds every message up to
// at (its feed has handed them over with Put): joins waiting for it are
// answered now, in order, under the lock. at's epoch names the stream.
func (s *Store) Ready(key string, at Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	st := s.streamLocked(key, true)
	if !st.sparse || st.epoch != at.Epoch {
		for st.n > 0 {
			s.dropOldestLocked(st)
		}
		st.sparse, st.epoch, st.next = true, at.Epoch, 1
	}
	st.next = max(st.next, at.Offset+1)
	st.ready = true
	pending := st.pending
	st.pending = nil
	for _, p := range pending {
		s.joinLocked(st, p.lim, p.req, p.join, p.until, p.joined)
	}
}

// retryPendingLocked answers the joins waiting on a ready stream for a
// position it has now reached (or, with expired, whose wait is over).
func (s *Store) retryPendingLocked(st *stream, expired bool) {
	now := s.cfg.Now().UnixNano()
	pending := st.pending
	st.pending = nil
	for _, p := range pending {
		if !expired || now >= p.until {
			s.joinLocked(st, p.lim, p.req, p.join, p.until, p.joined)
		} else {
			st.pending = append(st.pending, p)
		}
	}
}

// ReleasePending answers every join waiting for a stream's feed with err
// and nothing to replay (Gated stores: the feed is gone for now).
func (s *Store) ReleasePending(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		pending := st.pending
		st.pending = nil
		for _, p := range pending {
			var e error
			if p.req.Since != nil {
				e = err
				s.stats.Failed++
			}
			p.join(nil, Position{}, e)
		}
	}
}

// WaitingSince returns when the earliest join waiting for stream key's
// feed began (unix ns; 0: none waits).
func (s *Store) WaitingSince(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streamLocked(key, false)
	if st == nil || st.ready {
		return 0
	}
	var w int64
	for _, p := range st.pending {
		if p.joined != 0 && (w == 0 || p.joined < w) {
			w = p.joined
		}
	}
	return w
}

// UnreadyLocked says that stream key's feed stopped (its room has no
// members here any more): until Ready again, joins wait. Only inside Do.
func (s *Store) UnreadyLocked(key string) {
	if st := s.streamLocked(key, false); st != nil {
		st.ready = false
	}
}

// honours reports whether every message after offset x (up to last) is
// still kept.
func (st *stream) honours(x, last uint64) bool {
	if x == last {
		return true
	}
	if st.n == 0 {
		return false
	}
	oldest := st.ring[st.head].off
	if st.sparse {
		return x >= oldest
	}
	return x+1 >= oldest
}

// Put keeps a message whose position was given elsewhere (a cluster's
// stream: pos.Offset grows but not by one), then calls deliver with it
// (not for a nil frame, a marker: a position kept but never replayed),
// under the store's lock; stamp is when the stream stored it (unix ns;
// zero: now), from which its age counts. A position not after the stream's last is
// dropped (a duplicate); another epoch starts the stream over. It reports
// whether the message was kept.
func (s *Store) Put(key string, lim Limits, pos Position, stamp int64, frame []byte, deliver func(frame []byte)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lim.Size <= 0 || s.closed {
		return false
	}
	st := s.streamLocked(key, true)
	if !st.sparse || st.epoch != pos.Epoch {
		for st.n > 0 {
			s.dropOldestLocked(st)
		}
		st.sparse, st.epoch, st.next = true, pos.Epoch, 1
	}
	if pos.Offset < st.next {
		return false
	}
	st.next = pos.Offset + 1
	st.ttl = ttlOf(lim)
	s.expireLocked(st, s.cfg.Now().UnixNano())
	if stamp == 0 {
		stamp = s.cfg.Now().UnixNano()
	}
	s.pushLocked(st, lim, entry{frame: frame, at: stamp, off: pos.Offset})
	if frame != nil {
		deliver(frame)
	}
	if st.ready && len(st.pending) > 0 {
		s.retryPendingLocked(st, false)
	}
	for s.bytes > s.cfg.MaxBytes && s.lru.prev != st {
		s.forgetLocked(s.lru.prev)
		s.stats.Evicted++
	}
	return true
}

// Clear drops stream key's messages but keeps its epoch, position and
// readiness: positions from before now are no longer honoured (a feed
// that lost messages must not replay around the hole).
func (s *Store) Clear(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streamLocked(key, false); st != nil {
		for st.n > 0 {
			s.dropOldestLocked(st)
		}
		st.sparse = true
	}
}

// Do calls f under the store's lock (see the package doc on order).
func (s *Store) Do(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// Last returns up to n of stream key's newest messages (oldest first) and
// the position of the newest.
func (s *Store) Last(key string, lim Limits, n int) (frames [][]byte, at Position) {
	s.Join(key, lim, Request{Last: n}, func(f [][]byte, p Position, _ error) {
		frames, at = append([][]byte(nil), f...), p
	})
	return frames, at
}

// Stats returns the store's gauges and counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Streams = len(s.streams)
	st.Bytes = s.bytes
	for _, x := range s.streams {
		st.Messages += x.n
	}
	return st
}
