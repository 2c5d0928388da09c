package bench

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// The coordinator's commands on a group of connections spread over the
// workers: open, close, inspect.

// OpenSummary is the outcome of opening a batch of connections.
type OpenSummary struct {
	Requested  int            `json:"requested"`
	Opened     int            `json:"opened"`
	Failed     int            `json:"failed"`
	Errors     map[string]int `json:"errors,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
	Seconds    float64        `json:"seconds"`
	Rate       float64        `json:"per_second"`
	Latency    Latency        `json:"connect_latency"`
	Hist       HistogramData  `json:"connect_hist_ns"`
	// PerInstance counts the connections opened to each server instance
	// (with more than one).
	PerInstance []int `json:"opened_per_instance,omitempty"`
	// ClientCPU is what the client processes spent while they dialed
	// (summed over the workers), and ClientCPUPerConnect that over Opened.
	ClientCPU           float64 `json:"client_cpu_seconds"`
	ClientCPUPerConnect float64 `json:"client_cpu_us_per_connect"`
	perWorker           []int
}

// openGroup opens count connections of kind in group, spread over the
// workers; ids start at idBase.
func (r *runner) openGroup(ctx context.Context, group, kind string, count int, room string, rooms, rcvbuf, concurrency, idBase int) (*OpenSummary, error) {
	shares := split(count, len(r.fl.workers))
	addrs := r.t.addrs()
	var spread []string // connection id modulo len(spread) picks the instance
	if len(addrs) > 1 {
		spread = addrs
	}
	bases := make([]int, len(shares))
	b := idBase
	for i, s := range shares {
		bases[i] = b
		b += s
	}
	c0 := r.fl.counters()
	stop := r.prog.track("connect "+kind, int64(count), func() int64 {
		c := r.fl.counters()
		return c.Connected + c.Failed - c0.Connected - c0.Failed
	})
	resps, err := r.fl.all(ctx, func(i int) *Request {
		if shares[i] == 0 {
			return nil
		}
		return &Request{Op: "open", Open: &OpenSpec{
			Group: group, Kind: kind, Count: shares[i], IDBase: bases[i],
			Addr: addrs[0], Addrs: spread, Place: r.placement(kind, spread), Room: room, Rooms: rooms, SourceIPs: r.cfg.sourceIPs(),
			Concurrency: concurrency, ConnectTimeout: r.cfg.ConnectTimeout, RcvBuf: rcvbuf,
			MaxTime: r.cfg.Duration + r.cfg.ConnectTimeout, Pusher: r.pusherSpec(kind),
		}}
	})
	stop()
	if err != nil {
		return nil, err
	}
	sum := &OpenSummary{Requested: count, perWorker: make([]int, len(resps))}
	h := &Histogram{}
	var first, last time.Time
	for i, resp := range resps {
		o := resp.Open
		if o == nil {
			continue
		}
		sum.perWorker[i] = o.Opened
		sum.Opened += o.Opened
		if len(spread) > 0 {
			if sum.PerInstance == nil {
				sum.PerInstance = make([]int, len(spread))
			}
			for k, n := range o.OpenedPerAddr {
				if k < len(sum.PerInstance) {
					sum.PerInstance[k] += n
				}
			}
		}
		sum.Failed += o.Failed
		sum.ClientCPU += o.CPU.Seconds()
		sum.Errors = addCounts(sum.Errors, o.Errors)
		if sum.FirstError == "" {
			sum.FirstError = o.FirstError
		}
		h.Merge(o.Connect.Histogram())
		if first.IsZero() || o.Start.Before(first) {
			first = o.Start
		}
		if o.End.After(last) {
			last = o.End
		}
	}
	sum.Seconds = last.Sub(first).Seconds()
	if sum.Opened > 0 {
		sum.ClientCPUPerConnect = sum.ClientCPU * 1e6 / float64(sum.Opened)
	}
	sum.Rate = Rate(int64(sum.Opened), last.Sub(first))
	sum.Latency = Summarize(h)
	sum.Hist = h.Data()
	if sum.Opened == 0 && count > 0 {
		return sum, fmt.Errorf("no %s connection could be opened to %s (%d tried): %s", kind, r.t.URL, count, sum.FirstError)
	}
	return sum, nil
}

// placement is where the members of a broadcast flood (-senders-on) go,
// nil for round-robin.
func (r *runner) placement(kind string, spread []string) *Placement {
	c := r.cfg
	if c.SendersOn == 0 || kind != KindMember || len(spread) < 2 {
		return nil
	}
	p := &Placement{Senders: c.Senders, SenderInstance: c.SendersOn - 1}
	for _, k := range c.ReadersOn {
		p.ReaderInstances = append(p.ReaderInstances, k-1)
	}
	return p
}

// openHonest connects the -conns honest members of the slowloris and
// slowconsumer scenarios to room; all of them must get in.
func (r *runner) openHonest(ctx context.Context, group, room string) error {
	open, err := r.openGroup(ctx, group, KindMember, r.cfg.Conns, room, 1, 0, r.cfg.Concurrency, 0)
	if err != nil {
		return err
	}
	if open.Opened < r.cfg.Conns {
		return fmt.Errorf("only %d of %d honest members connected: %v", open.Opened, r.cfg.Conns, open.Errors)
	}
	return nil
}

// pusherSpec is what members of kind need in Pusher mode, nil in raw mode.
func (r *runner) pusherSpec(kind string) *PusherSpec {
	if r.t.Protocol != ProtocolPusher || kind != KindMember {
		return nil
	}
	c := r.cfg
	return &PusherSpec{AppID: c.AppID, Key: c.AppKey, Secret: c.AppSecret, Channel: c.Channel}
}

// closeGroup closes a group on every worker.
func (r *runner) closeGroup(ctx context.Context, group, mode string) (time.Duration, error) {
	resps, err := r.fl.all(ctx, func(int) *Request {
		return &Request{Op: "close", Close: &CloseSpec{Group: group, Mode: mode}}
	})
	var d time.Duration
	for _, resp := range resps {
		if resp.Close != nil {
			d = max(d, resp.Close.Elapsed)
		}
	}
	return d, err
}

// inspectGroup sums the open/closed state of a group over the workers,
// and returns each worker's too (an empty one for a worker without a
// share).
func (r *runner) inspectGroup(ctx context.Context, group string) (*InspectResult, []*InspectResult, error) {
	resps, err := r.fl.all(ctx, func(int) *Request { return &Request{Op: "inspect", Group: group} })
	if err != nil {
		return nil, nil, err
	}
	out := &InspectResult{}
	each := make([]*InspectResult, len(resps))
	for i, resp := range resps {
		in := resp.Inspect
		if in == nil {
			each[i] = &InspectResult{}
			continue
		}
		each[i] = in
		out.Total += in.Total
		out.Open += in.Open
		for k, n := range in.OpenPerAddr {
			for len(out.OpenPerAddr) <= k {
				out.OpenPerAddr = append(out.OpenPerAddr, 0)
			}
			out.OpenPerAddr[k] += n
		}
		out.CloseHow = addCounts(out.CloseHow, in.CloseHow)
		out.CloseAfter = append(out.CloseAfter, in.CloseAfter...)
	}
	sort.Float64s(out.CloseAfter)
	return out, each, nil
}
