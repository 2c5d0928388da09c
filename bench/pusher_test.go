package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"chatd/server/pusher"
)

func TestPusherSignatureDocsVector(t *testing.T) {
	// The worked example of the Pusher HTTP API reference.
	q := url.Values{
		"auth_key":       {"278d425bdf160c739803"},
		"auth_timestamp": {"1353088179"},
		"auth_version":   {"1.0"},
		"body_md5":       {"ec365a775a4cd0599faeb73354201b6f"},
	}
	const want = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	if got := PusherSignature("7ad3773142a6692b25b8", "POST", "/apps/3/events", q); got != want {
		t.Errorf("signature %s, want %s", got, want)
	}
	q.Set("auth_signature", "ignored")
	q.Set("Zeta", "1")
	if got := pusherStringToSign("post", "/p", q); got != "POST\n/p\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&zeta=1" {
		t.Errorf("string to sign %q", got)
	}
}

// The publisher's hand-written requests must be what a Pusher server
// accepts: checked with chatd's own verification, on a key that needs
// escaping in the query string, over one keep-alive connection.
func TestPublisherSignsAndKeepsAlive(t *testing.T) {
	app := &pusher.App{ID: "app-1", Key: "k&y+1", Secret: "s3cret"}
	var conns, requests atomic.Int32
	var bodies []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		q := r.URL.Query()
		switch {
		case r.Method != "POST" || r.URL.Path != "/apps/app-1/events":
			http.Error(w, "wrong request line "+r.Method+" "+r.URL.Path, 404)
		case q.Get("auth_key") != app.Key || q.Get("auth_version") != "1.0" || q.Get("body_md5") != pusher.BodyMD5(body):
			http.Error(w, "wrong parameters "+r.URL.RawQuery, 401)
		case q.Get("auth_signature") != pusher.SignRequest(app.Secret, r.Method, r.URL.Path, q):
			http.Error(w, "wrong signature", 401)
		case time.Since(time.Unix(mustInt(q.Get("auth_timestamp")), 0)).Abs() > time.Minute:
			http.Error(w, "stale timestamp", 401)
		default:
			bodies = append(bodies, string(body))
			w.Write([]byte("{}"))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	p := newPublisher(srv.Listener.Addr().String(), &PusherSpec{AppID: app.ID, Key: app.Key, Secret: app.Secret, Channel: "bench"})
	defer p.close()
	buf := make([]byte, 64)
	for i := 0; i < 3; i++ {
		EncodePayload(buf, Payload{Phase: 1, Sender: 2, Seq: uint32(i), SentNs: 5})
		if err := p.publish(buf); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if conns.Load() != 1 || requests.Load() != 3 {
		t.Errorf("%d requests over %d connections, want 3 over 1", requests.Load(), conns.Load())
	}
	var ev struct{ Name, Channel, Data string }
	if err := json.Unmarshal([]byte(bodies[2]), &ev); err != nil || ev.Name != "msg" || ev.Channel != "bench" {
		t.Fatalf("body %s: %v", bodies[2], err)
	}
	if pl, err := DecodePayload([]byte(ev.Data)); err != nil || pl.Seq != 2 {
		t.Errorf("data %q: %+v, %v", ev.Data, pl, err)
	}
	// The server drops idle keep-alive connections: the next publish
	// reconnects and succeeds.
	srv.CloseClientConnections()
	if err := p.publish(buf); err != nil {
		t.Errorf("publish after the server closed the connection: %v", err)
	}
	// A refusal is reported with the server's words, not retried.
	p.spec = &PusherSpec{AppID: app.ID, Key: app.Key, Secret: "wrong", Channel: "bench"}
	n := requests.Load()
	if err := p.publish(buf); err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "wrong signature") || requests.Load() != n+1 {
		t.Errorf("wrong secret: %v after %d requests", err, requests.Load()-n)
	}
}

func mustInt(s string) int64 {
	var v int64
	for _, c := range s {
		v = v*10 + int64(c-'0')
	}
	return v
}

func TestPusherData(t *testing.T) {
	cli, srv := net.Pipe()
	defer cli.Close()
	defer srv.Close()
	g := &group{spec: OpenSpec{Kind: KindMember, Pusher: &PusherSpec{Channel: "bench"}}, pusherPrefix: pusherFast("bench")}
	m := &member{conn: &Conn{nc: cli}}
	buf := make([]byte, 60)
	EncodePayload(buf, Payload{Phase: 1, Sender: 0, Seq: 7, SentNs: 9})

	// As chatd (and Pusher) encode it: taken as is.
	d, ok := g.pusherData(m, []byte(`{"event":"msg","channel":"bench","data":"`+string(buf)+`"}`))
	if !ok || !bytes.Equal(d, buf) {
		t.Errorf("fast path: %q %v", d, ok)
	}
	// Another member order, escapes: decoded.
	d, ok = g.pusherData(m, []byte(`{"data":"a\"b\u0041", "channel":"bench","event":"msg"}`))
	if !ok || string(d) != `a"bA` {
		t.Errorf("slow path: %q %v", d, ok)
	}
	// Other channels and events are stray; garbage is corrupt.
	if _, ok := g.pusherData(m, []byte(`{"event":"msg","channel":"other","data":"x"}`)); ok || m.stray.Load() != 1 {
		t.Errorf("other channel: ok %v, stray %d", ok, m.stray.Load())
	}
	if _, ok := g.pusherData(m, []byte(`{"event":"msg","channel":"bench","data":"x`)); ok || m.corrupt.Load() != 1 {
		t.Errorf("truncated: ok %v, corrupt %d", ok, m.corrupt.Load())
	}
	// pusher:ping is answered with pusher:pong.
	got := make(chan []byte, 1)
	go func() {
		c := &Conn{nc: srv, br: bufio.NewReader(srv)}
		_, p, err := c.ReadMessage()
		if err != nil {
			got <- nil
			return
		}
		got <- append([]byte(nil), p...)
	}()
	if _, ok := g.pusherData(m, []byte(`{"event":"pusher:ping","data":{}}`)); ok {
		t.Errorf("ping taken as data")
	}
	select {
	case p := <-got:
		if string(p) != `{"event":"pusher:pong","data":{}}` {
			t.Errorf("answer to ping: %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to pusher:ping")
	}
}

func TestPusherChannelAndProtocolFlags(t *testing.T) {
	for _, bad := range []string{"", "private-x", "presence-x", "has space", strings.Repeat("a", 165)} {
		if validPusherChannel(bad) == nil {
			t.Errorf("channel %q accepted", bad)
		}
	}
	for _, good := range []string{"bench", "cache-bench", "a_b-c=d@e,f.g;h"} {
		if err := validPusherChannel(good); err != nil {
			t.Errorf("channel %q: %v", good, err)
		}
	}
	cfg := Config{Scenario: "broadcast", Server: "x {addr}", Protocol: "raw, pusher"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if a, b := cfg.protocols(); a != "raw" || b != "pusher" || !cfg.twoProtocols() || cfg.AppID != "chatd" || cfg.AppKey != "chatd-key" || cfg.AppSecret != "chatd-secret" || cfg.Channel != "bench" {
		t.Errorf("protocols %s,%s; app %s %s %s %s", a, b, cfg.AppID, cfg.AppKey, cfg.AppSecret, cfg.Channel)
	}
	for _, c := range []Config{
		{Scenario: "density", Server: "x {addr}", Protocol: "pusher"},
		{Scenario: "broadcast", Server: "x {addr}", Protocol: "mqtt"},
		{Scenario: "broadcast", Server: "x {addr}", Protocol: "pusher", Binary: true},
		{Scenario: "broadcast", Server: "x {addr}", Protocol: "pusher", AppKey: "a/b"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if got := redactSecret([]string{"chatbench", "-app-secret", "s", "--app-secret=t", "-app-secret", "chatd-secret"}); strings.Join(got, " ") != "chatbench -app-secret REDACTED --app-secret=REDACTED -app-secret chatd-secret" {
		t.Errorf("redacted: %v", got)
	}
}
