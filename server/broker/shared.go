package broker

// The NATS broker's shared state: its types, set-up, (re)establishing the
// buckets and watchers, shutdown and stats. Presence and occupancy are in
// shared_presence.go, cache channels in shared_cache.go, node liveness in
// shared_nodes.go, cross-node requests in shared_query.go, key and message
// encoding in shared_keys.go.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Shared-state defaults.
const (
	// DefaultNodeTimeout is how long a node may go unheard before the
	// cluster takes its presence entries away (a node killed without a
	// word). Nodes say they are alive every HeartbeatInterval.
	DefaultNodeTimeout = 10 * time.Second
	// HeartbeatInterval is how often a node says it is alive.
	HeartbeatInterval = time.Second
	// gatherTimeout bounds a cluster-wide query when a node that was
	// alive does not answer (it died meanwhile); the normal case waits
	// for the answers of the nodes alive, no more.
	gatherTimeout = 2 * time.Second
	// kvTimeout bounds one JetStream request.
	kvTimeout = 5 * time.Second
	// cacheQueue bounds the cache-channel events waiting to be stored.
	cacheQueue = 4096
)

// Bucket names of the shared state.
const (
	PresenceBucket = "chatd_presence"
	CacheBucket    = "chatd_cache"
)

// PresenceEntry is one node's share of a presence member: user User of
// channel Channel of app App has connections on node Node.
type PresenceEntry struct {
	App, Channel, User, Node string
	Info                     []byte // user_info of the node's first connection; nil if none
	Deleted                  bool   // the node has no connection of the user there any more
	// Occupancy: not a member but the node's occupancy of the channel
	// (it has subscribers there; User is empty).
	Occupancy bool
}

// CacheEntry is the last event of a cache channel, as a node published it.
type CacheEntry struct {
	App, Channel string
	Node         string // the node that published it
	Except       string // socket_id it must not reach ("" none)
	Data         string // the event's data (for the HTTP API)
	Msg          []byte // the encoded event
	Live         bool   // published now (else: stored before this node watched)
}

// SharedHandler is what the Pusher layer gives the broker: it is told the
// cluster's presence and cache changes, and answers other nodes.
type SharedHandler interface {
	// PresenceReset gives the whole presence state: entries is every
	// node's entries, in the order the cluster stored them. It comes
	// first, and again whenever the broker had to start over (NATS came
	// back); PresenceUpdate calls follow, one change at a time, in the
	// cluster's order, the same order on every node.
	PresenceReset(entries []PresenceEntry)
	PresenceUpdate(e PresenceEntry)
	// CacheUpdate gives the last event of a cache channel published by
	// another node (live, or the stored one when the broker starts).
	CacheUpdate(e CacheEntry)
	// Terminate closes the connections of a user on this node, asked by
	// another node.
	Terminate(app, user string)
	// Counts answers another node's query (Gather) with this node's view.
	Counts(app string, query []byte) []byte
	// Up reports whether the shared state works (JetStream reachable and
	// the presence state received); false while it is being restored.
	Up(up bool)
}

// shared is the NATS broker's shared state: presence entries and cache
// channel events in JetStream key-value buckets, node heartbeats, and core
// NATS subjects for terminate and cluster-wide queries.
type shared struct {
	b       *NATS
	h       SharedHandler
	timeout time.Duration
	node    string // encoded node ID
	js      jetstream.JetStream
	kick    chan struct{} // (re)establish: NATS (re)connected
	wake    chan struct{} // the writer has work
	cacheQ  chan []byte   // encoded cache puts: key NUL value
	stop    chan struct{}
	ctx     context.Context // cancelled on close: ends JetStream requests under way
	cancel  context.CancelFunc
	done    sync.WaitGroup

	mu       sync.Mutex
	presence jetstream.KeyValue // nil until established
	cache    jetstream.KeyValue
	desired  map[string][]byte   // this node's presence keys -> value (nil value: "null" info)
	dirty    map[string]struct{} // keys whose stored state may differ from desired
	order    []string            // dirty keys in the order they became dirty
	byNode   map[string]map[string]struct{}
	lastSeen map[string]time.Time // node -> last heartbeat
	grace    time.Time            // no node is dead before this (start, reconnect)
	purging  map[string]bool
	up       bool
	leaving  bool // Withdraw: this node's presence is gone for good

	lostCache, purged atomic.Uint64
	processed         atomic.Uint64 // the last presence revision handed to the handler
	epoch             atomic.Uint64 // the watchers' generation (establish)
}

// EnableShared starts the shared state for h: buckets, watchers and
// heartbeats, established now if NATS is up and again each time it comes
// back. timeout is how long a silent node keeps its presence (zero:
// DefaultNodeTimeout).
func (b *NATS) EnableShared(h SharedHandler, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultNodeTimeout
	}
	sh := &shared{
		b: b, h: h, timeout: timeout,
		node:     enc(b.id),
		kick:     make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		cacheQ:   make(chan []byte, cacheQueue),
		stop:     make(chan struct{}),
		desired:  make(map[string][]byte),
		dirty:    make(map[string]struct{}),
		byNode:   make(map[string]map[string]struct{}),
		lastSeen: make(map[string]time.Time),
		purging:  make(map[string]bool),
		grace:    time.Now().Add(timeout),
	}
	sh.ctx, sh.cancel = context.WithCancel(context.Background())
	js, err := jetstream.New(b.nc)
	if err != nil {
		b.log.Error("JetStream unavailable", "err", err)
	}
	sh.js = js
	b.mu.Lock()
	b.shared = sh
	b.mu.Unlock()
	subj := b.cfg.SubjectPrefix
	b.nc.Subscribe(subj+".node", sh.heartbeat)
	b.nc.Subscribe(subj+".pctl", sh.control)
	b.nc.Subscribe(subj+".pq", sh.query)
	sh.done.Add(3)
	go sh.loop()
	go sh.writer()
	go sh.cacheWriter()
	sh.kick <- struct{}{}
}

