package pusher

import "time"

// eventCache holds the last event of each cache channel of one app, for
// CacheTTL, within the app's MaxCacheChannels and MaxCacheBytes. appState.mu
// guards it.
//
// The entries are in a list, least recently stored first. The TTL is the
// same for every entry, so that is also the order in which they expire:
// dropping expired entries and evicting the oldest over a limit both take
// entries off the front, O(1) each, and a store moves its channel to the
// back. Nothing ever scans the whole cache.
type eventCache struct {
	entries        map[string]*cacheEntry
	oldest, newest *cacheEntry
	bytes          int    // sum of cacheEntry.size
	evictions      uint64 // entries dropped to stay within the limits
	expirations    uint64 // entries dropped after CacheTTL
}

// cacheEntry is the last event of a cache channel, kept encoded (msg, sent
// to new subscribers as is) and as its data (for the HTTP API's
// info=cache).
type cacheEntry struct {
	channel    string
	msg        []byte
	data       string
	expires    time.Time
	prev, next *cacheEntry // towards oldest, towards newest
}

// size is what an entry counts against MaxCacheBytes: the bytes it holds.
func (e *cacheEntry) size() int { return len(e.channel) + len(e.msg) + len(e.data) }

// store remembers msg as the last event of channel until expires, making
// channel the newest entry, then evicts the oldest entries while there are
// more than maxEntries or more than maxBytes in all. The entry just stored
// is never evicted: the last event of a channel is always known, even one
// that alone is over maxBytes.
func (c *eventCache) store(channel string, msg []byte, data string, expires time.Time, maxEntries, maxBytes int) {
	e := c.entries[channel]
	if e != nil {
		c.unlink(e)
		e.msg, e.data, e.expires = msg, data, expires
	} else {
		if c.entries == nil {
			c.entries = make(map[string]*cacheEntry)
		}
		e = &cacheEntry{channel: channel, msg: msg, data: data, expires: expires}
		c.entries[channel] = e
	}
	c.pushNewest(e)
	for c.oldest != e && (len(c.entries) > maxEntries || c.bytes > maxBytes) {
		c.drop(c.oldest)
		c.evictions++
	}
}

// get returns the unexpired last event of channel, or nil. It drops the
// entries expired by now first.
func (c *eventCache) get(channel string, now time.Time) *cacheEntry {
	c.expire(now)
	if e := c.entries[channel]; e != nil && now.Before(e.expires) {
		return e
	}
	return nil
}

// expire drops the entries expired by now: those at the front of the list.
func (c *eventCache) expire(now time.Time) {
	for c.oldest != nil && !now.Before(c.oldest.expires) {
		c.drop(c.oldest)
		c.expirations++
	}
}

func (c *eventCache) pushNewest(e *cacheEntry) {
	e.prev, e.next = c.newest, nil
	if c.newest != nil {
		c.newest.next = e
	} else {
		c.oldest = e
	}
	c.newest = e
	c.bytes += e.size()
}

func (c *eventCache) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.oldest = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.newest = e.prev
	}
	e.prev, e.next = nil, nil
	c.bytes -= e.size()
}

func (c *eventCache) drop(e *cacheEntry) {
	c.unlink(e)
	delete(c.entries, e.channel)
}
