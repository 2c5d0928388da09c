package pusher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"chatd/server/pubhook"
)

// The default app, used when no app is configured. Its secret is public, so
// it is meant for the demo page and local development only; the demo
// endpoints (DemoHandler) are served for this app alone.
const (
	DefaultAppID     = "chatd"
	DefaultAppKey    = "chatd-key"
	DefaultAppSecret = "chatd-secret"
)

// Defaults of the App limits; a zero field in App means the default.
const (
	DefaultMaxPresenceMembers    = 100
	DefaultMaxUserInfoBytes      = 1024
	DefaultMaxPresenceIDLen      = 128
	DefaultMaxEventBytes         = 10240
	DefaultMaxChannelsPerConn    = 100
	DefaultClientEventsPerSecond = 10
	DefaultActivityTimeout       = 120 * time.Second
	DefaultMaxCacheChannels      = 1000
	DefaultMaxCacheBytes         = 16 << 20
)

// App is one Pusher application: credentials, feature switches and limits.
// The zero value of every limit means the documented default.
type App struct {
	ID     string // app_id of the HTTP API (/apps/{id}/...)
	Key    string // public key clients connect with (/app/{key})
	Secret string // signs channel auth, user auth and HTTP API requests

	// ClientEvents lets subscribers of private and presence channels
	// trigger client-* events.
	ClientEvents bool

	MaxPresenceMembers    int           // distinct users per presence channel; zero means 100
	MaxUserInfoBytes      int           // size of a presence member's user_info JSON; zero means 1024
	MaxPresenceIDLen      int           // length of a presence or signed-in user ID; zero means 128
	MaxEventBytes         int           // size of an event's data; zero means 10240 (10 KB)
	MaxChannelsPerConn    int           // subscriptions per connection; zero means 100
	ClientEventsPerSecond int           // client events per connection and second; zero means 10
	ActivityTimeout       time.Duration // advertised in connection_established; zero means 120 s

	// The last events of cache channels are kept for CacheTTL, whether or
	// not anybody is subscribed, within these two limits; storing past
	// either evicts the oldest (least recently published) channels first.
	// The newest event is always kept, even if it alone is over
	// MaxCacheBytes.
	MaxCacheChannels int // cache channels remembered; zero means 1000
	MaxCacheBytes    int // bytes of remembered events (channel, data and encoded message); zero means 16 MiB

	// History: the events of each channel kept for late joiners and for
	// recovery after a reconnect (Config.HistorySize and HistoryTTL are
	// the defaults). Zero means the default; negative turns history off
	// for this app.
	HistorySize int           // events kept per channel
	HistoryTTL  time.Duration // none kept longer

	// SubscriptionCount sends the subscribers of non-presence channels
	// pusher_internal:subscription_count when the channel's count of
	// subscriptions changes (at most once a second per channel), and
	// enables the subscription_count webhook.
	SubscriptionCount bool

	// Webhooks are the URLs the app's events are posted to (see Webhook),
	// with the delivery settings below shared by all of them.
	Webhooks           []Webhook
	WebhookBatch       time.Duration // events within this window go in one POST; zero means 50 ms
	WebhookTimeout     time.Duration // one POST, answer included; zero means 5 s
	WebhookBackoff     time.Duration // wait before the first retry, doubled each time up to 1 min; zero means 1 s
	WebhookRetryFor    time.Duration // how long a batch is retried before it is dropped; zero means 5 min
	WebhookQueueEvents int           // events waiting per webhook, over it new ones are dropped; zero means 10000
	WebhookQueueBytes  int           // their encoded size; zero means 4 MiB

	// PublishHook, when its URL is set, asks the app's backend about
	// each client event before it is delivered (publishhook.go); its
	// POSTs are signed with the app's key and secret (Key and Secret are
	// ignored). Timeout zero means 500 ms; fail-open unless FailClosed.
	PublishHook pubhook.Config
}

// DefaultApp returns the default app (ID chatd, key chatd-key, secret
// chatd-secret, client events on) with the default limits.
func DefaultApp() App {
	a := App{ID: DefaultAppID, Key: DefaultAppKey, Secret: DefaultAppSecret, ClientEvents: true}
	a.setDefaults()
	return a
}

