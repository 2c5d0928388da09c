package broker

// The shared state's node liveness: heartbeats, which nodes are alive, who
// speaks for a silent node, and the sweep of a silent node's entries.

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Owns reports whether this node speaks for changes of node: its own, and
// a silent node's when this is the alive node with the smallest ID (the
// one that removes the silent node's entries).
func (b *NATS) Owns(node string) bool {
	if node == b.id {
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
		if n < sh.b.id && sh.aliveLocked(n, now) {
			return false
		}
	}
	return true
}

// beat publishes this node's heartbeat ("up") or goodbye ("down").
func (sh *shared) beat(what string) {
	_ = sh.b.nc.Publish(sh.b.cfg.SubjectPrefix+".node", []byte(what+" "+sh.b.id))
}

func (sh *shared) heartbeat(m *nats.Msg) {
	what, node, ok := strings.Cut(string(m.Data), " ")
	if !ok || node == sh.b.id {
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
	if !known && strings.HasPrefix(node, sh.b.cfg.NodeID+"#") && !strings.Contains(node[len(sh.b.cfg.NodeID)+1:], "#") {
		sh.b.log.Info("another process runs with this -node-id (a rolling restart?); each keeps its own presence",
			"node", sh.b.cfg.NodeID, "identity", sh.b.id, "other", node)
	}
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
		if id == sh.b.id || sh.purging[node] || sh.aliveLocked(id, now) {
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
