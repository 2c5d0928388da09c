package broker

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
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
		node:     enc(b.cfg.NodeID),
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

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func dec(s string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err == nil
}

func presenceKey(app, channel, user, node string) string {
	return enc(app) + "." + enc(channel) + "." + enc(user) + "." + node
}

func occupancyKey(app, channel, node string) string {
	return enc(app) + "." + enc(channel) + "." + node
}

func parsePresenceKey(key string) (app, channel, user, node string, ok bool) {
	t := strings.Split(key, ".")
	if len(t) == 3 { // an occupancy entry
		var ok1, ok2, ok3 bool
		app, ok1 = dec(t[0])
		channel, ok2 = dec(t[1])
		node, ok3 = dec(t[2])
		return app, channel, "", node, ok1 && ok2 && ok3
	}
	if len(t) != 4 {
		return "", "", "", "", false
	}
	var ok1, ok2, ok3, ok4 bool
	app, ok1 = dec(t[0])
	channel, ok2 = dec(t[1])
	user, ok3 = dec(t[2])
	node, ok4 = dec(t[3])
	return app, channel, user, node, ok1 && ok2 && ok3 && ok4
}

// SetPresence records that this node has connections of user in a
// presence channel (info: the user_info of the first). It does not wait;
// the change reaches every node, this one included, through
// SharedHandler.PresenceUpdate.
func (b *NATS) SetPresence(app, channel, user string, info []byte) {
	b.withShared(func(sh *shared) {
		if info == nil {
			info = []byte("null")
		}
		sh.set(presenceKey(app, channel, user, sh.node), info)
	})
}

// SetOccupied records how many subscribers this node has in a channel
// (0: none);
// the change reaches every node through SharedHandler.PresenceUpdate as an
// entry with Occupancy set.
func (b *NATS) SetOccupied(app, channel string, subs int) {
	b.withShared(func(sh *shared) {
		var v []byte
		if subs > 0 {
			v = strconv.AppendInt(nil, int64(subs), 10)
		}
		sh.set(occupancyKey(app, channel, sh.node), v)
	})
}