func (a *App) setDefaults() {
	setDefault(&a.MaxPresenceMembers, DefaultMaxPresenceMembers)
	setDefault(&a.MaxUserInfoBytes, DefaultMaxUserInfoBytes)
	setDefault(&a.MaxPresenceIDLen, DefaultMaxPresenceIDLen)
	setDefault(&a.MaxEventBytes, DefaultMaxEventBytes)
	setDefault(&a.MaxChannelsPerConn, DefaultMaxChannelsPerConn)
	setDefault(&a.ClientEventsPerSecond, DefaultClientEventsPerSecond)
	if a.ActivityTimeout == 0 {
		a.ActivityTimeout = DefaultActivityTimeout
	}
	setDefault(&a.MaxCacheChannels, DefaultMaxCacheChannels)
	setDefault(&a.MaxCacheBytes, DefaultMaxCacheBytes)
	a.setWebhookDefaults()
}

func setDefault(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

// Validate reports whether the app is usable: ID, key and secret set, ID and
// key free of characters that cannot appear in a URL path segment or a room
// key, limits not negative.
func (a *App) Validate() error {
	if a.ID == "" || a.Key == "" || a.Secret == "" {
		return fmt.Errorf("%w: id, key and secret are required (id %q)", ErrInvalidApp, a.ID)
	}
	for _, f := range [...]struct{ name, v string }{{"id", a.ID}, {"key", a.Key}} {
		if strings.ContainsFunc(f.v, func(r rune) bool {
			return r <= ' ' || r == '/' || r == '?' || r == '#' || r == '%' || r == 0x7f
		}) {
			return fmt.Errorf("%w: app %s %q has a space, control character, '/', '?', '#' or '%%'", ErrInvalidApp, f.name, f.v)
		}
	}
	limits := [...]struct {
		name string
		v    int
	}{
		{"max_presence_members", a.MaxPresenceMembers},
		{"max_user_info_bytes", a.MaxUserInfoBytes},
		{"max_presence_id_len", a.MaxPresenceIDLen},
		{"max_event_bytes", a.MaxEventBytes},
		{"max_channels_per_conn", a.MaxChannelsPerConn},
		{"client_events_per_second", a.ClientEventsPerSecond},
		{"max_cache_channels", a.MaxCacheChannels},
		{"max_cache_bytes", a.MaxCacheBytes},
		{"webhook_queue_events", a.WebhookQueueEvents},
		{"webhook_queue_bytes", a.WebhookQueueBytes},
	}
	for _, l := range limits {
		if l.v < 0 {
			return fmt.Errorf("%w: app %q: %s is negative", ErrInvalidApp, a.ID, l.name)
		}
	}
	if a.ActivityTimeout < 0 || a.ActivityTimeout%time.Second != 0 {
		return fmt.Errorf("%w: app %q: activity timeout %v is not a whole, positive number of seconds", ErrInvalidApp, a.ID, a.ActivityTimeout)
	}
	if a.PublishHook.URL != "" {
		if err := a.PublishHook.Validate(); err != nil {
			return fmt.Errorf("%w: app %q: publish hook: %v", ErrInvalidApp, a.ID, err)
		}
	}
	return a.validateWebhooks()
}

// MaxMessageBytes is the largest frame this app's connections need: room
// for a client event with MaxEventBytes of data, even if every byte of it
// is JSON-escaped once, plus the envelope. The engine applies it through
// Session.MaxMessageBytes: chatd's server accepts frames of up to the
// larger of its own MaxMessage and this on the app's connections.
func (a *App) MaxMessageBytes() int { return 2*a.MaxEventBytes + 4096 }

// Apps is the immutable registry of configured apps, looked up by key (for
// WebSocket connections) and by ID (for the HTTP API).
type Apps struct {
	list  []*App // every app, in the order given
	byKey map[string]*App
	byID  map[string]*App
}

// NewApps validates the apps, fills in default limits and indexes them. With
// no app at all it returns the registry of the default app alone.
func NewApps(apps ...App) (*Apps, error) {
	if len(apps) == 0 {
		apps = []App{DefaultApp()}
	}
	r := &Apps{byKey: make(map[string]*App, len(apps)), byID: make(map[string]*App, len(apps))}
	for i := range apps {
		a := apps[i]
		a.setDefaults()
		if err := a.Validate(); err != nil {
			return nil, err
		}
		if _, dup := r.byID[a.ID]; dup {
			return nil, fmt.Errorf("%w: id %q", ErrDuplicateApp, a.ID)
		}
		if _, dup := r.byKey[a.Key]; dup {
			return nil, fmt.Errorf("%w: key %q", ErrDuplicateApp, a.Key)
		}
		r.list = append(r.list, &a)
		r.byID[a.ID] = &a
		r.byKey[a.Key] = &a
	}
	return r, nil
}

// List returns the apps in the order given; the caller must not modify them.
func (r *Apps) List() []*App { return r.list }

// ByKey returns the app with the given key.
func (r *Apps) ByKey(key string) (*App, bool) {
	a, ok := r.byKey[key]
	return a, ok
}

// ByID returns the app with the given ID.
func (r *Apps) ByID(id string) (*App, bool) {
	a, ok := r.byID[id]
	return a, ok
}

// Default returns the default app if it is configured with its published
// credentials (the demo endpoints serve only that app).
func (r *Apps) Default() (*App, bool) {
	a, ok := r.byID[DefaultAppID]
	if !ok || a.Key != DefaultAppKey || a.Secret != DefaultAppSecret {
		return nil, false
	}
	return a, true
}

// appFile is one app in a config file. Durations are whole seconds.
type appFile struct {
	ID                    string `json:"id"`
	Key                   string `json:"key"`
	Secret                string `json:"secret"`
	ClientEvents          bool   `json:"client_events"`
	MaxPresenceMembers    int    `json:"max_presence_members"`
	MaxUserInfoBytes      int    `json:"max_user_info_bytes"`
	MaxPresenceIDLen      int    `json:"max_presence_id_len"`
	MaxEventBytes         int    `json:"max_event_bytes"`
	MaxChannelsPerConn    int    `json:"max_channels_per_conn"`
	ClientEventsPerSecond int    `json:"client_events_per_second"`
	ActivityTimeout       int    `json:"activity_timeout"`
	MaxCacheChannels      int    `json:"max_cache_channels"`
	MaxCacheBytes         int    `json:"max_cache_bytes"`
	SubscriptionCount     bool   `json:"subscription_count"`
	// Pointers: absent means the server's default, 0 turns history off.
	HistorySize       *int `json:"history_size"`
	HistoryTTLSeconds *int `json:"history_ttl_seconds"`

	Webhooks            []webhookFile `json:"webhooks"`
	WebhookBatchMS      int           `json:"webhook_batch_ms"`
	WebhookTimeoutMS    int           `json:"webhook_timeout_ms"`
	WebhookBackoffMS    int           `json:"webhook_backoff_ms"`
	WebhookRetrySeconds int           `json:"webhook_retry_seconds"`
	WebhookQueueEvents  int           `json:"webhook_queue_events"`
	WebhookQueueBytes   int           `json:"webhook_queue_bytes"`

	PublishHookURL        string `json:"publish_hook_url"`
	PublishHookTimeoutMS  int    `json:"publish_hook_timeout_ms"`
	PublishHookFailClosed bool   `json:"publish_hook_fail_closed"`
}

// LoadAppsFile reads apps from a JSON file, either {"apps": [...]} or a bare
// array. Each app is an object with the fields id, key, secret,
// client_events, and optionally the limits max_presence_members,
// max_user_info_bytes, max_presence_id_len, max_event_bytes,
// max_channels_per_conn, client_events_per_second, activity_timeout
// (seconds), max_cache_channels and max_cache_bytes; the switch
// subscription_count; webhooks (a list of {"url", "event_types", "filter":
// {"channel_name_starts_with", "channel_name_ends_with"}, "headers"}) and
// their settings webhook_batch_ms, webhook_timeout_ms, webhook_backoff_ms,
// webhook_retry_seconds, webhook_queue_events and webhook_queue_bytes; and
// publish_hook_url, publish_hook_timeout_ms and publish_hook_fail_closed. A
// missing or zero limit means its default. Unknown fields are an error, so a misspelt
// limit is not silently ignored.
func LoadAppsFile(path string) (*Apps, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pusher: read apps file: %w", err)
	}
	var files []appFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		err = dec.Decode(&files)
	} else {
		var doc struct {
			Apps []appFile `json:"apps"`
		}
		err = dec.Decode(&doc)
		files = doc.Apps
	}
	if err != nil {
		return nil, fmt.Errorf("pusher: parse apps file %s: %w", path, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: apps file %s lists no app", ErrInvalidApp, path)
	}
	apps := make([]App, len(files))
	for i, f := range files {
		for _, h := range [...]struct {
			name string
			v    *int
		}{{"history_size", f.HistorySize}, {"history_ttl_seconds", f.HistoryTTLSeconds}} {
			if h.v != nil && *h.v < 0 {
				return nil, fmt.Errorf("%w: app %q: %s is negative (0 turns history off) in %s", ErrInvalidApp, f.ID, h.name, path)
			}
		}
		apps[i] = App{
			ID: f.ID, Key: f.Key, Secret: f.Secret, ClientEvents: f.ClientEvents,
			MaxPresenceMembers:    f.MaxPresenceMembers,
			MaxUserInfoBytes:      f.MaxUserInfoBytes,
			MaxPresenceIDLen:      f.MaxPresenceIDLen,
			MaxEventBytes:         f.MaxEventBytes,
			MaxChannelsPerConn:    f.MaxChannelsPerConn,
			ClientEventsPerSecond: f.ClientEventsPerSecond,
			ActivityTimeout:       time.Duration(f.ActivityTimeout) * time.Second,
			MaxCacheChannels:      f.MaxCacheChannels,
			MaxCacheBytes:         f.MaxCacheBytes,
			SubscriptionCount:     f.SubscriptionCount,
			HistorySize:           historyFromFile(f.HistorySize),
			HistoryTTL:            time.Duration(historyFromFile(f.HistoryTTLSeconds)) * time.Second,
			Webhooks:              webhooksFromFile(f.Webhooks),
			WebhookBatch:          time.Duration(f.WebhookBatchMS) * time.Millisecond,
			WebhookTimeout:        time.Duration(f.WebhookTimeoutMS) * time.Millisecond,
			WebhookBackoff:        time.Duration(f.WebhookBackoffMS) * time.Millisecond,
			WebhookRetryFor:       time.Duration(f.WebhookRetrySeconds) * time.Second,
			WebhookQueueEvents:    f.WebhookQueueEvents,
			WebhookQueueBytes:     f.WebhookQueueBytes,
			PublishHook: pubhook.Config{URL: f.PublishHookURL, FailClosed: f.PublishHookFailClosed,
				Timeout: time.Duration(f.PublishHookTimeoutMS) * time.Millisecond},
		}
	}
	r, err := NewApps(apps...)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return r, nil
}

// historyFromFile maps an apps file's history setting to App's: absent is
// zero (the default), 0 is -1 (off).
func historyFromFile(v *int) int {
	switch {
	case v == nil:
		return 0
	case *v == 0:
		return -1
	}
	return *v
}

// LoadApps is what a command line needs: the apps of file when it is set,
// else the single app given by flags when any of its ID, key or secret is
// set, else the default app. The single app's Webhooks apply to the default
// app too when only they are set.
func LoadApps(file string, single App) (*Apps, error) {
	flagsSet := single.ID != "" || single.Key != "" || single.Secret != ""
	switch {
	case file != "" && (flagsSet || len(single.Webhooks) > 0):
		return nil, fmt.Errorf("%w: give either an apps file or one app's id, key, secret and webhook URL, not both", ErrInvalidApp)
	case file != "":
		return LoadAppsFile(file)
	case flagsSet:
		return NewApps(single)
	case len(single.Webhooks) > 0 || single.PublishHook.URL != "":
		app := DefaultApp()
		app.Webhooks = single.Webhooks
		app.PublishHook = single.PublishHook
		return NewApps(app)
	default:
		return NewApps()
	}
}
