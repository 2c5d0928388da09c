package bench

import (
	"sync"
	"time"
)

// sampler polls the RSS of a server's processes (summed over its
// instances) in the background: the peak, and (with a conns function) RSS
// against the number of client connections.
type sampler struct {
	pids    []int
	conns   func() int64
	first   int64
	peak    int64
	samples []RSSSample
	mu      sync.Mutex
	done    chan struct{}
	wg      sync.WaitGroup
}

// RSSSample is the server's RSS (summed over its instances) when the
// client held Conns connections.
type RSSSample struct {
	Seconds float64 `json:"t"`
	Conns   int64   `json:"conns"`
	RSS     int64   `json:"rss"`
}

func startSampler(pids []int, conns func() int64) *sampler {
	s := &sampler{pids: pids, conns: conns, done: make(chan struct{})}
	if len(pids) == 0 {
		return s
	}
	start := time.Now()
	take := func() {
		rss, err := sumRSS(pids)
		if err != nil {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.first == 0 {
			s.first = rss
		}
		s.peak = max(s.peak, rss)
		if s.conns != nil {
			s.samples = append(s.samples, RSSSample{Seconds: time.Since(start).Seconds(), Conns: s.conns(), RSS: rss})
		}
	}
	take()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

// stop ends sampling and returns the peak RSS and the samples.
func (s *sampler) stop() (int64, []RSSSample) {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.samples
}
