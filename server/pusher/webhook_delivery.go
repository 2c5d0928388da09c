package pusher

// Webhook delivery: each webhook's bounded queue, its senders (batches,
// signature, retries with backoff), and the Protocol's webhook runtime and
// Shutdown.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

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
