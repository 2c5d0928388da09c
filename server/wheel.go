package server

import (
	"sync"
	"sync/atomic"
	"time"
)

// wheel is the server's one timing wheel: handshake timeouts, pings, idle
// timeouts and close lingering all go through it. A connection sits in at
// most one slot (an intrusive list, so no allocation), at the tick of its
// next check. Activity does not move it: a connection only records its last
// read tick, and when its slot comes round the check works out the real
// deadline and reschedules. So a busy connection costs the wheel nothing
// per message, and an idle one costs one check per ping interval.
type wheel struct {
	tick  time.Duration
	now   atomic.Int64 // current tick number, read without the lock
	start time.Time

	mu    sync.Mutex
	slots []*Conn
	cur   int64

	stop chan struct{}
	done chan struct{}
}

func newWheel(tick time.Duration, slots int) *wheel {
	return &wheel{
		tick:  tick,
		start: time.Now(),
		slots: make([]*Conn, slots),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// ticks converts a duration to a whole number of ticks, rounding up.
func (w *wheel) ticks(d time.Duration) int64 {
	t := int64((d + w.tick - 1) / w.tick)
	if t < 1 {
		t = 1
	}
	return t
}

// schedule (re)places c at tick at (absolute).
func (w *wheel) schedule(c *Conn, at int64) {
	w.mu.Lock()
	w.unlink(c)
	w.link(c, at)
	w.mu.Unlock()
}

// remove takes c off the wheel.
func (w *wheel) remove(c *Conn) {
	w.mu.Lock()
	w.unlink(c)
	w.mu.Unlock()
}

func (w *wheel) link(c *Conn, at int64) {
	if at <= w.cur {
		at = w.cur + 1
	}
	c.wdue = at
	slotAt := at
	if max := w.cur + int64(len(w.slots)) - 1; slotAt > max {
		slotAt = max // too far: parked in the last slot and rechecked then
	}
	i := int(slotAt % int64(len(w.slots)))
	c.wslot = int32(i) + 1
	c.wnext = w.slots[i]
	c.wprev = nil
	if c.wnext != nil {
		c.wnext.wprev = c
	}
	w.slots[i] = c
}

func (w *wheel) unlink(c *Conn) {
	if c.wslot == 0 {
		return // not on the wheel
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		w.slots[c.wslot-1] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wnext, c.wprev = nil, nil
	c.wslot = 0
}

// run advances the wheel every tick and calls fire for each connection
// whose check is due, outside the wheel lock.
func (w *wheel) run(fire func(c *Conn, now int64)) {
	defer close(w.done)
	t := time.NewTicker(w.tick)
	defer t.Stop()
	var due []*Conn
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		target := int64(time.Since(w.start) / w.tick)
		w.mu.Lock()
		for w.cur < target {
			w.cur++
			i := int(w.cur % int64(len(w.slots)))
			c := w.slots[i]
			w.slots[i] = nil
			for c != nil {
				next := c.wnext
				c.wnext, c.wprev, c.wslot = nil, nil, 0
				if c.wdue > w.cur {
					w.link(c, c.wdue)
				} else {
					due = append(due, c)
				}
				c = next
			}
		}
		now := w.cur
		w.now.Store(now)
		w.mu.Unlock()
		for i, c := range due {
			fire(c, now)
			due[i] = nil
		}
		due = due[:0]
	}
}

func (w *wheel) close() {
	close(w.stop)
	<-w.done
}

// each calls fn for every connection on the wheel (used by Shutdown),
// outside the wheel's lock: fn may schedule or remove connections.
func (w *wheel) each(fn func(c *Conn)) {
	w.mu.Lock()
	var all []*Conn
	for _, c := range w.slots {
		for ; c != nil; c = c.wnext {
			all = append(all, c)
		}
	}
	w.mu.Unlock()
	for _, c := range all {
		fn(c)
	}
}