// Owns reports whether this node speaks for changes of node: its own, and
// a silent node's when this is the alive node with the smallest ID (the
// one that removes the silent node's entries).
func (b *NATS) Owns(node string) bool {
	if node == b.cfg.NodeID {
		return true
	}
	sh := b.getShared()
	if sh == nil {
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := time.Now()
	return !sh.aliveLocked(node, now) && sh.lowestLocked(now)
}

// aliveLocked reports whether node was heard from within the timeout.
func (sh *shared) aliveLocked(node string, now time.Time) bool {
	t, ok := sh.lastSeen[node]
	return ok && now.Sub(t) <= sh.timeout
}

// lowestLocked reports whether this node has the smallest ID of the nodes
// alive: the one that speaks for silent nodes.
func (sh *shared) lowestLocked(now time.Time) bool {
	for n := range sh.lastSeen {
		if n < sh.b.cfg.NodeID && sh.aliveLocked(n, now) {
			return false
		}
	}
	return true
}

// DeletePresence records that this node has no connection of user in the
// channel any more.
func (b *NATS) DeletePresence(app, channel, user string) {
	b.withShared(func(sh *shared) { sh.set(presenceKey(app, channel, user, sh.node), nil) })
}

// PutCache stores the last event of a cache channel for the cluster and
// hands it to the other nodes' subscribers (SharedHandler.CacheUpdate
// there). What the queue cannot take is counted in Stats.Lost.
func (b *NATS) PutCache(e CacheEntry) {
	b.withShared(func(sh *shared) {
		key := enc(e.App) + "." + enc(e.Channel)
		v := make([]byte, 0, len(key)+1+12+len(e.Node)+len(e.Except)+len(e.Data)+len(e.Msg))
		v = append(v, key...)
		v = append(v, 0)
		v = appendBytes(v, e.Node)
		v = appendBytes(v, e.Except)
		v = appendBytes(v, e.Data)
		v = append(v, e.Msg...)
		select {
		case sh.cacheQ <- v:
		default:
			sh.lostCache.Add(1)
		}
	})
}

// Terminate asks every other node to close the connections of user.
func (b *NATS) Terminate(app, user string) {
	b.withShared(func(sh *shared) {
		_ = b.nc.Publish(b.cfg.SubjectPrefix+".pctl", appendBytes(appendBytes(nil, app), user))
	})
}

// Gather asks every other node alive for its answer to query (their
// SharedHandler.Counts) and returns the answers. It waits for as many
// answers as nodes are alive, or until a node that died meanwhile has had
// gatherTimeout to answer.
func (b *NATS) Gather(app string, query []byte) [][]byte {
	sh := b.getShared()
	if sh == nil || !b.nc.IsConnected() {
		return nil
	}
	want := sh.alive()
	if want == 0 {
		return nil
	}
	inbox := b.nc.NewRespInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest(b.cfg.SubjectPrefix+".pq", inbox, appendBytes(nil, app, query...)); err != nil {
		return nil
	}
	deadline := time.Now().Add(gatherTimeout)
	var answers [][]byte
	seen := make(map[string]bool)
	for len(answers) < want {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		node, rest, ok := cutBytes(m.Data)
		if !ok || seen[node] {
			continue
		}
		seen[node] = true
		answers = append(answers, rest)
	}
	return answers
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

// appendBytes appends s with a 4-byte length, then rest.
func appendBytes(b []byte, s string, rest ...byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	b = append(b, s...)
	return append(b, rest...)
}

// cutBytes reads a string appended by appendBytes and returns what follows.
func cutBytes(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 4 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return "", nil, false
	}
	return string(b[4 : 4+n]), b[4+n:], true
}

// set makes key's desired state value (nil: absent) and wakes the writer.
func (sh *shared) set(key string, value []byte) {
	sh.mu.Lock()
	if sh.leaving {
		sh.mu.Unlock()
		return
	}
	if value == nil {
		delete(sh.desired, key)
	} else {
		sh.desired[key] = value
	}
	sh.markLocked(key)
	sh.mu.Unlock()
	select {
	case sh.wake <- struct{}{}:
	default:
	}
}

func (sh *shared) markLocked(key string) {
	if _, ok := sh.dirty[key]; !ok {
		sh.dirty[key] = struct{}{}
		sh.order = append(sh.order, key)
	}
}

// writer stores this node's presence keys: the desired state of each
// dirty key, in the order keys became dirty. A failed write stays dirty
// and is tried again when NATS is back (or a second later).
func (sh *shared) writer() {
	defer sh.done.Done()
	for {
		sh.mu.Lock()
		kv := sh.presence
		var key string
		var value []byte
		if kv != nil && len(sh.order) > 0 {
			key = sh.order[0]
			sh.order = sh.order[1:]
			delete(sh.dirty, key)
			value = sh.desired[key]
		}
		sh.mu.Unlock()
		if key == "" {
			select {
			case <-sh.wake:
			case <-time.After(time.Second):
			case <-sh.stop:
				return
			}
			continue
		}
		ctx, cancel := context.WithTimeout(sh.ctx, kvTimeout)
		var err error
		if value != nil {
			_, err = kv.Put(ctx, key, value)
		} else {
			err = kv.Delete(ctx, key)
		}
		cancel()
		if err != nil {
			sh.b.log.Warn("storing presence failed; will retry", "node", sh.b.cfg.NodeID, "err", err)
			sh.mu.Lock()
			sh.markLocked(key)
			sh.mu.Unlock()
			select {
			case <-sh.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}

// cacheWriter stores cache channel events in order.
func (sh *shared) cacheWriter() {
	defer sh.done.Done()
	for {
		var v []byte
		select {
		case v = <-sh.cacheQ:
		case <-sh.stop:
			return
		}
		sh.mu.Lock()
		kv := sh.cache
		sh.mu.Unlock()
		i := slices.Index(v, 0)
		if kv == nil || i < 0 {
			sh.lostCache.Add(1)
			continue
		}
		ctx, cancel := context.WithTimeout(sh.ctx, kvTimeout)
		_, err := kv.Put(ctx, string(v[:i]), v[i+1:])
		cancel()
		if err != nil {
			sh.lostCache.Add(1)
		}
	}
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

func presenceEntry(e jetstream.KeyValueEntry) (PresenceEntry, bool) {
	app, channel, user, node, ok := parsePresenceKey(e.Key())
	if !ok {
		return PresenceEntry{}, false
	}
	pe := PresenceEntry{App: app, Channel: channel, User: user, Node: node, Occupancy: user == ""}
	if e.Operation() != jetstream.KeyValuePut {
		pe.Deleted = true
	} else if v := e.Value(); string(v) != "null" {
		pe.Info = v
	}
	return pe, true
}

func (sh *shared) watchPresence(w jetstream.KeyWatcher, kv jetstream.KeyValue, ep uint64) {
	var initial []PresenceEntry
	own := make(map[string]bool) // this node's keys in the cluster's state
	sh.mu.Lock()
	sh.byNode = make(map[string]map[string]struct{})
	sh.mu.Unlock()
	inited := false
	for e := range w.Updates() {
		if sh.epoch.Load() != ep {
			continue // stopped: a newer watcher has taken over
		}
		if e == nil {
			if inited {
				continue
			}
			inited = true
			sh.h.PresenceReset(initial)
			initial = nil
			// Store this node's own state over the cluster's: every
			// desired key, and the deletion of every key the cluster
			// holds for this node but the node no longer has.
			sh.mu.Lock()
			for k := range sh.desired {
				sh.markLocked(k)
			}
			for k := range own {
				if _, ok := sh.desired[k]; !ok {
					sh.markLocked(k)
				}
			}
			sh.presence = kv
			sh.mu.Unlock()
			select {
			case sh.wake <- struct{}{}:
			default:
			}
			sh.setUp(true)
			continue
		}
		pe, ok := presenceEntry(e)
		if !ok {
			continue
		}
		sh.index(e.Key(), pe)
		if !inited {
			if pe.Node == sh.b.cfg.NodeID && !pe.Deleted {
				own[e.Key()] = true
			}
			if !pe.Deleted {
				initial = append(initial, pe)
			}
			continue
		}
		sh.h.PresenceUpdate(pe)
		sh.processed.Store(e.Revision())
	}
}

// index keeps the keys of each node, to take a silent node's away.
func (sh *shared) index(key string, pe PresenceEntry) {
	node := key[strings.LastIndexByte(key, '.')+1:]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	keys := sh.byNode[node]
	if pe.Deleted {
		delete(keys, key)
		if len(keys) == 0 {
			delete(sh.byNode, node)
		}
		return
	}
	if keys == nil {
		keys = make(map[string]struct{})
		sh.byNode[node] = keys
	}
	keys[key] = struct{}{}
}

func (sh *shared) watchCache(w jetstream.KeyWatcher, kv jetstream.KeyValue, ep uint64) {
	inited := false
	for e := range w.Updates() {
		if sh.epoch.Load() != ep {
			continue
		}
		if e == nil {
			if !inited {
				inited = true
				sh.mu.Lock()
				sh.cache = kv
				sh.mu.Unlock()
			}
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		t := strings.Split(e.Key(), ".")
		if len(t) != 2 {
			continue
		}
		app, ok1 := dec(t[0])
		channel, ok2 := dec(t[1])
		v := e.Value()
		node, v, ok3 := cutBytes(v)
		except, v, ok4 := cutBytes(v)
		data, v, ok5 := cutBytes(v)
		if !(ok1 && ok2 && ok3 && ok4 && ok5) || (inited && node == sh.b.cfg.NodeID) {
			continue // this node delivered its own events already
		}
		ce := CacheEntry{App: app, Channel: channel, Node: node, Except: except, Data: data, Msg: v, Live: inited}
		sh.h.CacheUpdate(ce)
	}
}

// beat publishes this node's heartbeat ("up") or goodbye ("down").
func (sh *shared) beat(what string) {
	_ = sh.b.nc.Publish(sh.b.cfg.SubjectPrefix+".node", []byte(what+" "+sh.b.cfg.NodeID))
}

func (sh *shared) heartbeat(m *nats.Msg) {
	what, node, ok := strings.Cut(string(m.Data), " ")
	if !ok || node == sh.b.cfg.NodeID {
		return
	}
	sh.mu.Lock()
	if what == "down" {
		delete(sh.lastSeen, node)
		sh.mu.Unlock()
		return
	}
	_, known := sh.lastSeen[node]
	sh.lastSeen[node] = time.Now()
	sh.mu.Unlock()
	if !known {
		// A node new to this one learns of it at once, not a heartbeat
		// later: cluster-wide queries wait for every node alive.
		sh.beat("up")
	}
}

// alive counts the other nodes heard from within the timeout.
func (sh *shared) alive() int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := 0
	now := time.Now()
	for node := range sh.lastSeen {
		if sh.aliveLocked(node, now) {
			n++
		}
	}
	return n
}

// sweep takes away the presence entries of nodes silent for the timeout.
// The alive node with the smallest ID does it, so that it is done once;
// if that node dies meanwhile, the next one does it on a later sweep.
func (sh *shared) sweep() {
	sh.mu.Lock()
	now := time.Now()
	if now.Before(sh.grace) || sh.presence == nil {
		sh.mu.Unlock()
		return
	}
	if !sh.lowestLocked(now) {
		sh.mu.Unlock()
		return
	}
	dead := make(map[string][]string) // node -> its keys
	for node, keys := range sh.byNode {
		id, _ := dec(node)
		if id == sh.b.cfg.NodeID || sh.purging[node] || sh.aliveLocked(id, now) {
			continue
		}
		sh.purging[node] = true
		for k := range keys {
			dead[node] = append(dead[node], k)
		}
	}
	kv := sh.presence
	sh.mu.Unlock()
	for node, keys := range dead {
		id, _ := dec(node)
		sh.b.log.Warn("node silent: removing its presence", "node", id, "entries", len(keys), "after", sh.timeout)
		go func() {
			ctx, cancel := context.WithTimeout(sh.ctx, kvTimeout)
			sh.purged.Add(uint64(len(sh.deleteKeys(ctx, kv, keys))))
			cancel()
			sh.mu.Lock()
			delete(sh.purging, node)
			sh.mu.Unlock()
		}()
	}
}

// deleteKeys deletes presence keys, pipelined: one JetStream publish each,
// then the acks, until ctx ends. It returns the stream sequences of the
// deletions acknowledged.
func (sh *shared) deleteKeys(ctx context.Context, kv jetstream.KeyValue, keys []string) []uint64 {
	var acks []jetstream.PubAckFuture
	for _, k := range keys {
		f, err := sh.js.PublishMsgAsync(&nats.Msg{Subject: "$KV." + kv.Bucket() + "." + k,
			Header: nats.Header{"KV-Operation": []string{"DEL"}}})
		if err == nil {
			acks = append(acks, f)
		}
	}
	var seqs []uint64
	for _, f := range acks {
		select {
		case a := <-f.Ok():
			seqs = append(seqs, a.Sequence)
		case <-f.Err():
		case <-ctx.Done():
			return seqs
		}
	}
	return seqs
}

func (sh *shared) control(m *nats.Msg) {
	app, rest, ok := cutBytes(m.Data)
	if !ok {
		return
	}
	user, _, ok := cutBytes(rest)
	if ok {
		sh.h.Terminate(app, user)
	}
}

func (sh *shared) query(m *nats.Msg) {
	app, q, ok := cutBytes(m.Data)
	if !ok || m.Reply == "" {
		return
	}
	_ = sh.b.nc.Publish(m.Reply, appendBytes(nil, sh.b.cfg.NodeID, sh.h.Counts(app, q)...))
}

// Withdraw removes this node's presence from the cluster at once (for up
// to a second) and records no more: the node is shutting down, its
// connections are closing.
func (b *NATS) Withdraw() { b.withShared((*shared).withdraw) }

func (sh *shared) withdraw() {
	sh.mu.Lock()
	if sh.leaving {
		sh.mu.Unlock()
		return
	}
	sh.leaving = true
	kv := sh.presence
	seen := make(map[string]bool)
	var keys []string
	for k := range sh.byNode[sh.node] {
		seen[k] = true
		keys = append(keys, k)
	}
	for k := range sh.desired {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sh.desired = map[string][]byte{}
	sh.dirty = map[string]struct{}{}
	sh.order = nil
	sh.mu.Unlock()
	if kv == nil || !sh.b.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var last uint64
	for _, seq := range sh.deleteKeys(ctx, kv, keys) {
		last = max(last, seq)
	}
	// This node's own watcher hands the deletions to the Pusher layer too,
	// which posts their webhooks (this node owns them): wait until it has,
	// so that a shutdown flushing webhooks next finds them queued.
	for sh.processed.Load() < last && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
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
