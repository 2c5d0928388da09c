package broker

// The shared state's cache channels: the last event of each, stored and
// watched.

import (
	"context"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

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
		if !(ok1 && ok2 && ok3 && ok4 && ok5) || (inited && node == sh.b.id) {
			continue // this node delivered its own events already
		}
		ce := CacheEntry{App: app, Channel: channel, Node: node, Except: except, Data: data, Msg: v, Live: inited}
		sh.h.CacheUpdate(ce)
	}
}
