package pusher

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// BenchmarkClientEventWebhook is the one per-message path that calls a webhook
// hook: a client event relayed on a private channel with 10 subscribers,
// with no webhook and with a client_event webhook (to a local receiver
// answering 200). The difference is what the webhook costs per event on
// the connection's worker: encoding the webhook event and queueing it.
//
//	go test -run '^$' -bench ClientEventWebhook -benchmem ./server/pusher
func BenchmarkClientEventWebhook(b *testing.B) {
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer recv.Close()
	for _, tc := range []struct {
		name  string
		hooks []Webhook
	}{
		{"webhooks=off", nil},
		{"webhooks=client_event", []Webhook{{URL: recv.URL, EventTypes: []string{"client_event"}}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			app := App{ID: "b", Key: "b-key", Secret: "b-secret", ClientEvents: true,
				ClientEventsPerSecond: 1_000_000, Webhooks: tc.hooks, WebhookQueueEvents: 1 << 20, WebhookQueueBytes: 1 << 30}
			reg, err := NewApps(app)
			if err != nil {
				b.Fatal(err)
			}
			clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
			p, err := New(Config{Apps: reg, Rooms: newFakeRooms(), Now: clock.Now})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Shutdown(b.Context())
			a, _ := reg.ByID("b")
			var sender *Session
			for i := 0; i < 10; i++ {
				c := &fakeConn{}
				s := p.Open(c, a.Key, url.Values{"protocol": {"7"}})
				d, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]string{
					"channel": "private-bench", "auth": ChannelAuth(a, s.SocketID(), "private-bench", "")}})
				s.Message(d)
				if sender == nil {
					sender = s
				}
			}
			msg := []byte(`{"event":"client-typing","channel":"private-bench","data":{"who":"ann","typing":true}}`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				clock.Advance(time.Microsecond) // stay within the rate limit
				sender.Message(msg)
			}
		})
	}
}
