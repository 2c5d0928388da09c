package pusher

// Webhook events: an app's hooks, called at the state transitions, and the
// encoding of each event into the matching webhooks' queues.

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// appHooks is where an app's state transitions become webhook events and
// subscription counts. appState.hooks is nil when the app has neither
// webhooks nor SubscriptionCount, and every method is then a nil check.
//
// The entry points (channelOccupied, channelVacated, memberAdded,
// memberRemoved, clientEvent, cacheMiss, subscriptionCount) are called
// where the transition is decided, with appState.mu held (clientEvent
// with Session.mu only). They never block: an event is encoded once and
// appended to each matching webhook's bounded queue under that queue's
// own leaf lock, or counted as overflow; the webhook's sender goroutines
// do the HTTP.
type appHooks struct {
	a       *appState
	types   uint8 // event types at least one webhook wants
	targets []*webhookTarget
	counts  *subscriptionCounts // nil unless App.SubscriptionCount

	posts, sent, retries, dropped, overflow atomic.Uint64
	lastWarn                                atomic.Int64 // unix ns of the last warning logged
}

// newAppHooks returns the hooks of a's app, or nil if it needs none.
func newAppHooks(a *appState, rt *webhookRuntime) *appHooks {
	app := a.app
	if len(app.Webhooks) == 0 && !app.SubscriptionCount {
		return nil
	}
	h := &appHooks{a: a}
	if app.SubscriptionCount {
		h.counts = newSubscriptionCounts()
	}
	for _, w := range app.Webhooks {
		types, _ := eventTypes(w.EventTypes) // checked by Validate
		if !app.SubscriptionCount {
			types &^= 1 << evSubscriptionCount
		}
		t := &webhookTarget{
			h: h, hook: w, types: types,
			wake: make(chan struct{}, 1),
			client: &http.Client{
				Transport: rt.transport,
				Timeout:   app.WebhookTimeout,
				// A redirect is an answer that is not 2xx: retried, not
				// followed (a POST followed after 301/302 becomes a GET).
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			},
		}
		h.types |= types
		h.targets = append(h.targets, t)
	}
	return h
}

// channelOccupied: the channel got its first subscriber.
// countsOn reports whether the app has subscription counts on.
func (h *appHooks) countsOn() bool { return h != nil && h.counts != nil }

// wantsOccupancy reports whether a webhook wants channel_occupied or
// channel_vacated.
func (h *appHooks) wantsOccupancy() bool {
	return h != nil && h.types&(1<<evChannelOccupied|1<<evChannelVacated) != 0
}

func (h *appHooks) channelOccupied(channel string) {
	if h == nil || h.types&(1<<evChannelOccupied) == 0 {
		return
	}
	h.emit(hookEvent{typ: evChannelOccupied, channel: channel})
}

// channelVacated: the channel lost its last subscriber.
func (h *appHooks) channelVacated(channel string) {
	if h == nil || h.types&(1<<evChannelVacated) == 0 {
		return
	}
	h.emit(hookEvent{typ: evChannelVacated, channel: channel})
}

// memberAdded: userID's first connection joined the presence channel.
func (h *appHooks) memberAdded(channel, userID string) {
	if h == nil || h.types&(1<<evMemberAdded) == 0 {
		return
	}
	h.emit(hookEvent{typ: evMemberAdded, channel: channel, userID: userID})
}

// memberRemoved: userID's last connection left the presence channel.
func (h *appHooks) memberRemoved(channel, userID string) {
	if h == nil || h.types&(1<<evMemberRemoved) == 0 {
		return
	}
	h.emit(hookEvent{typ: evMemberRemoved, channel: channel, userID: userID})
}

// clientEvent: the connection socketID sent a client event; userID is its
// member on a presence channel, else "".
func (h *appHooks) clientEvent(channel, event, data, socketID, userID string) {
	if h == nil || h.types&(1<<evClientEvent) == 0 {
		return
	}
	h.emit(hookEvent{typ: evClientEvent, channel: channel, event: event, data: data, socketID: socketID, userID: userID})
}

// cacheMiss: a connection subscribed to a cache channel with no event
// remembered.
func (h *appHooks) cacheMiss(channel string) {
	if h == nil || h.types&(1<<evCacheMiss) == 0 {
		return
	}
	h.emit(hookEvent{typ: evCacheMiss, channel: channel})
}

// subscriptionCount: the channel now has n subscriptions (0 when it was
// vacated). Presence channels are left out, as Pusher does (their count is
// the member list). The count is sent, to subscribers and the webhook, by
// the next sweep (subscriptionCounts), at most once a second per channel.
func (h *appHooks) subscriptionCount(channel string, n int) {
	if h == nil || h.counts == nil || classify(channel)&kindPresence != 0 {
		return
	}
	h.counts.changed(channel, n)
}

// hookEvent is one webhook event before encoding.
type hookEvent struct {
	typ                                    eventType
	channel, userID, event, data, socketID string
	count                                  int
}

// emit encodes e once, if any webhook wants it, and queues it on each that
// does.
func (h *appHooks) emit(e hookEvent) {
	var enc []byte
	for _, t := range h.targets {
		if !t.wants(e.typ, e.channel) {
			continue
		}
		if enc == nil {
			enc = e.appendJSON(nil)
		}
		t.enqueue(enc)
	}
}

// appendJSON appends the event as Pusher posts it:
// {"name":...,"channel":...} plus user_id, event, data, socket_id or
// subscription_count as the type has them.
func (e *hookEvent) appendJSON(b []byte) []byte {
	b = append(b, `{"name":`...)
	b = appendQuoted(b, webhookEventNames[e.typ])
	b = append(b, `,"channel":`...)
	b = appendQuoted(b, e.channel)
	switch e.typ {
	case evClientEvent:
		b = append(b, `,"event":`...)
		b = appendQuoted(b, e.event)
		b = append(b, `,"data":`...)
		b = appendQuoted(b, e.data)
		b = append(b, `,"socket_id":`...)
		b = appendQuoted(b, e.socketID)
	case evSubscriptionCount:
		b = append(b, `,"subscription_count":`...)
		b = strconv.AppendInt(b, int64(e.count), 10)
	}
	if e.userID != "" {
		b = append(b, `,"user_id":`...)
		b = appendQuoted(b, e.userID)
	}
	return append(b, '}')
}

// warn logs at most once a second per app: a full queue or a dead
// endpoint would otherwise log per event.
func (h *appHooks) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := h.lastWarn.Load()
	if now-last < int64(time.Second) || !h.lastWarn.CompareAndSwap(last, now) {
		return
	}
	h.a.p.log.Warn(msg, append(args, "app", h.a.app.ID)...)
}

// stats adds the app's webhook counters to st.
func (h *appHooks) stats(st *Stats) {
	if h == nil {
		return
	}
	st.WebhookPosts += h.posts.Load()
	st.WebhookEventsSent += h.sent.Load()
	st.WebhookRetries += h.retries.Load()
	st.WebhookEventsDropped += h.dropped.Load()
	st.WebhookQueueOverflow += h.overflow.Load()
	for _, t := range h.targets {
		t.mu.Lock()
		st.WebhookQueued += len(t.queue)
		t.mu.Unlock()
	}
}
