package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Soak churn: cycles of two clients that connect to a fresh room,
// exchange a message and leave.

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

// CloseMixed, for soak churn: ws, fin and abort, one cycle each in turn.
const CloseMixed = "mixed"

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
