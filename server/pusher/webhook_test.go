package pusher

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The webhook delivery itself is tested over real sockets in package
// server (webhook_test.go); these are the config and the cost of the
// hook calls.

func TestLoadAppsFileWebhooks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apps.json")
	doc := `{"apps":[{"id":"1","key":"k","secret":"s","subscription_count":true,
		"webhook_batch_ms":200,"webhook_timeout_ms":1500,"webhook_backoff_ms":100,"webhook_retry_seconds":60,
		"webhook_queue_events":50,"webhook_queue_bytes":65536,
		"webhooks":[{"url":"https://example.com/pusher/webhook","event_types":["member_added","member_removed"],
			"filter":{"channel_name_starts_with":"presence-","channel_name_ends_with":"-eu"},
			"headers":{"X-Api-Token":"t0k3n"}},
			{"url":"http://127.0.0.1:9000/all"}]}]}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	apps, err := LoadAppsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := apps.ByID("1")
	if !a.SubscriptionCount || a.WebhookBatch != 200*time.Millisecond || a.WebhookTimeout != 1500*time.Millisecond ||
		a.WebhookBackoff != 100*time.Millisecond || a.WebhookRetryFor != time.Minute ||
		a.WebhookQueueEvents != 50 || a.WebhookQueueBytes != 65536 || len(a.Webhooks) != 2 {
		t.Fatalf("app %+v", a)
	}
	w := a.Webhooks[0]
	if w.URL != "https://example.com/pusher/webhook" || !slices.Equal(w.EventTypes, []string{"member_added", "member_removed"}) ||
		w.Filter != (WebhookFilter{"presence-", "-eu"}) || w.Headers["X-Api-Token"] != "t0k3n" {
		t.Fatalf("webhook %+v", w)
	}

	b, err := NewApps(App{ID: "2", Key: "k2", Secret: "s2", Webhooks: []Webhook{{URL: "http://h/x"}}})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := b.ByID("2")
	if d.WebhookBatch != 50*time.Millisecond || d.WebhookTimeout != 5*time.Second || d.WebhookBackoff != time.Second ||
		d.WebhookRetryFor != 5*time.Minute || d.WebhookQueueEvents != 10000 || d.WebhookQueueBytes != 4<<20 {
		t.Fatalf("webhook defaults %+v", d)
	}
}

func TestWebhookConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    Webhook
		want string
	}{
		{"no scheme", Webhook{URL: "example.com/hook"}, "not an http"},
		{"ftp", Webhook{URL: "ftp://example.com/hook"}, "not an http"},
		{"event type", Webhook{URL: "http://h/", EventTypes: []string{"channel_occupied", "member_joined"}}, `unknown event type "member_joined"`},
		{"header name", Webhook{URL: "http://h/", Headers: map[string]string{"Bad Name": "v"}}, "invalid header name"},
		{"header value", Webhook{URL: "http://h/", Headers: map[string]string{"X-A": "v\r\nX-B: w"}}, "line break"},
	} {
		_, err := NewApps(App{ID: "1", Key: "k", Secret: "s", Webhooks: []Webhook{tc.w}})
		if !errors.Is(err, ErrInvalidApp) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want ErrInvalidApp with %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewApps(App{ID: "1", Key: "k", Secret: "s", WebhookBackoff: -time.Second}); !errors.Is(err, ErrInvalidApp) {
		t.Errorf("negative backoff: %v", err)
	}
	path := filepath.Join(t.TempDir(), "apps.json")
	os.WriteFile(path, []byte(`[{"id":"1","key":"k","secret":"s","webhooks":[{"url":"http://h/","filter":{"channel_prefix":"x"}}]}]`), 0o600)
	if _, err := LoadAppsFile(path); err == nil || !strings.Contains(err.Error(), "channel_prefix") {
		t.Errorf("misspelt filter field: %v", err)
	}
}

func TestLoadAppsWebhookFlag(t *testing.T) {
	hooks := []Webhook{{URL: "http://127.0.0.1:9/hook"}}
	apps, err := LoadApps("", App{Webhooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := apps.Default(); !ok || len(a.Webhooks) != 1 {
		t.Fatalf("a webhook URL alone goes to the default app: %+v", a)
	}
	if _, err := LoadApps("apps.json", App{Webhooks: hooks}); !errors.Is(err, ErrInvalidApp) {
		t.Fatalf("apps file and webhook flag: %v", err)
	}
}

// TestHookCallsCostNothingWhenUnused: the calls at the state transitions
// are a nil check for an app without webhooks, and allocate nothing for an
// app whose webhooks want none of the event.
func TestHookCallsCostNothingWhenUnused(t *testing.T) {
	for _, app := range []App{
		{ID: "1", Key: "k", Secret: "s"},
		{ID: "1", Key: "k", Secret: "s", Webhooks: []Webhook{{URL: "http://127.0.0.1:9/",
			EventTypes: []string{WebhookClientEvent}, Filter: WebhookFilter{ChannelNameStartsWith: "presence-"}}}},
	} {
		apps, err := NewApps(app)
		if err != nil {
			t.Fatal(err)
		}
		p, err := New(Config{Apps: apps, Rooms: newFakeRooms()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Shutdown(context.Background()) })
		h := p.states["1"].hooks
		if (h == nil) != (len(app.Webhooks) == 0) {
			t.Fatalf("hooks %v for %d webhooks", h, len(app.Webhooks))
		}
		allocs := testing.AllocsPerRun(100, func() {
			h.channelOccupied("private-x")
			h.channelVacated("private-x")
			h.memberAdded("presence-x", "u")
			h.memberRemoved("presence-x", "u")
			h.clientEvent("private-x", "client-e", "{}", "1.2", "")
			h.cacheMiss("cache-x")
			h.subscriptionCount("private-x", 2)
		})
		if allocs != 0 {
			t.Errorf("%d webhooks: %v allocations per round of hook calls, want 0", len(app.Webhooks), allocs)
		}
		if st := p.Stats(); st.WebhookQueued != 0 {
			t.Errorf("queued %d events nobody wants", st.WebhookQueued)
		}
	}
}

func TestWatchlistEventsEncoding(t *testing.T) {
	got := string(encodeWatchlistEvents([]string{"a", "b"}, []string{"c"}))
	want := `{"event":"pusher_internal:watchlist_events","data":"{\"events\":[{\"name\":\"online\",\"user_ids\":[\"a\",\"b\"]},{\"name\":\"offline\",\"user_ids\":[\"c\"]}]}"}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := string(encodeWatchlistEvents(nil, []string{"c"})); !strings.Contains(got, `[{\"name\":\"offline\"`) {
		t.Errorf("offline alone: %s", got)
	}
}
