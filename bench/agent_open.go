package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The open command: dialing a batch of connections of one kind into a
// group, and naming the ways a dial fails.

// OpenSpec asks an Agent to open Count connections of one kind.
type OpenSpec struct {
	Group  string `json:"group"`
	Kind   string `json:"kind"`
	Count  int    `json:"count"`
	IDBase int    `json:"id_base"` // global id of the first
	Addr   string `json:"addr"`
	// Addrs, when set, are the server's instances: connection id modulo
	// len(Addrs) picks the instance (round-robin), and the rest of the id
	// divided by len(Addrs) picks its room and source address, so that
	// every instance sees the same mix of rooms and addresses.
	Addrs []string `json:"addrs,omitempty"`
	// Place, with Addrs, replaces round-robin (a broadcast flood,
	// -senders-on): see Placement.
	Place          *Placement    `json:"place,omitempty"`
	Room           string        `json:"room"`
	Rooms          int           `json:"rooms"` // >1: member id%Rooms picks room Room-k
	SourceIPs      []string      `json:"source_ips,omitempty"`
	Concurrency    int           `json:"concurrency"`
	ConnectTimeout time.Duration `json:"connect_timeout"`
	MaxTime        time.Duration `json:"max_time"` // the whole batch; 0: no cap
	RcvBuf         int           `json:"rcvbuf,omitempty"`
	// Path, when set, is the request path instead of /chat/{room}
	// (http-stall connections).
	Path string `json:"path,omitempty"`
	// ReadRate, for slow readers: bytes per second they read.
	ReadRate int `json:"read_rate,omitempty"`
	// Trickle, for stall-handshake and stall-frame connections: after
	// stalling, send one more byte this often (never enough to finish),
	// as slowloris does to defeat timeouts that only count silence.
	Trickle time.Duration `json:"trickle,omitempty"`
	// Pusher, for members: connect to /app/{key}, subscribe to the
	// channel, and let the senders publish through the HTTP API.
	Pusher *PusherSpec `json:"pusher,omitempty"`
}

