package bench

import (
	"fmt"
	"sync"
	"time"
)

// Slow consumers: members that never read (KindSlow) or read slowly
// (KindSlowReader), and the probe command that reads what the server left
// for them.

// ProbeSpec reads what the server left for slow consumers (once per
// group).
type ProbeSpec struct {
	Group string        `json:"group"`
	Wait  time.Duration `json:"wait"` // read for at most this long
}

// ProbeResult says what happened to connections that never read: how
// the server ended them (or "open" when it still had not after Wait), and
// how many bytes it had queued for them.
type ProbeResult struct {
	Total    int            `json:"total"`
	Fates    map[string]int `json:"fates"`
	Messages int64          `json:"messages"`
	Bytes    int64          `json:"bytes"`
	MaxBytes int64          `json:"max_bytes"`
	// Backlogged counts the ones still open that had data waiting: the
	// server kept buffering for them.
	Backlogged int `json:"backlogged"`
}

func (a *Agent) probe(s *ProbeSpec) (*ProbeResult, error) {
	g, err := a.group(s.Group)
	if err != nil {
		return nil, err
	}
	if g.spec.Kind != KindSlow && g.spec.Kind != KindSlowReader {
		return nil, fmt.Errorf("chatbench: probe is for slow consumers, group %q holds %s", s.Group, g.spec.Kind)
	}
	wait := s.Wait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	res := &ProbeResult{Total: len(g.members), Fates: map[string]int{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	deadline := time.Now().Add(wait)
	for _, m := range g.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.conn.nc.SetReadDeadline(deadline)
			var msgs, bytes int64
			fate := ""
			if m.fast != nil {
				// A slow reader reads on by itself, now at full speed,
				// until the connection ends or the deadline.
				close(m.fast)
				<-m.done
				msgs, bytes = m.keptMsgs.Load(), m.keptBytes.Load()
				fate, _ = m.closeHow.Load().(string)
				if fate == "timeout" {
					fate = "open"
				}
			}
			for fate == "" {
				_, p, err := m.conn.ReadMessage()
				if err != nil {
					fate = classifyClose(err)
					if fate == "timeout" {
						fate = "open"
					}
					break
				}
				msgs++
				bytes += int64(len(p))
			}
			mu.Lock()
			res.Fates[fate]++
			if fate == "open" && msgs > 0 {
				res.Backlogged++
			}
			res.Messages += msgs
			res.Bytes += bytes
			res.MaxBytes = max(res.MaxBytes, bytes)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res, nil
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
