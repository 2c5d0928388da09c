package bench

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func TestHistogramSmallValuesAreExact(t *testing.T) {
	var h Histogram
	for v := int64(1); v <= 100; v++ {
		h.Record(v)
	}
	for _, c := range []struct {
		q    float64
		want int64
	}{{0, 1}, {0.5, 50}, {0.9, 90}, {0.99, 99}, {0.999, 100}, {1, 100}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %d, want %d", c.q, got, c.want)
		}
	}
	if h.Count() != 100 || h.Min() != 1 || h.Max() != 100 || h.Mean() != 50.5 {
		t.Errorf("count/min/max/mean = %d/%d/%d/%v", h.Count(), h.Min(), h.Max(), h.Mean())
	}
}

func TestHistogramQuantilesWithinOnePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var xs []int64
	for i := 0; i < 200000; i++ {
		// Log-normal-ish latencies from 10µs to seconds.
		v := int64(math.Exp(r.NormFloat64()*1.5 + 13))
		xs = append(xs, v)
		h.Record(v)
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 0.9999} {
		want := exactQuantile(xs, q)
		got := h.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.01 {
			t.Errorf("q=%v: got %d, exact %d (%.2f%% off)", q, got, want, 100*rel)
		}
	}
	if h.Max() != xs[len(xs)-1] || h.Quantile(1) != xs[len(xs)-1] {
		t.Errorf("max %d, want %d", h.Max(), xs[len(xs)-1])
	}
}

func TestHistogramBucketsCoverEveryValue(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 123456789, 1<<40 + 7, math.MaxInt64} {
		i := histIndex(v)
		if i < prev || i >= histBuckets {
			t.Fatalf("index(%d) = %d out of order or range", v, i)
		}
		prev = i
		if lo, hi := histLow(i), histHigh(i); v < lo || v > hi {
			t.Errorf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if lo := histLow(i); lo > 0 && float64(histHigh(i)-lo)/float64(lo) > 1.0/histSub {
			t.Errorf("bucket %d too wide: [%d, %d]", i, lo, histHigh(i))
		}
	}
}

func TestHistogramMergeAndData(t *testing.T) {
	var a, b Histogram
	for i := int64(0); i < 1000; i++ {
		a.Record(i * 1000)
		b.Record(i*1000 + 500000)
	}
	round := a.Data().Histogram()
	if round.Count() != a.Count() || round.Quantile(0.5) != a.Quantile(0.5) || round.Max() != a.Max() {
		t.Fatalf("Data round trip changed the histogram")
	}
	round.Merge(&b)
	if round.Count() != 2000 || round.Min() != 0 || round.Max() != b.Max() {
		t.Errorf("merged count/min/max = %d/%d/%d", round.Count(), round.Min(), round.Max())
	}
	var empty Histogram
	if empty.Quantile(0.99) != 0 || empty.Mean() != 0 {
		t.Errorf("empty histogram reports values")
	}
}

func TestConcurrentHistogramMatchesPlain(t *testing.T) {
	var c ConcurrentHistogram
	var plain Histogram
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000; i++ {
				v := int64(g*100000 + i*7)
				c.Record(g, v)
				mu.Lock()
				plain.Record(v)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	s := c.Snapshot()
	if s.Count() != plain.Count() || s.Min() != plain.Min() || s.Max() != plain.Max() || s.Quantile(0.9) != plain.Quantile(0.9) {
		t.Errorf("snapshot %d/%d/%d/%d, plain %d/%d/%d/%d", s.Count(), s.Min(), s.Max(), s.Quantile(0.9),
			plain.Count(), plain.Min(), plain.Max(), plain.Quantile(0.9))
	}
	c.Reset()
	if c.Count() != 0 || c.Snapshot().Count() != 0 {
		t.Errorf("Reset left values")
	}
}

func TestDeliveriesAccounting(t *testing.T) {
	if got := ExpectedDeliveries(1000, 50); got != 49000 {
		t.Errorf("ExpectedDeliveries(1000, 50) = %d", got)
	}
	if got := ExpectedDeliveries(10, 1); got != 0 {
		t.Errorf("a room of one delivers %d", got)
	}
	for _, c := range []struct {
		expected, received, lost, unexpected int64
		ratio                                float64
	}{
		{100, 100, 0, 0, 0},
		{100, 90, 10, 0, 0.1},
		{100, 105, 0, 5, 0},
		{0, 0, 0, 0, 0},
	} {
		d := Deliveries{Expected: c.expected, Received: c.received}
		d.Settle()
		if d.Lost != c.lost || d.Unexpected != c.unexpected || d.LossRatio() != c.ratio {
			t.Errorf("%d/%d: lost %d unexpected %d ratio %v", c.expected, c.received, d.Lost, d.Unexpected, d.LossRatio())
		}
	}
	// Workers report shares; the sum settles again.
	var total Deliveries
	total.Add(Deliveries{Expected: 500, Received: 500, Duplicates: 1})
	total.Add(Deliveries{Expected: 500, Received: 480, Corrupt: 2, Reordered: 3})
	if total.Expected != 1000 || total.Received != 980 || total.Lost != 20 || total.Duplicates != 1 || total.Corrupt != 2 || total.Reordered != 3 {
		t.Errorf("summed %+v", total)
	}
}

func TestCPUPerDelivery(t *testing.T) {
	if got := CPUPerDelivery(1500*time.Millisecond, 300000); math.Abs(got-5) > 1e-9 {
		t.Errorf("1.5s over 300k deliveries = %v µs, want 5", got)
	}
	if got := CPUPerDelivery(time.Second, 0); got != 0 {
		t.Errorf("no deliveries gives %v", got)
	}
	if got := Rate(500, 250*time.Millisecond); got != 2000 {
		t.Errorf("Rate = %v", got)
	}
	if got := median([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("median = %v", got)
	}
}
