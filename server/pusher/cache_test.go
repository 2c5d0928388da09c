package pusher

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkCacheList verifies the list links and the byte count against the
// map, and returns the channels oldest first.
func checkCacheList(t *testing.T, c *eventCache) []string {
	t.Helper()
	var names []string
	bytes := 0
	var prev *cacheEntry
	for e := c.oldest; e != nil; e = e.next {
		if e.prev != prev {
			t.Fatalf("%s: prev link broken", e.channel)
		}
		if c.entries[e.channel] != e {
			t.Fatalf("%s in the list, not in the map", e.channel)
		}
		names = append(names, e.channel)
		bytes += e.size()
		prev = e
	}
	if c.newest != prev || len(names) != len(c.entries) || bytes != c.bytes {
		t.Fatalf("list of %d (%d bytes) vs map of %d (%d bytes), newest %v", len(names), bytes, len(c.entries), c.bytes, c.newest)
	}
	return names
}

func TestEventCache(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	exp := t0.Add(CacheTTL)
	msg := func(n int) []byte { return []byte(strings.Repeat("m", n)) }
	tests := []struct {
		name          string
		maxN, maxB    int
		ops           func(c *eventCache)
		want          []string // channels, oldest first
		evict, expire uint64
	}{
		{"under the limits", 10, 1 << 20, func(c *eventCache) {
			c.store("a", msg(1), "", exp, 10, 1<<20)
			c.store("b", msg(1), "", exp, 10, 1<<20)
		}, []string{"a", "b"}, 0, 0},
		{"count limit evicts the oldest", 2, 1 << 20, func(c *eventCache) {
			for _, ch := range []string{"a", "b", "c", "d"} {
				c.store(ch, msg(1), "", exp, 2, 1<<20)
			}
		}, []string{"c", "d"}, 2, 0},
		{"a new event moves the channel to the back", 2, 1 << 20, func(c *eventCache) {
			c.store("a", msg(1), "", exp, 2, 1<<20)
			c.store("b", msg(1), "", exp, 2, 1<<20)
			c.store("a", msg(1), "", exp, 2, 1<<20)
			c.store("c", msg(1), "", exp, 2, 1<<20)
		}, []string{"a", "c"}, 1, 0},
		{"byte limit evicts the oldest", 100, 30, func(c *eventCache) {
			for _, ch := range []string{"a", "b", "c"} {
				c.store(ch, msg(9), "", exp, 100, 30) // 10 bytes each
			}
			c.store("d", msg(9), "", exp, 100, 30)
		}, []string{"b", "c", "d"}, 1, 0},
		{"a bigger event replacing a smaller one", 100, 30, func(c *eventCache) {
			c.store("a", msg(9), "", exp, 100, 30)
			c.store("b", msg(9), "", exp, 100, 30)
			c.store("a", msg(20), "", exp, 100, 30) // 21 + 10 > 30
		}, []string{"a"}, 1, 0},
		{"the newest stays even if alone over the byte limit", 100, 30, func(c *eventCache) {
			c.store("a", msg(9), "", exp, 100, 30)
			c.store("big", msg(100), "", exp, 100, 30)
		}, []string{"big"}, 1, 0},
		{"expired entries leave from the front", 100, 1 << 20, func(c *eventCache) {
			c.store("a", msg(1), "", t0.Add(time.Second), 100, 1<<20)
			c.store("b", msg(1), "", t0.Add(2*time.Second), 100, 1<<20)
			c.store("c", msg(1), "", t0.Add(3*time.Second), 100, 1<<20)
			c.expire(t0.Add(2 * time.Second))
		}, []string{"c"}, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c eventCache
			tt.ops(&c)
			got := checkCacheList(t, &c)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") || c.evictions != tt.evict || c.expirations != tt.expire {
				t.Fatalf("cache %v, %d evicted, %d expired; want %v, %d, %d", got, c.evictions, c.expirations, tt.want, tt.evict, tt.expire)
			}
		})
	}
}

func TestEventCacheGet(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var c eventCache
	c.store("a", []byte("m"), "d", t0.Add(time.Minute), 10, 1<<20)
	if e := c.get("a", t0); e == nil || e.data != "d" {
		t.Fatalf("get before expiry = %v", e)
	}
	if e := c.get("b", t0); e != nil {
		t.Fatalf("get of an unknown channel = %v", e)
	}
	if e := c.get("a", t0.Add(time.Minute)); e != nil || len(c.entries) != 0 || c.expirations != 1 {
		t.Fatalf("get at expiry = %v, %d left", e, len(c.entries))
	}
}

// TestCacheLimitsPerApp: an app's max_cache_channels and max_cache_bytes
// bound its cache, apart from other apps', and Stats counts it.
func TestCacheLimitsPerApp(t *testing.T) {
	e := newTestEnv(t,
		App{ID: "small", Key: "ks", Secret: "s", MaxCacheChannels: 3, MaxCacheBytes: 1 << 20},
		App{ID: "tiny", Key: "kt", Secret: "s", MaxCacheBytes: 1000},
	)
	small, tiny := e.p.states["small"], e.p.states["tiny"]
	for i := range 5 {
		e.p.publishEvent(small, event{name: "e", data: "x", channels: []string{"cache-" + strconv.Itoa(i)}})
		e.p.publishEvent(tiny, event{name: "e", data: strings.Repeat("y", 110), channels: []string{"cache-" + strconv.Itoa(i)}})
	}
	if got := checkCacheList(t, &small.cache); strings.Join(got, ",") != "cache-2,cache-3,cache-4" {
		t.Fatalf("small app's cache = %v", got)
	}
	// Each tiny entry is 7 (channel) + 110 (data) + 153 (message) bytes:
	// three fit in 1000.
	if got := checkCacheList(t, &tiny.cache); len(got) != 3 || tiny.cache.bytes > 1000 {
		t.Fatalf("tiny app's cache = %v, %d bytes", got, tiny.cache.bytes)
	}
	st := e.p.Stats()
	if st.CacheChannels != 6 || st.CacheBytes != int64(small.cache.bytes+tiny.cache.bytes) || st.CacheEvictions != 4 {
		t.Fatalf("Stats = %+v", st)
	}
	e.clock.Advance(CacheTTL)
	if _, _, ok := small.cached("cache-4"); ok {
		t.Fatal("cached after the TTL")
	}
	if st := e.p.Stats(); st.CacheChannels != 3 || st.CacheExpirations != 3 {
		t.Fatalf("Stats after small's entries expired = %+v", st)
	}
}
