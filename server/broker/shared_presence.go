package broker

// The shared state's presence and occupancy entries: this node's desired
// entries and their writer, the presence watcher, and Withdraw.

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

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

// DeletePresence records that this node has no connection of user in the
// channel any more.
func (b *NATS) DeletePresence(app, channel, user string) {
	b.withShared(func(sh *shared) { sh.set(presenceKey(app, channel, user, sh.node), nil) })
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
			if pe.Node == sh.b.id && !pe.Deleted {
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
