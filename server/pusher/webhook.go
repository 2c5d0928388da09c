package pusher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Webhook event names, as Pusher posts them in "events[].name" and as an
// app's Webhook.EventTypes lists them.
const (
	WebhookChannelOccupied   = "channel_occupied"
	WebhookChannelVacated    = "channel_vacated"
	WebhookMemberAdded       = "member_added"
	WebhookMemberRemoved     = "member_removed"
	WebhookClientEvent       = "client_event"
	WebhookCacheMiss         = "cache_miss"
	WebhookSubscriptionCount = "subscription_count"
)

// Defaults of the App webhook settings; a zero field means the default.
const (
	DefaultWebhookBatch       = 50 * time.Millisecond
	DefaultWebhookTimeout     = 5 * time.Second
	DefaultWebhookBackoff     = time.Second
	DefaultWebhookRetryFor    = 5 * time.Minute
	DefaultWebhookQueueEvents = 10000
	DefaultWebhookQueueBytes  = 4 << 20
)

// Delivery constants of every webhook.
const (
	// webhookSenders is the number of goroutines posting for one webhook:
	// one batch can wait out its retries while the next goes out.
	webhookSenders = 2
	// maxBatchEvents and maxBatchBytes bound one POST. A sender holds at
	// most one batch, so a webhook's memory is its queue's limits plus
	// webhookSenders batches.
	maxBatchEvents = 100
	maxBatchBytes  = 256 << 10
	// maxWebhookBackoff caps the doubling of App.WebhookBackoff.
	maxWebhookBackoff = time.Minute
	// maxWebhooks is the number of webhooks one app may have.
	maxWebhooks = 10
)

// eventType indexes webhookEventNames; a set of them is a bit mask.
type eventType uint8

const (
	evChannelOccupied eventType = iota
	evChannelVacated
	evMemberAdded
	evMemberRemoved
	evClientEvent
	evCacheMiss
	evSubscriptionCount
	numEventTypes
)

var webhookEventNames = [numEventTypes]string{
	WebhookChannelOccupied, WebhookChannelVacated, WebhookMemberAdded, WebhookMemberRemoved,
	WebhookClientEvent, WebhookCacheMiss, WebhookSubscriptionCount,
}

const allEventTypes = 1<<numEventTypes - 1

// Webhook is one URL an app's events are posted to, as Pusher does: a
// POST of {"time_ms":...,"events":[...]} with the headers X-Pusher-Key
// (the app key), X-Pusher-Signature (hex HMAC-SHA256 of the body with the
// app secret) and Content-Type: application/json.
type Webhook struct {
	URL string // http:// or https://
	// EventTypes are the events posted (the Webhook* names); empty means
	// all of them.
	EventTypes []string
	// Filter keeps only the events of channels whose names match it.
	Filter WebhookFilter
	// Headers are added to every POST (they cannot replace the three
	// above).
	Headers map[string]string
}

// WebhookFilter selects channels by name; an empty field matches every
// channel, and an event is posted only if it matches both.
type WebhookFilter struct {
	ChannelNameStartsWith string
	ChannelNameEndsWith   string
}

// webhookFile is one webhook in an apps file.
type webhookFile struct {
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types"`
	Filter     struct {
		ChannelNameStartsWith string `json:"channel_name_starts_with"`
		ChannelNameEndsWith   string `json:"channel_name_ends_with"`
	} `json:"filter"`
	Headers map[string]string `json:"headers"`
}

func webhooksFromFile(files []webhookFile) []Webhook {
	var list []Webhook
	for _, f := range files {
		list = append(list, Webhook{
			URL: f.URL, EventTypes: f.EventTypes, Headers: f.Headers,
			Filter: WebhookFilter{f.Filter.ChannelNameStartsWith, f.Filter.ChannelNameEndsWith},
		})
	}
	return list
}

func (a *App) setWebhookDefaults() {
	for _, d := range [...]struct {
		v   *time.Duration
		def time.Duration
	}{
		{&a.WebhookBatch, DefaultWebhookBatch},
		{&a.WebhookTimeout, DefaultWebhookTimeout},
		{&a.WebhookBackoff, DefaultWebhookBackoff},
		{&a.WebhookRetryFor, DefaultWebhookRetryFor},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	setDefault(&a.WebhookQueueEvents, DefaultWebhookQueueEvents)
	setDefault(&a.WebhookQueueBytes, DefaultWebhookQueueBytes)
}

// validateWebhooks checks the webhook settings: URLs, event types, header
// names and values, durations not negative.
func (a *App) validateWebhooks() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: app %q: %s", ErrInvalidApp, a.ID, fmt.Sprintf(format, args...))
	}
	if a.WebhookBatch < 0 || a.WebhookTimeout < 0 || a.WebhookBackoff < 0 || a.WebhookRetryFor < 0 {
		return bad("webhook durations must not be negative")
	}
	if len(a.Webhooks) > maxWebhooks {
		return bad("%d webhooks; at most %d", len(a.Webhooks), maxWebhooks)
	}
	for _, w := range a.Webhooks {
		u, err := url.Parse(w.URL)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return bad("webhook url %q is not an http:// or https:// URL", w.URL)
		}
		if _, err := eventTypes(w.EventTypes); err != nil {
			return bad("webhook %s: %v", w.URL, err)
		}
		for k, v := range w.Headers {
			if k == "" || strings.ContainsFunc(k, func(r rune) bool {
				return r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r)
			}) {
				return bad("webhook %s: invalid header name %q", w.URL, k)
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				return bad("webhook %s: header %s: value has a line break or NUL", w.URL, k)
			}
		}
	}
	return nil
}

