package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A measured broadcast phase, as the coordinator runs it: the join
// barrier, startPhase (senders placed, the phase prepared on every
// worker), the senders wherever sendSpec reaches, and finishPhase (the
// deliveries drained and summed up).

// PhaseResult is one measured broadcast phase.
type PhaseResult struct {
	Members           int           `json:"members"`
	Senders           int           `json:"senders"`
	MessagesPerSender int           `json:"messages_per_sender"`
	Size              int           `json:"size"`
	Mode              string        `json:"mode"`
	Protocol          string        `json:"protocol"` // raw, or pusher (HTTP API publishers)
	Deliveries        Deliveries    `json:"deliveries"`
	LossPercent       float64       `json:"loss_percent"`
	Stray             int64         `json:"stray"`
	Latency           Latency       `json:"latency"`
	LatencyHist       HistogramData `json:"latency_hist_ns"`
	SendSeconds       float64       `json:"send_seconds"`
	Seconds           float64       `json:"seconds"` // first send to last delivery
	DeliveriesPerSec  float64       `json:"deliveries_per_second"`
	ServerCPU         float64       `json:"server_cpu_seconds"`
	CPUPerDelivery    float64       `json:"server_cpu_us_per_delivery"`
	ClientCPU         float64       `json:"client_cpu_seconds"`
	RSSBefore         int64         `json:"server_rss_before"`
	RSSPeak           int64         `json:"server_rss_peak"`
	RSSAfter          int64         `json:"server_rss_after"`
	MembersClosed     int           `json:"members_closed"`
	// With several instances and known sender instances: members closed
	// by the server on an instance that holds a sender, and on the others.
	MembersClosedSenderInst int `json:"members_closed_senders_instances"`
	MembersClosedOther      int `json:"members_closed_other_instances"`
	// FloodReaders, in a flood (-senders-on), are the readers' instances
	// (from 1); every sender is on SenderInstances[0].
	FloodReaders   []int          `json:"flood_readers_on,omitempty"`
	CloseHow       map[string]int `json:"members_close_how,omitempty"`
	SendErrors     int64          `json:"send_errors"`
	FirstSendError string         `json:"first_send_error,omitempty"`
	AckTimeouts    int64          `json:"ack_timeouts"`
	NotJoined      int            `json:"members_not_seen_in_room"`
	// With several server instances: how many, each sender's instance
	// (by sender index), the deliveries to a member on another instance
	// than the sender's, and each process's CPU and RSS (the instances,
	// then the nats-server).
	Instances       int             `json:"instances,omitempty"`
	SenderInstances []int           `json:"sender_instances,omitempty"`
	CrossInstance   int64           `json:"deliveries_cross_instance,omitempty"`
	Processes       []ServerProcess `json:"server_processes,omitempty"`
	// With a publish hook receiver ({hook}): the POSTs it answered during
	// the phase and its CPU (not in ServerCPU), per delivery too, and the
	// server's and the receiver's CPU per delivery together.
	Hook                  bool    `json:"hook,omitempty"`
	HookPosts             int64   `json:"hook_posts,omitempty"`
	HookCPU               float64 `json:"hook_receiver_cpu_seconds,omitempty"`
	HookCPUPerDelivery    float64 `json:"hook_receiver_cpu_us_per_delivery,omitempty"`
	ServerAndHookPerDeliv float64 `json:"server_and_hook_cpu_us_per_delivery,omitempty"`
}

// broadcastPhase runs one measured phase on an open group: senders
// messages each from the group's first members, then waits for every
// delivery.
func (r *runner) broadcastPhase(ctx context.Context, group string, senders, messages int) (*PhaseResult, error) {
	cfg := r.cfg
	pr, err := r.startPhase(ctx, group, phaseLoad{senders: senders, messages: messages, rate: cfg.Rate, duration: cfg.Duration})
	if err != nil {
		return nil, err
	}
	c0 := r.fl.counters()
	total := int64(senders * messages)
	stopSend := r.prog.track("send", total, func() int64 { return r.fl.counters().Sent - c0.Sent })
	stopRecv := r.prog.track("deliver", r.expected(total, pr.res.Members), func() int64 { return r.fl.counters().Received - c0.Received })
	defer stopRecv()
	resps, err := r.fl.all(ctx, func(i int) *Request { return &Request{Op: "send", Send: pr.sendSpec()} })
	stopSend()
	if err != nil {
		pr.samp.stop()
		return nil, err
	}
	sends := make([]*SendResult, len(resps))
	for i, resp := range resps {
		sends[i] = resp.Send
	}
	return r.finishPhase(ctx, pr, sends)
}

