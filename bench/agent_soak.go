package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The Agent's side of the soak scenario: one command ("soak") that runs
// every loop at once until its duration is over: the senders of prepared
// phases, churn (agent_churn.go), and rounds of slow consumers and of
// hostile clients.

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

// slowReadRate is how fast a soak's slow readers read: far below the
// flood, so that they fall behind, but on, past the server's close.
const slowReadRate = 64 << 10
