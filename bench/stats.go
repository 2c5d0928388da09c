package bench

import (
	"math"
	"math/bits"
	"sort"
	"sync/atomic"
	"time"
)

// A Histogram counts non-negative int64 values (nanoseconds, in practice)
// in log-linear buckets: values below 256 are exact, and every power of two
// above is split into 128 equal buckets, so any reported quantile is within
// 1/128 (< 0.8%) of the true value. The full range of int64 needs 7,424
// buckets (58 KiB), whatever the number of samples, so a run with a hundred
// million deliveries costs what a run with ten does.
//
// A Histogram is not safe for concurrent use; ConcurrentHistogram is.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // buckets per power of two
	histBuckets = (64-histSubBits-1)*histSub + 2*histSub
)

// histIndex maps v >= 0 to its bucket. For v < 256 the bucket is v itself;
// above, shift = bitlen(v)-8 drops the low bits so that v>>shift is in
// [128, 256), and the bucket is shift*128 + v>>shift, which is continuous
// with the exact range below.
func histIndex(v int64) int {
	if v < 2*histSub {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits - 1
	return shift*histSub + int(uint64(v)>>uint(shift))
}

// histLow and histHigh are the smallest and largest value of bucket i.
func histLow(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	mant := i - shift*histSub
	return int64(mant) << uint(shift)
}

func histHigh(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	return histLow(i) + (int64(1) << uint(shift)) - 1
}

// Record adds one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest value recorded (exact).
func (h *Histogram) Max() int64 { return h.max }

// Min is the smallest value recorded (exact).
func (h *Histogram) Min() int64 { return h.min }

// Mean is the arithmetic mean (exact).
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value at quantile q in [0, 1] by the nearest-rank
// rule: the smallest recorded value v such that at least ceil(q*n) values
// are <= v. Inside a bucket the midpoint is reported, clamped to the exact
// min and max, so Quantile(1) is the true maximum and Quantile(0) the
// true minimum.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return h.min
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i]
		if seen >= rank {
			v := histLow(i) + (histHigh(i)-histLow(i))/2
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// Merge adds every value of o into h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// CDF returns up to points (value, fraction of values <= value) pairs, one
// per non-empty bucket, thinned evenly when there are more buckets than
// points; used for plots.
func (h *Histogram) CDF(points int) (values []int64, fractions []float64) {
	if h.n == 0 {
		return nil, nil
	}
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		values = append(values, min(max(histHigh(i), h.min), h.max))
		fractions = append(fractions, float64(seen)/float64(h.n))
	}
	if points > 0 && len(values) > points {
		step := float64(len(values)) / float64(points)
		var tv []int64
		var tf []float64
		for k := 0; k < points; k++ {
			j := int(float64(k) * step)
			tv = append(tv, values[j])
			tf = append(tf, fractions[j])
		}
		tv = append(tv, values[len(values)-1])
		tf = append(tf, fractions[len(fractions)-1])
		values, fractions = tv, tf
	}
	return values, fractions
}

// HistogramData is the wire and JSON form of a Histogram: only non-empty
// buckets, as parallel slices.
type HistogramData struct {
	Buckets []int    `json:"buckets,omitempty"`
	Counts  []uint64 `json:"counts,omitempty"`
	N       uint64   `json:"n"`
	Sum     float64  `json:"sum"`
	Min     int64    `json:"min"`
	Max     int64    `json:"max"`
}

// Data exports h.
func (h *Histogram) Data() HistogramData {
	d := HistogramData{N: h.n, Sum: h.sum, Min: h.min, Max: h.max}
	for i, c := range h.counts {
		if c != 0 {
			d.Buckets = append(d.Buckets, i)
			d.Counts = append(d.Counts, c)
		}
	}
	return d
}

// Histogram rebuilds the histogram exported by Data.
func (d HistogramData) Histogram() *Histogram {
	h := &Histogram{n: d.N, sum: d.Sum, min: d.Min, max: d.Max}
	for k, i := range d.Buckets {
		if i >= 0 && i < histBuckets && k < len(d.Counts) {
			h.counts[i] += d.Counts[k]
		}
	}
	return h
}

// ConcurrentHistogram is a Histogram many goroutines record into at once.
// It is split into shards chosen by the caller (a connection's index), so
// receivers on different cores rarely touch the same cache lines.
type ConcurrentHistogram struct {
	shards [concurrentShards]atomicHistogram
}

const concurrentShards = 8

type atomicHistogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Int64 // sum of values; nanoseconds fit for any run length we allow
	min    atomic.Int64 // stored as value+1 so that 0 means "none yet"
	max    atomic.Int64
}