// phaseLoad is what the senders of one phase do.
type phaseLoad struct {
	senders, messages int
	rate              float64       // messages/s over all senders; 0: closed loop
	duration          time.Duration // stop sending after this
	size              int           // bytes per message; 0: -size
	burst             int           // open loop: messages due at once (SendSpec.Burst)
	offset            time.Duration // open loop: when the first ones are due
}

// phaseRun is a broadcast phase between startPhase and finishPhase: the
// members are in the room, the phase is prepared on every worker, and its
// senders run wherever a SendSpec from sendSpec reaches (a "send" request,
// or inside a soak).
type phaseRun struct {
	cfg      *Config
	group    string
	load     phaseLoad
	tag      uint16
	res      *PhaseResult
	live     []int // members alive per worker at prepare time
	samp     *sampler
	cpu0     time.Duration
	cpu0Each []time.Duration // per server process, in target.pids order
	client0  time.Duration
	hook0    hookSample // the publish hook receiver's, if any
}

// startPhase waits until every member of group is in the room, gives each
// worker senders in proportion to its live members and prepares the phase.
func (r *runner) startPhase(ctx context.Context, group string, load phaseLoad) (*phaseRun, error) {
	cfg := r.cfg
	if load.size == 0 {
		load.size = cfg.Size
	}
	notJoined, err := r.joinBarrier(ctx, group, cfg.DrainTimeout)
	if err != nil {
		return nil, err
	}
	_, each, err := r.inspectGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	perWorker, senderInst, err := placeSenders(each, load.senders, len(r.t.addrs()), cfg.SendersOn-1)
	if err != nil {
		return nil, err
	}
	r.phase++
	closedLoop := load.rate == 0
	pr := &phaseRun{cfg: cfg, group: group, load: load, tag: r.phase}
	pr.res = &PhaseResult{Senders: load.senders, MessagesPerSender: load.messages, Size: load.size, NotJoined: notJoined, Protocol: r.t.Protocol, SenderInstances: senderInst}
	if len(r.t.inst) > 1 {
		pr.res.Instances = len(r.t.inst)
		if cfg.SendersOn > 0 {
			pr.res.FloodReaders = cfg.ReadersOn
		}
	}
	if closedLoop {
		pr.res.Mode = fmt.Sprintf("closed loop, window %d", cfg.Window)
	} else {
		pr.res.Mode = fmt.Sprintf("open loop, %.0f msg/s", load.rate)
	}
	pr.samp = startSampler(r.t.pids(), nil)
	pr.cpu0Each, _ = r.t.cpuEach()
	for _, x := range pr.cpu0Each {
		pr.cpu0 += x
	}
	pr.client0 = r.fl.clientCPU()
	pr.hook0 = sampleHook(r.t.hook)
	resps, err := r.fl.all(ctx, func(i int) *Request {
		return &Request{Op: "prepare", Prepare: &PrepareSpec{Group: group, Phase: pr.tag, TotalSenders: load.senders, SenderIDs: perWorker[i], SenderInstances: senderInst, Messages: load.messages, ClosedLoop: closedLoop}}
	})
	if err != nil {
		pr.samp.stop()
		return nil, err
	}
	pr.live = make([]int, len(resps))
	for i, resp := range resps {
		pr.live[i] = resp.Prepare.Live
		pr.res.Members += pr.live[i]
	}
	return pr, nil
}

// sendSpec is what every worker runs to send its share of the phase.
func (pr *phaseRun) sendSpec() *SendSpec {
	rate := 0.0
	if pr.load.rate > 0 {
		rate = pr.load.rate / float64(pr.load.senders)
	}
	cfg := pr.cfg
	return &SendSpec{Group: pr.group, Messages: pr.load.messages, Size: pr.load.size, Binary: cfg.Binary,
		RatePerSender: rate, Burst: pr.load.burst, Offset: pr.load.offset, Window: cfg.Window, Duration: pr.load.duration, AckTimeout: cfg.DrainTimeout}
}

