package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// A broadcast phase on the sending side: the send command runs a prepared
// phase's local senders, open loop or closed loop.

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
