package bench

// The soak's samples of the server: /proc figures, /metrics gauges, and
// waiting for the server to settle after a round.

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SoakSample is the server at one moment: /proc, and the /metrics
// gauges it exposes.
type SoakSample struct {
	Seconds  float64            `json:"t"` // since the measured part began
	RSS      int64              `json:"rss_bytes"`
	FDs      int                `json:"fds"`
	Threads  int                `json:"threads"`
	Gauges   map[string]float64 `json:"gauges,omitempty"`
	counters map[string]float64
}

// SettleResult says how long the server took to give back what a round
// of short-lived clients held.
type SettleResult struct {
	Seconds float64 `json:"seconds"`
	Reached bool    `json:"reached"` // fds within soakFDSlack of the reference, and steady
	FDs     int     `json:"fds"`
	RefFDs  int     `json:"reference_fds"`
}

// soakSample reads the server's /proc figures and /metrics gauges (in
// that order, so the scrape's own connection is not among the fds); nil
// without /proc figures.
func (r *runner) soakSample(client *http.Client, t0 time.Time) (*SoakSample, bool) {
	p, ok := r.t.sample()
	if !ok {
		return nil, false
	}
	s := &SoakSample{RSS: p.RSS, FDs: p.FDs, Threads: p.Threads}
	if !t0.IsZero() {
		s.Seconds = time.Since(t0).Seconds()
	}
	all := scrapeMetrics(client, r.t.metricsAddr())
	for k, v := range all {
		name, _, _ := strings.Cut(k, "{")
		switch {
		case strings.HasSuffix(name, "_total"):
			if s.counters == nil {
				s.counters = map[string]float64{}
			}
			s.counters[k] = v
		case slices.Contains(soakGauges, k):
			if s.Gauges == nil {
				s.Gauges = map[string]float64{}
			}
			s.Gauges[k] = v
		}
	}
	return s, true
}

// sampleSoak samples the server every so often (a sixtieth of the soak,
// between 1s and 10s) into res.Samples until the returned stop is called.
func (r *runner) sampleSoak(client *http.Client, t0 time.Time, res *SoakResult) (stop func()) {
	every := min(max(r.cfg.Duration/60, time.Second), 10*time.Second)
	done := make(chan struct{})
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if s, ok := r.soakSample(client, t0); ok {
					mu.Lock()
					res.Samples = append(res.Samples, *s)
					mu.Unlock()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// settle waits until the server is back within soakFDSlack of ref's
// descriptors and steady for half a second, for at most soakSettleMax.
func (r *runner) settle(ctx context.Context, ref *SoakSample) SettleResult {
	start := time.Now()
	if ref == nil {
		return SettleResult{}
	}
	out := SettleResult{RefFDs: ref.FDs}
	last, steady := -1, 0
	for {
		p, ok := r.t.sample()
		if !ok {
			return out
		}
		out.FDs = p.FDs
		out.Seconds = time.Since(start).Seconds()
		if p.FDs == last {
			steady++
		} else {
			last, steady = p.FDs, 0
		}
		if p.FDs <= ref.FDs+soakFDSlack && steady >= 5 {
			out.Reached = true
			return out
		}
		if time.Since(start) > soakSettleMax || ctx.Err() != nil {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrapeMetrics fetches http://addr/metrics and parses it; nil if the
// server has none.
func scrapeMetrics(client *http.Client, addr string) map[string]float64 {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return nil
	}
	return parseMetrics(io.LimitReader(resp.Body, 1<<20))
}

// parseMetrics reads the Prometheus text format: "name{labels} value
// [timestamp]" per sample, # lines are comments. Keys are the name with
// its labels as written.
func parseMetrics(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			key, rest = line[:j+1], line[j+1:]
		} else if k, v, ok := strings.Cut(line, " "); ok {
			key, rest = k, v
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[key] = v
	}
	return out
}