func (b *NATS) withShared(f func(*shared)) {
	if sh := b.getShared(); sh != nil {
		f(sh)
	}
}

func (b *NATS) getShared() *shared {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.shared
}

// loop establishes the shared state when NATS (re)connects, says this node
// is alive every HeartbeatInterval, and takes the presence of nodes gone
// silent away.
func (sh *shared) loop() {
	defer sh.done.Done()
	tick := time.NewTicker(HeartbeatInterval)
	defer tick.Stop()
	var stopWatch func()
	defer func() {
		if stopWatch != nil {
			stopWatch()
		}
	}()
	retry := time.NewTimer(time.Hour)
	for {
		select {
		case <-sh.stop:
			return
		case <-sh.kick:
		case <-retry.C:
		case <-tick.C:
			sh.beat("up")
			sh.sweep()
			continue
		}
		if !sh.b.nc.IsConnected() {
			continue // the reconnect handler kicks again
		}
		if stopWatch != nil {
			stopWatch()
			stopWatch = nil
		}
		sh.setUp(false)
		sh.mu.Lock()
		sh.grace = time.Now().Add(sh.timeout)
		sh.mu.Unlock()
		sh.beat("up")
		var err error
		if stopWatch, err = sh.establish(); err != nil {
			sh.b.log.Error("cluster state unavailable: Pusher presence and cache channels wait for it "+
				"(the NATS server needs JetStream: nats-server -js)", "node", sh.b.cfg.NodeID, "err", err)
			retry.Reset(2 * time.Second)
		}
	}
}

func (sh *shared) setUp(up bool) {
	sh.mu.Lock()
	changed := sh.up != up
	sh.up = up
	sh.mu.Unlock()
	if changed {
		sh.h.Up(up)
	}
}

// establish creates the buckets if need be, starts the watchers and, once
// the presence state is in, stores this node's desired state over what the
// cluster holds of it (NATS may have lost it, or kept entries this node
// no longer has).
func (sh *shared) establish() (stop func(), err error) {
	if sh.js == nil {
		return nil, errors.New("no JetStream context")
	}
	ctx, cancel := context.WithTimeout(sh.ctx, kvTimeout)
	defer cancel()
	pkv, err := sh.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: PresenceBucket, Description: "chatd: presence members per node", History: 1,
		// On disk, so that a NATS server restarted with its store keeps
		// the members and nobody is removed and added again.
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, err
	}
	ckv, err := sh.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: CacheBucket, Description: "chatd: last event of each cache channel", History: 1,
		TTL: 30 * time.Minute, MaxBytes: 64 << 20, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, err
	}
	wctx, wcancel := context.WithCancel(context.Background())
	pw, err := pkv.WatchAll(wctx)
	if err != nil {
		wcancel()
		return nil, err
	}
	cw, err := ckv.WatchAll(wctx)
	if err != nil {
		wcancel()
		return nil, err
	}
	ep := sh.epoch.Add(1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sh.watchPresence(pw, pkv, ep) }()
	go func() { defer wg.Done(); sh.watchCache(cw, ckv, ep) }()
	return func() {
		// From here on this pair of watchers hands nothing to the
		// handler (the epoch moved on), whenever their goroutines end.
		sh.epoch.Add(1)
		sh.mu.Lock()
		sh.presence, sh.cache = nil, nil
		sh.mu.Unlock()
		done := make(chan struct{})
		go func() {
			// Stopping deletes the consumers on the server: quick while
			// connected, a JetStream timeout each while NATS is away (the
			// consumers are ordered and ephemeral: the server drops them
			// by itself, and closing the connection ends the goroutines).
			pw.Stop()
			cw.Stop()
			wcancel()
			wg.Wait()
			close(done)
		}()
		if sh.b.nc.IsConnected() {
			select {
			case <-done:
			case <-time.After(time.Second):
			}
		}
	}, nil
}

// close withdraws this node's presence, says goodbye, then stops the
// goroutines.
func (sh *shared) close() {
	sh.withdraw()
	sh.beat("down")
	close(sh.stop)
	sh.cancel()
	sh.done.Wait()
}

func (sh *shared) stats(st *Stats) {
	sh.mu.Lock()
	st.SharedUp = sh.up
	st.PresenceEntries = 0
	for _, keys := range sh.byNode {
		st.PresenceEntries += len(keys)
	}
	st.PendingWrites = len(sh.order)
	sh.mu.Unlock()
	st.Nodes = 1 + sh.alive()
	st.Lost += sh.lostCache.Load()
	st.Purged = sh.purged.Load()
}