// eventTypes returns the set of the named event types; none means all.
func eventTypes(names []string) (uint8, error) {
	if len(names) == 0 {
		return allEventTypes, nil
	}
	var set uint8
	for _, n := range names {
		i := slices.Index(webhookEventNames[:], n)
		if i < 0 {
			return 0, fmt.Errorf("unknown event type %q (want %s)", n, strings.Join(webhookEventNames[:], ", "))
		}
		set |= 1 << i
	}
	return set, nil
}

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

// webhookTarget is one webhook of an app: its bounded queue and the
// sender goroutines that drain it.
type webhookTarget struct {
	h      *appHooks
	hook   Webhook
	types  uint8
	client *http.Client
	wake   chan struct{} // one token: "the queue has events"

	mu     sync.Mutex // a leaf: guards queue, bytes, closed
	queue  [][]byte   // encoded events, oldest first
	bytes  int
	closed bool // Protocol.Shutdown began: nothing more is queued
}

func (t *webhookTarget) wants(typ eventType, channel string) bool {
	return t.types&(1<<typ) != 0 &&
		strings.HasPrefix(channel, t.hook.Filter.ChannelNameStartsWith) &&
		strings.HasSuffix(channel, t.hook.Filter.ChannelNameEndsWith)
}

// enqueue queues one encoded event without blocking: a full queue counts
// it as overflow (and warns, rate-limited) instead.
func (t *webhookTarget) enqueue(ev []byte) {
	app := t.h.a.app
	t.mu.Lock()
	if t.closed || len(t.queue) >= app.WebhookQueueEvents || t.bytes+len(ev) > app.WebhookQueueBytes {
		closed := t.closed
		t.mu.Unlock()
		if closed {
			t.h.dropped.Add(1)
			return
		}
		t.h.overflow.Add(1)
		t.h.warn("pusher: webhook queue full, event dropped", "url", t.hook.URL,
			"max_events", app.WebhookQueueEvents, "max_bytes", app.WebhookQueueBytes)
		return
	}
	t.queue = append(t.queue, ev)
	t.bytes += len(ev)
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// take removes and returns the oldest events, at most one batch; nil if
// the queue is empty.
func (t *webhookTarget) take() [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, size := 0, 0
	for n < len(t.queue) && n < maxBatchEvents && (n == 0 || size+len(t.queue[n]) <= maxBatchBytes) {
		size += len(t.queue[n])
		n++
	}
	if n == 0 {
		return nil
	}
	batch := slices.Clone(t.queue[:n])
	rest := copy(t.queue, t.queue[n:])
	clear(t.queue[rest:])
	t.queue = t.queue[:rest]
	t.bytes -= size
	return batch
}

// dropQueued empties the queue, counting what was in it as dropped.
func (t *webhookTarget) dropQueued() {
	t.mu.Lock()
	n := len(t.queue)
	clear(t.queue)
	t.queue, t.bytes = nil, 0
	t.mu.Unlock()
	t.h.dropped.Add(uint64(n))
}

// run is one sender: woken by a queued event, it waits out the batch
// window so that the events of the next App.WebhookBatch go in the same
// POST, then posts batches until the queue is empty. Once closing is
// closed it posts what is left without waiting and returns when the
// queue is empty; ctx ends it at once.
func (t *webhookTarget) run(ctx context.Context, closing <-chan struct{}) {
	window := time.NewTimer(time.Hour)
	window.Stop()
	defer window.Stop()
	for {
		shutting := false
		select {
		case <-t.wake:
		case <-closing:
			shutting = true
		case <-ctx.Done():
			return
		}
		if !shutting {
			window.Reset(t.h.a.app.WebhookBatch)
			select {
			case <-window.C:
			case <-closing:
				window.Stop()
			case <-ctx.Done():
				return
			}
		}
		for {
			batch := t.take()
			if batch == nil {
				break
			}
			t.post(ctx, batch)
			if ctx.Err() != nil {
				return
			}
		}
		if shutting {
			return
		}
	}
}

// post delivers one batch at least once: a failed POST (an error, a
// timeout, an answer that is not 2xx) is retried after App.WebhookBackoff,
// doubled each time up to a minute, with jitter, for App.WebhookRetryFor;
// then the batch is dropped and counted.
func (t *webhookTarget) post(ctx context.Context, batch [][]byte) {
	h, app := t.h, t.h.a.app
	body := appendWebhookBody(nil, h.a.p.now().UnixMilli(), batch)
	sig := sign(app.Secret, string(body))
	start := time.Now()
	delay := app.WebhookBackoff
	for {
		err := t.try(ctx, body, sig)
		if err == nil {
			h.posts.Add(1)
			h.sent.Add(uint64(len(batch)))
			return
		}
		// Equal jitter: half the delay fixed, half random, so that the
		// retries of many batches do not arrive together.
		wait := delay/2 + rand.N(delay/2+1)
		if ctx.Err() != nil || time.Since(start)+wait > app.WebhookRetryFor {
			h.dropped.Add(uint64(len(batch)))
			h.warn("pusher: webhook dropped", "url", t.hook.URL, "events", len(batch),
				"retried_for", time.Since(start).Round(time.Millisecond), "error", err)
			return
		}
		h.retries.Add(1)
		h.a.p.log.Debug("pusher: webhook failed, retrying", "app", app.ID, "url", t.hook.URL, "in", wait, "error", err)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
		delay = min(2*delay, maxWebhookBackoff)
	}
}

var errWebhookStatus = errors.New("pusher: webhook answered")

// try makes one POST.
func (t *webhookTarget) try(ctx context.Context, body []byte, sig string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.hook.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range t.hook.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Pusher-Key", t.h.a.app.Key)
	req.Header.Set("X-Pusher-Signature", sig)
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	// Read a little of the answer so the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w %s", errWebhookStatus, resp.Status)
	}
	return nil
}