// finishPhase takes the workers' send results (by worker; nil for none),
// waits for the deliveries and sums up the phase.
func (r *runner) finishPhase(ctx context.Context, pr *phaseRun, sends []*SendResult) (*PhaseResult, error) {
	cfg := r.cfg
	res := pr.res
	var firstSend, lastSend time.Time
	sentBy := make([]int64, len(r.fl.workers))
	for i, s := range sends {
		if s == nil {
			continue
		}
		sentBy[i] = s.Sent
		res.Deliveries.Sent += s.Sent
		res.SendErrors += s.SendErrors
		if res.FirstSendError == "" {
			res.FirstSendError = s.FirstError
		}
		res.AckTimeouts += s.AckTimeouts
		if s.Sent > 0 && (firstSend.IsZero() || s.First.Before(firstSend)) {
			firstSend = s.First
		}
		if s.Last.After(lastSend) {
			lastSend = s.Last
		}
	}
	if res.Deliveries.Sent == 0 && res.SendErrors > 0 {
		pr.samp.stop()
		return nil, fmt.Errorf("no message could be sent (%d senders failed): %s", res.SendErrors, res.FirstSendError)
	}
	res.SendSeconds = lastSend.Sub(firstSend).Seconds()
	resps, err := r.fl.all(ctx, func(i int) *Request {
		// Each worker's share: every message once per live member, but
		// a raw sender does not get its own.
		own := sentBy[i]
		if r.t.Protocol == ProtocolPusher {
			own = 0
		}
		return &Request{Op: "drain", Drain: &DrainSpec{Group: pr.group, Expected: res.Deliveries.Sent*int64(pr.live[i]) - own,
			Idle: cfg.DrainTimeout, Max: pr.load.duration + cfg.DrainTimeout}}
	})
	cpu1Each, _ := r.t.cpuEach()
	hook1 := sampleHook(r.t.hook)
	var cpu1 time.Duration
	for _, x := range cpu1Each {
		cpu1 += x
	}
	res.ClientCPU = (r.fl.clientCPU() - pr.client0).Seconds()
	peak, _ := pr.samp.stop()
	if err != nil {
		return nil, err
	}
	h := &Histogram{}
	var lastRecv time.Time
	d := Deliveries{Sent: res.Deliveries.Sent}
	for _, resp := range resps {
		dr := resp.Drain
		x := dr.Deliveries
		x.Sent = 0
		d.Add(x)
		res.Stray += dr.Stray
		h.Merge(dr.Latency.Histogram())
		if dr.LastReceive.After(lastRecv) {
			lastRecv = dr.LastReceive
		}
		res.CrossInstance += dr.Crossed
		res.MembersClosed += dr.Closed
		res.MembersClosedSenderInst += dr.ClosedSenderInst
		res.MembersClosedOther += dr.ClosedOther
		res.CloseHow = addCounts(res.CloseHow, dr.CloseHow)
	}
	res.Deliveries = d
	res.LossPercent = 100 * d.LossRatio()
	res.Latency = Summarize(h)
	res.LatencyHist = h.Data()
	if !lastRecv.IsZero() && !firstSend.IsZero() {
		res.Seconds = lastRecv.Sub(firstSend).Seconds()
		res.DeliveriesPerSec = Rate(d.Received, lastRecv.Sub(firstSend))
	}
	if r.t.pids() != nil {
		res.ServerCPU = (cpu1 - pr.cpu0).Seconds()
		res.CPUPerDelivery = CPUPerDelivery(cpu1-pr.cpu0, d.Received)
		res.RSSBefore = pr.samp.first
		res.RSSPeak = peak
		res.RSSAfter, _ = r.t.rss()
		if procs := r.t.procs(); len(procs) > 1 && len(cpu1Each) == len(procs) && len(pr.cpu0Each) == len(procs) {
			for i, in := range procs {
				p := ServerProcess{Name: r.t.procName(i), PID: in.pid, CPU: (cpu1Each[i] - pr.cpu0Each[i]).Seconds()}
				p.RSSAfter, _ = ReadProcRSS(in.pid)
				res.Processes = append(res.Processes, p)
			}
		}
	}
	if r.t.hook != nil && pr.hook0.ok && hook1.ok {
		res.Hook = true
		res.HookPosts = hook1.posts - pr.hook0.posts
		res.HookCPU = (hook1.cpu - pr.hook0.cpu).Seconds()
		res.HookCPUPerDelivery = CPUPerDelivery(hook1.cpu-pr.hook0.cpu, d.Received)
		if r.t.pids() != nil {
			res.ServerAndHookPerDeliv = res.CPUPerDelivery + res.HookCPUPerDelivery
		}
	}
	return res, nil
}