// Record adds v to the shard picked by key.
func (c *ConcurrentHistogram) Record(key int, v int64) {
	if v < 0 {
		v = 0
	}
	s := &c.shards[uint(key)%concurrentShards]
	s.counts[histIndex(v)].Add(1)
	s.n.Add(1)
	s.sum.Add(v)
	for {
		m := s.min.Load()
		if m != 0 && m-1 <= v {
			break
		}
		if s.min.CompareAndSwap(m, v+1) {
			break
		}
	}
	for {
		m := s.max.Load()
		if m >= v {
			break
		}
		if s.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count is the number of values recorded so far.
func (c *ConcurrentHistogram) Count() uint64 {
	var n uint64
	for i := range c.shards {
		n += c.shards[i].n.Load()
	}
	return n
}

// Snapshot returns a plain Histogram with everything recorded so far.
func (c *ConcurrentHistogram) Snapshot() *Histogram {
	h := &Histogram{}
	for i := range c.shards {
		s := &c.shards[i]
		n := s.n.Load()
		if n == 0 {
			continue
		}
		var part Histogram
		for j := range s.counts {
			part.counts[j] = s.counts[j].Load()
		}
		part.n = n
		part.sum = float64(s.sum.Load())
		part.min = s.min.Load() - 1
		part.max = s.max.Load()
		h.Merge(&part)
	}
	return h
}

// Reset forgets everything recorded; callers make sure nobody records
// at the same time.
func (c *ConcurrentHistogram) Reset() {
	for i := range c.shards {
		s := &c.shards[i]
		for j := range s.counts {
			s.counts[j].Store(0)
		}
		s.n.Store(0)
		s.sum.Store(0)
		s.min.Store(0)
		s.max.Store(0)
	}
}

// Latency is the summary of a latency histogram printed and stored in
// reports, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize reduces a nanosecond histogram to a Latency.
func Summarize(h *Histogram) Latency {
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return Latency{
		Count: h.Count(),
		Mean:  h.Mean() / 1e6,
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
	}
}

// Deliveries is the loss accounting of one broadcast phase: how many
// copies of the sent messages the room's other members should have got,
// and what they did get.
type Deliveries struct {
	Sent       int64 `json:"messages_sent"`
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`   // distinct, intact copies
	Lost       int64 `json:"lost"`       // Expected - Received, never negative
	Duplicates int64 `json:"duplicates"` // a copy a member had already got
	Corrupt    int64 `json:"corrupt"`    // payload failed its checksum or framing
	Reordered  int64 `json:"reordered"`  // arrived after a later message of the same sender
	Unexpected int64 `json:"unexpected"` // intact, but more than Expected (e.g. from an earlier phase)
}

// ExpectedDeliveries is how many copies a room of members members should
// deliver when sent messages are broadcast: every member but the sender
// gets each one.
func ExpectedDeliveries(sent int64, members int) int64 {
	if members < 1 {
		return 0
	}
	return sent * int64(members-1)
}

// Settle fills Lost and Unexpected from Expected and Received.
func (d *Deliveries) Settle() {
	d.Lost = 0
	d.Unexpected = 0
	if d.Received < d.Expected {
		d.Lost = d.Expected - d.Received
	} else {
		d.Unexpected = d.Received - d.Expected
	}
}

// LossRatio is Lost/Expected (0 when nothing was expected).
func (d Deliveries) LossRatio() float64 {
	if d.Expected == 0 {
		return 0
	}
	return float64(d.Lost) / float64(d.Expected)
}

// Add sums two accounts (workers report their share).
func (d *Deliveries) Add(o Deliveries) {
	d.Sent += o.Sent
	d.Expected += o.Expected
	d.Received += o.Received
	d.Duplicates += o.Duplicates
	d.Corrupt += o.Corrupt
	d.Reordered += o.Reordered
	d.Settle()
}

// CPUPerDelivery is the server's CPU time per delivered message in
// microseconds: cpu * 1e6 / deliveries, 0 when nothing was delivered.
func CPUPerDelivery(cpu time.Duration, deliveries int64) float64 {
	if deliveries <= 0 {
		return 0
	}
	return cpu.Seconds() * 1e6 / float64(deliveries)
}

// Rate is count per second over d (0 for an empty interval).
func Rate(count int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(count) / d.Seconds()
}

// median returns the median of xs (mean of the two middle values for an
// even count); xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// sumCounts is the total of counts by class (errors, close kinds, fates).
func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// addCounts adds b to a, allocating a only when b has something.
func addCounts(a, b map[string]int) map[string]int {
	for k, v := range b {
		if a == nil {
			a = map[string]int{}
		}
		a[k] += v
	}
	return a
}