// OpenResult reports one open command.
type OpenResult struct {
	Opened     int            `json:"opened"`
	Failed     int            `json:"failed"`
	Errors     map[string]int `json:"errors,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
	Connect    HistogramData  `json:"connect_ns"`
	Start      time.Time      `json:"start"`
	End        time.Time      `json:"end"`
	// OpenedPerAddr counts the connections opened to each of Addrs.
	OpenedPerAddr []int `json:"opened_per_addr,omitempty"`
	// CPU is what the process holding the agent spent while the batch
	// dialed (getrusage, every thread; for an agent in the coordinator's
	// process, the coordinator's share too).
	CPU time.Duration `json:"cpu_ns"`
}

// pickAddr returns the instance a connection id goes to, and the id's
// rank among that instance's connections.
func (s *OpenSpec) pickAddr(id int) (addr string, instance, rank int) {
	if len(s.Addrs) == 0 {
		return s.Addr, 0, id
	}
	if p := s.Place; p != nil && len(p.ReaderInstances) > 0 {
		k, rank := p.pick(id)
		if k >= 0 && k < len(s.Addrs) {
			return s.Addrs[k], k, rank
		}
	}
	n := len(s.Addrs)
	return s.Addrs[id%n], id % n, id / n
}

// Placement puts a broadcast's first Senders connections (ids 0 to
// Senders-1: the ones that will send) all on instance SenderInstance, and
// the rest (the readers) round-robin over ReaderInstances; instances
// count from 0. It makes a flood from one node, with the readers on
// others (or on the same one, for the local baseline).
type Placement struct {
	Senders         int   `json:"senders"`
	SenderInstance  int   `json:"sender_instance"`
	ReaderInstances []int `json:"reader_instances"`
}

// pick returns connection id's instance and its rank there.
func (p *Placement) pick(id int) (instance, rank int) {
	if id < p.Senders {
		return p.SenderInstance, id
	}
	j := id - p.Senders
	n := len(p.ReaderInstances)
	return p.ReaderInstances[j%n], j / n
}

func roomPath(room string, rooms, id int) string {
	if rooms > 1 {
		return fmt.Sprintf("/chat/%s-%d", room, id%rooms)
	}
	return "/chat/" + room
}

func (a *Agent) open(ctx context.Context, s *OpenSpec) (*OpenResult, error) {
	if s == nil || s.Count < 0 {
		return nil, errors.New("chatbench: bad open spec")
	}
	a.mu.Lock()
	g := a.groups[s.Group]
	if g == nil {
		g = &group{spec: *s}
		if s.Pusher != nil {
			g.pusherPrefix = pusherFast(s.Pusher.Channel)
		}
		a.groups[s.Group] = g
	}
	a.mu.Unlock()
	if g.spec.Kind != s.Kind {
		return nil, fmt.Errorf("chatbench: group %q holds %s connections, not %s", s.Group, g.spec.Kind, s.Kind)
	}
	if (g.spec.Pusher == nil) != (s.Pusher == nil) {
		return nil, fmt.Errorf("chatbench: group %q mixes raw and Pusher connections", s.Group)
	}
	if s.Pusher != nil && s.Kind != KindMember {
		return nil, fmt.Errorf("chatbench: Pusher mode has members only, not %s connections", s.Kind)
	}
	if s.MaxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.MaxTime)
		defer cancel()
	}
	ips := make([]net.IP, len(s.SourceIPs))
	for i, txt := range s.SourceIPs {
		if ips[i] = net.ParseIP(txt); ips[i] == nil {
			return nil, fmt.Errorf("chatbench: bad source address %q", txt)
		}
	}
	conc := s.Concurrency
	if conc <= 0 || conc > s.Count {
		conc = max(1, s.Count)
	}
	var (
		hist    Histogram
		mu      sync.Mutex
		errs    = map[string]int{}
		first   string
		opened  []*member
		next    atomic.Int64
		wg      sync.WaitGroup
		started = time.Now()
		cpu0    = selfCPU()
	)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := NewDialer(ctx)
			defer d.Close()
			for {
				i := int(next.Add(1) - 1)
				if i >= s.Count || ctx.Err() != nil {
					return
				}
				id := s.IDBase + i
				addr, _, rank := s.pickAddr(id)
				o := DialOptions{Addr: addr, Path: roomPath(s.Room, s.Rooms, rank), Timeout: s.ConnectTimeout, RcvBuf: s.RcvBuf}
				if s.Pusher != nil {
					o.Path = pusherPath(s.Pusher.Key)
				}
				if s.Path != "" {
					o.Path = s.Path
				}
				if len(ips) > 0 {
					o.LocalIP = ips[rank%len(ips)]
				}
				t0 := time.Now()
				m, err := dialMember(ctx, d, s.Kind, o, s.Pusher, id)
				lat := time.Since(t0)
				mu.Lock()
				if err != nil {
					a.failed.Add(1)
					c := classifyDialError(err)
					errs[c]++
					if first == "" {
						first = err.Error()
					}
				} else {
					a.connected.Add(1)
					m.id = id
					hist.Record(int64(lat))
					opened = append(opened, m)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	cpu := selfCPU() - cpu0
	// Members are kept in id order so that senders are the lowest ids.
	sort.Slice(opened, func(i, j int) bool { return opened[i].id < opened[j].id })
	a.mu.Lock()
	base := len(g.members)
	for k, m := range opened {
		m.index = base + k
		g.members = append(g.members, m)
	}
	a.mu.Unlock()
	for _, m := range opened {
		g.startReader(m)
	}
	if s.Trickle > 0 && len(opened) > 0 && (s.Kind == KindStallHandshake || s.Kind == KindStallFrame) {
		go trickle(opened, s.Trickle)
	}
	res := &OpenResult{Opened: len(opened), Failed: s.Count - len(opened), FirstError: first, Connect: hist.Data(), Start: started, End: time.Now(), CPU: cpu}
	if len(s.Addrs) > 0 {
		res.OpenedPerAddr = make([]int, len(s.Addrs))
		for _, m := range opened {
			_, k, _ := s.pickAddr(m.id)
			res.OpenedPerAddr[k]++
		}
	}
	if len(errs) > 0 {
		res.Errors = errs
	}
	if n := s.Count - len(opened) - sumCounts(errs); n > 0 {
		if res.Errors == nil {
			res.Errors = map[string]int{}
		}
		res.Errors["cancelled"] += n
	}
	return res, nil
}

// dialMember opens connection id and, for attackers, sets up the stall
// or sends what they send; a Pusher member is subscribed to its channel
// before it counts as open, within the same connect timeout. WebSockets
// are opened through d (bound to ctx).
func dialMember(ctx context.Context, d *Dialer, kind string, o DialOptions, ps *PusherSpec, id int) (*member, error) {
	m := &member{done: make(chan struct{})}
	start := time.Now()
	switch kind {
	case KindMember, KindSlow, KindSlowReader:
		c, err := d.Dial(o)
		if err != nil {
			return nil, err
		}
		if ps != nil {
			timeout := o.Timeout
			if timeout <= 0 {
				timeout = 10 * time.Second
			}
			deadline := start.Add(timeout)
			if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
				deadline = dl
			}
			if err := pusherJoin(c, ps.Channel, deadline); err != nil {
				c.Abort()
				return nil, err
			}
		}
		m.conn = c
	case KindStallHandshake:
		nc, err := dialRaw(ctx, o)
		if err != nil {
			return nil, err
		}
		// Half of the upgrade request: the request line and part of the
		// headers, never the blank line that ends them.
		req, _ := UpgradeRequest(o.Addr, o.Path)
		if _, err := nc.Write(req[:len(req)/2]); err != nil {
			nc.Close()
			return nil, err
		}
		m.raw = nc
	case KindStallFrame:
		c, err := d.Dial(o)
		if err != nil {
			return nil, err
		}
		// A binary frame announcing 1000 payload bytes, then only 10 of them.
		frame := appendFrameHeader(nil, OpBinary, 1000, 0x01020304)
		frame = append(frame, make([]byte, 10)...)
		if _, err := c.nc.Write(frame); err != nil {
			c.Close()
			return nil, err
		}
		m.conn = c
	case KindHalfClose, KindGarbage, KindHTTPStall:
		if err := dialHostile(ctx, m, kind, o, id); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("chatbench: unknown connection kind %q", kind)
	}
	m.stalledAt = time.Now()
	return m, nil
}

// dialRaw opens a TCP connection within the connect timeout (for clients
// that never complete an upgrade).
func dialRaw(ctx context.Context, o DialOptions) (net.Conn, error) {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	return DialTCP(ctx, o)
}

// classifyDialError turns a failed connection attempt into a short class
// for the report.
func classifyDialError(err error) string {
	var pe *pusherJoinError
	if errors.As(err, &pe) {
		return "pusher: " + pe.class
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free source port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF during handshake"
	case errors.Is(err, ErrHandshake):
		msg := err.Error()
		if i := strings.Index(msg, "answered "); i >= 0 {
			return "handshake: " + msg[i+len("answered "):]
		}
		if strings.Contains(msg, "timeout") || strings.Contains(msg, "deadline") {
			return "timeout"
		}
		return "handshake failed"
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "other"
	}
}