// ServerProcess is one process's share of a phase's server figures, with
// several instances (and a nats-server).
type ServerProcess struct {
	Name     string  `json:"name"` // instance N, or nats-server
	PID      int     `json:"pid"`
	CPU      float64 `json:"cpu_seconds"`
	RSSAfter int64   `json:"rss_after"`
}

// placeSenders gives each worker its senders (global sender indices),
// taking the workers in turn, each up to its open members (each: the
// workers' inspect results). With several server instances, sender s is
// a member on instance s mod instances where one is open, else on the
// next instance that has one, so that messages cross instances as the
// members do; senderInst is then each sender's instance, nil otherwise.
// With only >= 0 (a flood, -senders-on) every sender is a member on
// instance only.
func placeSenders(each []*InspectResult, senders, instances, only int) (perWorker [][]int, senderInst []int, err error) {
	perWorker = make([][]int, len(each))
	if instances <= 1 {
		next := 0
		for next < senders {
			placed := false
			for w, in := range each {
				if next < senders && len(perWorker[w]) < in.Open {
					perWorker[w] = append(perWorker[w], next)
					next++
					placed = true
				}
			}
			if !placed {
				return nil, nil, fmt.Errorf("only %d members alive for %d senders", next, senders)
			}
		}
		return perWorker, nil, nil
	}
	avail := make([][]int, len(each))
	for w, in := range each {
		avail[w] = append([]int(nil), in.OpenPerAddr...)
	}
	senderInst = make([]int, senders)
	cursor := 0
	for s := range senders {
		found := false
		for dk := 0; dk < instances && !found; dk++ {
			k := (s + dk) % instances
			if only >= 0 {
				if dk > 0 {
					break
				}
				k = only
			}
			for dw := range len(each) {
				w := (cursor + dw) % len(each)
				if k < len(avail[w]) && avail[w][k] > 0 {
					avail[w][k]--
					perWorker[w] = append(perWorker[w], s)
					senderInst[s] = k
					cursor = w + 1
					found = true
					break
				}
			}
		}
		if !found && only >= 0 {
			return nil, nil, fmt.Errorf("only %d members alive on instance %d for %d senders (-senders-on)", s, only+1, senders)
		}
		if !found {
			return nil, nil, fmt.Errorf("only %d members alive for %d senders", s, senders)
		}
	}
	return perWorker, senderInst, nil
}

// expected is how many deliveries sent messages make in a room of
// members: raw senders are members and skip themselves; Pusher
// publishers are not members, and every member gets every message.
func (r *runner) expected(sent int64, members int) int64 {
	if r.t.Protocol == ProtocolPusher {
		return sent * int64(max(members, 0))
	}
	return ExpectedDeliveries(sent, members)
}

// joinBarrier waits until every live member of group has received a sync
// probe sent through the room (by a member; in Pusher mode published
// through the HTTP API, and then the sender's worker has no member that
// misses it), re-sending one every 250ms, for at most limit. It returns
// how many members never showed they were in the room.
func (r *runner) joinBarrier(ctx context.Context, group string, limit time.Duration) (int, error) {
	since := r.nonce + 1
	deadline := time.Now().Add(limit)
	var lastSend time.Time
	for {
		send := time.Since(lastSend) > 250*time.Millisecond
		if send {
			r.nonce++
			lastSend = time.Now()
		}
		sender := -1
		resps, err := r.fl.all(ctx, func(i int) *Request {
			return &Request{Op: "sync", Sync: &SyncSpec{Group: group, Nonce: r.nonce, Since: since}}
		})
		if err != nil {
			return 0, err
		}
		live, seen := 0, 0
		for i, resp := range resps {
			live += resp.Sync.Live
			seen += resp.Sync.Seen
			if sender < 0 && resp.Sync.Live > 0 {
				sender = i
			}
		}
		need := live - 1
		if r.t.Protocol == ProtocolPusher {
			need = live
		}
		if need <= 0 || seen >= need {
			return 0, nil
		}
		if time.Now().After(deadline) {
			return need - seen, nil
		}
		if send && sender >= 0 {
			resp, err := r.fl.workers[sender].call(ctx, Request{Op: "sync", Sync: &SyncSpec{Group: group, Nonce: r.nonce, Send: true, Since: since}})
			if err == nil && resp.Error != "" {
				err = errors.New(resp.Error)
			}
			if err != nil {
				return 0, err
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}
