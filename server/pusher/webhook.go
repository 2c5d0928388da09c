package pusher

// Webhooks: the event names, the settings of an app's webhooks and their
// validation. The events at the state transitions are in webhook_events.go,
// the queues, POSTs and retries in webhook_delivery.go.

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
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
