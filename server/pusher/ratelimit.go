package pusher

import "time"

// gcra is a rate limiter by the generic cell rate algorithm: a token
// bucket kept as one number, the "theoretical arrival time" of the next
// request. It is not safe for concurrent use; its owner's lock guards it.
type gcra struct {
	tat time.Duration // since Protocol.epoch
}

// allow reports whether a request at now (time since Protocol.epoch) is
// within a rate of one per interval with bursts of up to burst requests
// (tolerance = (burst-1)*interval). When it is not, wait is how long until
// one would be.
func (g *gcra) allow(now, interval, tolerance time.Duration) (ok bool, wait time.Duration) {
	tat := max(g.tat, now)
	if over := tat - now - tolerance; over > 0 {
		return false, over
	}
	g.tat = tat + interval
	return true, 0
}