// appendWebhookBody appends {"time_ms":timeMS,"events":[e1,e2,...]}.
func appendWebhookBody(b []byte, timeMS int64, events [][]byte) []byte {
	b = append(b, `{"time_ms":`...)
	b = strconv.AppendInt(b, timeMS, 10)
	b = append(b, `,"events":[`...)
	for i, e := range events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, "]}"...)
}

// webhookRuntime is a Protocol's share of the webhook machinery: the
// senders of every app's webhooks, the subscription count sweep, and
// their shutdown.
type webhookRuntime struct {
	transport *http.Transport
	hooks     []*appHooks // apps with hooks
	ctx       context.Context
	cancel    context.CancelFunc
	closing   chan struct{} // closed when Shutdown begins
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newWebhookRuntime() *webhookRuntime {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = webhookSenders
	ctx, cancel := context.WithCancel(context.Background())
	return &webhookRuntime{transport: tr, ctx: ctx, cancel: cancel, closing: make(chan struct{})}
}

// start runs the senders of every webhook and, if an app counts
// subscriptions, the sweep.
func (rt *webhookRuntime) start() {
	counting := false
	for _, h := range rt.hooks {
		for _, t := range h.targets {
			for range webhookSenders {
				rt.wg.Go(func() { t.run(rt.ctx, rt.closing) })
			}
		}
		counting = counting || h.counts != nil
	}
	if counting {
		rt.wg.Go(rt.sweepCounts)
	}
}

// sweepCounts sends the changed subscription counts of every app once a
// second, until Shutdown.
func (rt *webhookRuntime) sweepCounts() {
	tick := time.NewTicker(subscriptionCountInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			for _, h := range rt.hooks {
				h.sweepCounts()
			}
		case <-rt.closing:
			return
		}
	}
}

// Shutdown stops queueing webhook events and gives the ones pending until
// ctx ends to be delivered (retries included); what is left then is
// dropped and counted (Stats.WebhookEventsDropped). It also stops the
// subscription count sweep. Call it once connections are closed, so that
// their channel_vacated and member_removed go out too. It returns
// ctx.Err() if ctx ended first. Safe to call more than once.
func (p *Protocol) Shutdown(ctx context.Context) error {
	rt := p.webhooks
	rt.closeOnce.Do(func() {
		for _, h := range rt.hooks {
			for _, t := range h.targets {
				t.mu.Lock()
				t.closed = true
				t.mu.Unlock()
			}
		}
		close(rt.closing)
	})
	done := make(chan struct{})
	go func() {
		rt.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		rt.cancel()
		<-done
	}
	rt.cancel()
	for _, h := range rt.hooks {
		for _, t := range h.targets {
			t.dropQueued()
		}
	}
	rt.transport.CloseIdleConnections()
	return err
}
