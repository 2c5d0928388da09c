package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/server/pusher"

	gorilla "github.com/gorilla/websocket"
)

// ---- helpers ----

// newOpsServer is newTestServer with the admin listener on a free port.
func newOpsServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.AdminAddr = "127.0.0.1:0"
	s := newTestServer(t, cfg)
	if s.AdminAddr() == nil {
		t.Fatal("AdminAddr is nil with Config.AdminAddr set")
	}
	return s
}

// adminGet fetches path from s's admin listener.
func adminGet(t testing.TB, s *Server, path string) (int, string) {
	t.Helper()
	return getURL(t, "http://"+s.AdminAddr().String()+path)
}

func getURL(t testing.TB, u string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricValue returns the sample "series value" of a scrape (series is the
// name with its labels as exposed), or an error naming it.
func metricValue(scrape, series string) (float64, error) {
	sc := bufio.NewScanner(strings.NewReader(scrape))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in the scrape", series)
}

func mustMetric(t testing.TB, s *Server, series string) float64 {
	t.Helper()
	_, body := adminGet(t, s, "/metrics")
	v, err := metricValue(body, series)
	if err != nil {
		t.Fatalf("%v:\n%s", err, body)
	}
	return v
}

// waitMetric waits until series has the value want.
func waitMetric(t testing.TB, s *Server, series string, want float64) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, func() error {
		_, body := adminGet(t, s, "/metrics")
		v, err := metricValue(body, series)
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("%s = %v, want %v", series, v, want)
		}
		return nil
	})
}

// dialFrom opens a gorilla/websocket connection to s's path from the
// loopback source address src (127.0.0.0/8 is all local), with extra
// request headers.
func dialFrom(src, u string, h http.Header) (*gorilla.Conn, *http.Response, error) {
	d := gorilla.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDialContext:   (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}).DialContext,
	}
	return d.Dial(u, h)
}

// status is a refused handshake's HTTP status, 0 without a response.
func status(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// ---- metrics ----

// TestMetricsPromtool scrapes /metrics on the admin port while clients
// broadcast in rooms of several sizes and Pusher clients subscribe, and has
// Prometheus's own promtool check the exposition (HELP and TYPE for every
// metric, naming, histogram consistency). It must contain the Go runtime
// and process collectors and both histograms with observations.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed (Debian: apt-get install prometheus; .ci/run does it)")
	}
	s := newOpsServer(t, Config{})

	// Load: rooms of 1, 5 and 30 members, each member sending.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var conns []*gorilla.Conn
	for _, room := range []struct {
		name string
		n    int
	}{{"solo", 1}, {"five", 5}, {"thirty", 30}} {
		for i := 0; i < room.n; i++ {
			c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat/"+room.name), nil)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			wg.Add(2)
			go func() { // reader: keeps up
				defer wg.Done()
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for j := 0; ctx.Err() == nil; j++ {
					if err := c.WriteMessage(gorilla.TextMessage, []byte("load "+strconv.Itoa(j))); err != nil {
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
		}
	}
	defer func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	// A Pusher client too, for the per-app series.
	pc, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/chatd-key?protocol=7"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.WriteMessage(gorilla.TextMessage, []byte(`{"event":"pusher:subscribe","data":{"channel":"news"}}`))

	// A public port no longer serves /metrics.
	if code, _ := getURL(t, "http://"+s.Addr().String()+"/metrics"); code != http.StatusNotFound {
		t.Errorf("public port /metrics: %d, want 404", code)
	}

	var scrape string
	testutil.CheckFor(t, 10*time.Second, func() error {
		_, scrape = adminGet(t, s, "/metrics")
		for _, series := range []string{`chatd_fanout_seconds_count{room_size="1"}`, `chatd_fanout_seconds_count{room_size="2-10"}`,
			`chatd_fanout_seconds_count{room_size="11-100"}`, `chatd_pusher_subscriptions{app="chatd"}`} {
			if v, err := metricValue(scrape, series); err != nil || v < 1 {
				return fmt.Errorf("%s: %v %v", series, v, err)
			}
		}
		return nil
	})
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\nscrape:\n%s", err, out, scrape)
	}
	for _, want := range []string{
		"# TYPE go_goroutines gauge", "# TYPE go_memstats_heap_alloc_bytes gauge",
		"# TYPE process_resident_memory_bytes gauge", "# TYPE process_open_fds gauge", "# TYPE process_cpu_seconds_total counter",
		"# TYPE chatd_handshake_seconds histogram", "# TYPE chatd_fanout_seconds histogram",
		"# HELP chatd_connections ", "# TYPE chatd_connections gauge", "# TYPE chatd_closed_total counter",
		`chatd_pusher_connections{app="chatd"} 1`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	// Every metric family has its HELP line (promtool warns; be strict).
	for _, line := range strings.Split(scrape, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ = strings.Cut(name, " ")
			if !strings.Contains(scrape, "# HELP "+name+" ") {
				t.Errorf("%s has no HELP", name)
			}
		}
	}
	// The counters are the server's own.
	hs, _ := metricValue(scrape, "chatd_handshake_seconds_count")
	up, _ := metricValue(scrape, "chatd_upgraded_total")
	if hs != up || up < 37 {
		t.Errorf("chatd_handshake_seconds_count %v, chatd_upgraded_total %v: want equal, at least 37", hs, up)
	}
	if d, _ := metricValue(scrape, "chatd_deliveries_total"); d < 1 {
		t.Errorf("chatd_deliveries_total %v under load", d)
	}
	if n, _ := metricValue(scrape, "chatd_connections"); n != 37 {
		t.Errorf("chatd_connections %v, want 37", n)
	}
}

// TestFanoutMetricsDoNotAllocate: what the delivery path does for metrics
// (count a batch's deliveries, observe its fan-out time) allocates nothing.
func TestFanoutMetricsDoNotAllocate(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	start := s.since()
	if n := testing.AllocsPerRun(1000, func() {
		s.stats.Deliveries.Add(512)
		s.observeFanout(start, 512)
		s.observeHandshake(start)
	}); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

// TestPusherAppMetrics: the per-app Pusher series follow connections,
// subscriptions, presence members, client events, auth failures and HTTP
// API requests.
func TestPusherAppMetrics(t *testing.T) {
	s := newOpsServer(t, Config{})
	app := "chatd"
	dial := func() (*gorilla.Conn, string) {
		c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/app/chatd-key?protocol=7"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		// {"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",...}"}
		i := bytes.Index(msg, []byte(`socket_id\":\"`))
		if i < 0 {
			t.Fatalf("no socket_id in %s", msg)
		}
		rest := msg[i+len(`socket_id\":\"`):]
		return c, string(rest[:bytes.IndexByte(rest, '\\')])
	}
	auth := func(socketID, channel, data string) string {
		m := hmac.New(sha256.New, []byte("chatd-secret"))
		m.Write([]byte(socketID + ":" + channel))
		if data != "" {
			m.Write([]byte(":" + data))
		}
		return "chatd-key:" + hex.EncodeToString(m.Sum(nil))
	}
	send := func(c *gorilla.Conn, msg string) {
		if err := c.WriteMessage(gorilla.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	a, sa := dial()
	b, sb := dial()
	data := `{"user_id":"ann"}`
	send(a, fmt.Sprintf(`{"event":"pusher:subscribe","data":{"channel":"presence-room","auth":%q,"channel_data":%q}}`, auth(sa, "presence-room", data), data))
	data = `{"user_id":"bob"}`
	send(b, fmt.Sprintf(`{"event":"pusher:subscribe","data":{"channel":"presence-room","auth":%q,"channel_data":%q}}`, auth(sb, "presence-room", data), data))
	send(b, `{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"chatd-key:00"}}`) // refused
	waitMetric(t, s, `chatd_pusher_connections{app="chatd"}`, 2)
	waitMetric(t, s, `chatd_pusher_subscriptions{app="chatd"}`, 2)
	waitMetric(t, s, `chatd_pusher_presence_members{app="chatd"}`, 2)
	waitMetric(t, s, `chatd_pusher_auth_failures_total{app="chatd",kind="socket"}`, 1)
	send(a, `{"event":"client-typing","channel":"presence-room","data":{}}`)
	waitMetric(t, s, `chatd_pusher_client_events_total{app="chatd"}`, 1)

	// HTTP API: one signed request, one with a wrong signature.
	path := "/apps/" + app + "/channels"
	q := url.Values{"auth_key": {"chatd-key"}, "auth_timestamp": {strconv.FormatInt(time.Now().Unix(), 10)}, "auth_version": {"1.0"}}
	m := hmac.New(sha256.New, []byte("chatd-secret"))
	m.Write([]byte(pusher.StringToSign("GET", path, q)))
	q.Set("auth_signature", hex.EncodeToString(m.Sum(nil)))
	if code, body := getURL(t, "http://"+s.Addr().String()+path+"?"+q.Encode()); code != 200 {
		t.Fatalf("signed GET %s: %d %s", path, code, body)
	}
	q.Set("auth_signature", strings.Repeat("0", 64))
	if code, _ := getURL(t, "http://"+s.Addr().String()+path+"?"+q.Encode()); code != 401 {
		t.Fatalf("badly signed GET %s: %d, want 401", path, code)
	}
	waitMetric(t, s, `chatd_pusher_api_requests_total{app="chatd",endpoint="channels",status="200"}`, 1)
	waitMetric(t, s, `chatd_pusher_api_requests_total{app="chatd",endpoint="channels",status="401"}`, 1)
	waitMetric(t, s, `chatd_pusher_auth_failures_total{app="chatd",kind="api"}`, 1)

	b.Close()
	waitMetric(t, s, `chatd_pusher_connections{app="chatd"}`, 1)
	waitMetric(t, s, `chatd_pusher_subscriptions{app="chatd"}`, 1)
	waitMetric(t, s, `chatd_pusher_presence_members{app="chatd"}`, 1)
}

// ---- the admin listener ----

// TestAdminListener: /metrics, /debug/pprof/, /healthz and /readyz on the
// admin port; none of them but /healthz on the public one; no admin
// listener without Config.AdminAddr; /readyz 503 from the moment Shutdown
// begins, through ShutdownDelay, while clients are still served.
func TestAdminListener(t *testing.T) {
	if s := newTestServer(t, Config{}); s.AdminAddr() != nil {
		t.Fatalf("admin listener %v without Config.AdminAddr", s.AdminAddr())
	}
	s, err := New(Config{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", ShutdownDelay: 600 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/healthz": "ok", "/readyz": "ready", "/debug/pprof/": "goroutine", "/metrics": "chatd_connections",
	} {
		if code, body := adminGet(t, s, path); code != 200 || !strings.Contains(body, want) {
			t.Errorf("admin %s: %d %.200q, want 200 with %q", path, code, body, want)
		}
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 404, "/metrics": 404, "/debug/pprof/": 404} {
		if code, _ := getURL(t, "http://"+s.Addr().String()+path); code != want {
			t.Errorf("public %s: %d, want %d", path, code, want)
		}
	}
	if v := mustMetric(t, s, "chatd_ready"); v != 1 {
		t.Errorf("chatd_ready %v before shutdown", v)
	}
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitConns(t, s, 1)
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if code, _ := adminGet(t, s, "/readyz"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d after Shutdown began", code)
		}
		return nil
	})
	// Still serving during the delay: the client is open and a new one
	// gets in.
	c2, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	if err != nil {
		t.Fatalf("new client during the shutdown delay: %v", err)
	}
	c2.Close()
	if code, _ := adminGet(t, s, "/healthz"); code != 200 {
		t.Errorf("/healthz %d while draining: the process still serves", code)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = c.ReadMessage()
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) || ce.Code != gorilla.CloseGoingAway {
		t.Fatalf("want close 1001 after the delay, got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAdminAddrInUse: a taken admin address fails Start, and leaves the
// public address free again.
func TestAdminAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := New(Config{Addr: "127.0.0.1:0", AdminAddr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "admin") {
		s.Shutdown(context.Background())
		t.Fatalf("Start with a taken admin address: %v, want an error naming the admin listener", err)
	}
	if err := s.Shutdown(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Shutdown after a failed Start: %v, want ErrClosed", err)
	}
}

// ---- limits ----

// TestMaxConnsPerIP: the cap counts WebSocket connections per client
// address: over it HTTP 429, other addresses unaffected, a closed
// connection frees its place, and the refusals are counted.
func TestMaxConnsPerIP(t *testing.T) {
	s := newOpsServer(t, Config{MaxConnsPerIP: 2})
	u := wsURL(s, "/chat/ip")
	var held []*gorilla.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		c, _, err := dialFrom("127.0.0.2", u, nil)
		if err != nil {
			t.Fatalf("connection %d of 2 from 127.0.0.2: %v", i+1, err)
		}
		held = append(held, c)
	}
	_, resp, err := dialFrom("127.0.0.2", u, nil)
	if err == nil || status(resp) != http.StatusTooManyRequests {
		t.Fatalf("third connection from 127.0.0.2: %v %v, want HTTP 429", err, resp)
	}
	// Pusher connections count too (the cap is the engine's).
	if _, resp, err := dialFrom("127.0.0.2", wsURL(s, "/app/chatd-key?protocol=7"), nil); err == nil || status(resp) != 429 {
		t.Fatalf("Pusher connection over the cap: %v, want HTTP 429", err)
	}
	c, _, err := dialFrom("127.0.0.3", u, nil)
	if err != nil {
		t.Fatalf("another address is refused: %v", err)
	}
	held = append(held, c)
	// Forwarding headers from an untrusted peer change nothing.
	if _, resp, err := dialFrom("127.0.0.2", u, http.Header{"X-Forwarded-For": {"192.0.2.9"}, "X-Real-Ip": {"192.0.2.9"}}); err == nil || status(resp) != 429 {
		t.Fatalf("X-Forwarded-For from an untrusted peer was believed: %v", err)
	}
	if v := mustMetric(t, s, "chatd_rejected_per_ip_total"); v != 3 {
		t.Errorf("chatd_rejected_per_ip_total %v, want 3", v)
	}
	if v := mustMetric(t, s, "chatd_client_addresses"); v != 2 {
		t.Errorf("chatd_client_addresses %v, want 2", v)
	}
	held[0].Close()
	testutil.CheckFor(t, 10*time.Second, func() error {
		c, _, err := dialFrom("127.0.0.2", u, nil)
		if err != nil {
			return err
		}
		held = append(held, c)
		return nil
	})
}

// TestTrustedProxies: behind a trusted proxy the cap counts the forwarded
// client address, X-Forwarded-For's right-most untrusted entry first, then
// X-Real-IP.
func TestTrustedProxies(t *testing.T) {
	s := newOpsServer(t, Config{MaxConnsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	u := wsURL(s, "/chat/proxied")
	var held []*gorilla.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	ok := func(h http.Header) {
		t.Helper()
		c, _, err := dialFrom("127.0.0.1", u, h)
		if err != nil {
			t.Fatalf("%v: %v", h, err)
		}
		held = append(held, c)
	}
	refused := func(h http.Header) {
		t.Helper()
		if _, resp, err := dialFrom("127.0.0.1", u, h); err == nil || status(resp) != 429 {
			t.Fatalf("%v: %v, want 429", h, err)
		}
	}
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	ok(xff("198.51.100.1"))
	refused(xff("198.51.100.1"))
	ok(xff("198.51.100.2"))
	// A spoofed left-most entry does not help: the proxy's own entry is
	// right of it.
	refused(xff("203.0.113.77, 198.51.100.1"))
	ok(http.Header{"X-Real-Ip": {"198.51.100.3"}})
	refused(http.Header{"X-Real-Ip": {"198.51.100.3"}})
	// No header: the proxy itself is the client.
	ok(nil)
	refused(nil)
}

func TestClientAddrFromHeaders(t *testing.T) {
	s := &Server{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}}
	peer := netip.MustParseAddr("10.1.1.1")
	for _, tc := range []struct {
		name    string
		peer    netip.Addr
		headers [][2]string
		want    string
	}{
		{"no headers", peer, nil, "10.1.1.1"},
		{"one entry", peer, [][2]string{{"X-Forwarded-For", "192.0.2.1"}}, "192.0.2.1"},
		{"right-most untrusted", peer, [][2]string{{"X-Forwarded-For", "192.0.2.66, 192.0.2.1, 10.2.2.2"}}, "192.0.2.1"},
		{"later header line wins", peer, [][2]string{{"X-Forwarded-For", "192.0.2.1"}, {"x-forwarded-for", "192.0.2.2, 10.0.0.3"}}, "192.0.2.2"},
		{"later line all trusted", peer, [][2]string{{"X-Forwarded-For", "192.0.2.1"}, {"X-Forwarded-For", "10.0.0.3"}}, "192.0.2.1"},
		{"all trusted: left-most", peer, [][2]string{{"X-Forwarded-For", "10.9.9.9, 10.0.0.3"}}, "10.9.9.9"},
		{"with port", peer, [][2]string{{"X-Forwarded-For", "192.0.2.1:4711"}}, "192.0.2.1"},
		{"IPv6 in brackets", peer, [][2]string{{"X-Forwarded-For", "[2001:db8::1]"}}, "2001:db8::1"},
		{"IPv6 with port", peer, [][2]string{{"X-Forwarded-For", "[2001:db8::1]:80"}}, "2001:db8::1"},
		{"garbage stops the walk", peer, [][2]string{{"X-Forwarded-For", "192.0.2.1, nonsense"}}, "10.1.1.1"},
		{"X-Real-IP", peer, [][2]string{{"X-Real-IP", "192.0.2.5"}}, "192.0.2.5"},
		{"X-Forwarded-For over X-Real-IP", peer, [][2]string{{"X-Real-IP", "192.0.2.5"}, {"X-Forwarded-For", "192.0.2.6"}}, "192.0.2.6"},
		{"untrusted peer", netip.MustParseAddr("192.0.2.99"), [][2]string{{"X-Forwarded-For", "192.0.2.1"}, {"X-Real-IP", "192.0.2.5"}}, "192.0.2.99"},
		{"IPv6 trusted peer", netip.MustParseAddr("::1"), [][2]string{{"X-Forwarded-For", "::ffff:192.0.2.7"}}, "192.0.2.7"},
	} {
		ca := clientAddr{peer: tc.peer, viaProxy: s.trusted(tc.peer)}
		for _, h := range tc.headers {
			ca.header(s, []byte(h[0]), []byte(h[1]))
		}
		if got := ca.addr().String(); got != tc.want {
			t.Errorf("%s: client %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestMessageRateLimit: a raw connection may send its burst at once and
// keeps sending at the rate; past it it is closed with 1008 "rate limit",
// the message over the limit is not delivered, and the close is counted.
func TestMessageRateLimit(t *testing.T) {
	s := newOpsServer(t, Config{MaxMessageRate: 5, MaxMessageBurst: 5})
	u := wsURL(s, "/chat/rl")
	reader, _, err := gorilla.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	sender, _, err := gorilla.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	waitConns(t, s, 2)
	got := make(chan string, 100)
	go func() {
		for {
			_, m, err := reader.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			got <- string(m)
		}
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("reader got %q, want %q", m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("reader did not get %q", want)
		}
	}
	// Under the limit: the burst, then after more than a second (which
	// only ever adds tokens, up to the burst) another burst.
	for round := 0; round < 2; round++ {
		for i := 0; i < 5; i++ {
			sender.WriteMessage(gorilla.TextMessage, []byte(fmt.Sprintf("m%d.%d", round, i)))
		}
		for i := 0; i < 5; i++ {
			expect(fmt.Sprintf("m%d.%d", round, i))
		}
		time.Sleep(1100 * time.Millisecond)
	}
	if v := mustMetric(t, s, "chatd_rate_limited_total"); v != 0 {
		t.Fatalf("chatd_rate_limited_total %v under the limit", v)
	}
	// Over it: 6 at once (a few ms cannot refill a whole token at 5/s...
	// unless the machine stalls for 200 ms, so send 20).
	for i := 0; i < 20; i++ {
		if err := sender.WriteMessage(gorilla.TextMessage, []byte("flood "+strconv.Itoa(i))); err != nil {
			break
		}
	}
	sender.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err = sender.ReadMessage()
		if err != nil {
			break
		}
	}
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) || ce.Code != gorilla.ClosePolicyViolation || ce.Text != "rate limit" {
		t.Fatalf("flooding sender: %v, want close 1008 \"rate limit\"", err)
	}
	n := 0
	timeout := time.After(2 * time.Second)
drain:
	for {
		select {
		case m, ok := <-got:
			if !ok {
				break drain
			}
			if strings.HasPrefix(m, "flood ") {
				n++
			}
		case <-timeout:
			break drain
		}
	}
	if n < 5 || n >= 20 {
		t.Errorf("reader got %d of 20 flood messages, want the burst (5, or a few more) and not all", n)
	}
	waitMetric(t, s, "chatd_rate_limited_total", 1)
	waitMetric(t, s, `chatd_closed_total{reason="rate_limited"}`, 1)
}

// TestRateLimitAllocatesNothing: the token bucket is arithmetic on two
// fields of Conn.
func TestRateLimitAllocatesNothing(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", MaxMessageRate: 1000, MaxMessageBurst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{srv: s}
	c.rlTokens = 1000 * 1000
	if n := testing.AllocsPerRun(1000, func() { s.rawProto.allowMessage(c) }); n != 0 {
		t.Fatalf("%v allocations per message", n)
	}
	// The bucket empties after its burst.
	c.rlTokens, c.rlAt = 3000, uint32(s.since()/1e6)
	s.cfg.MaxMessageRate = 1 // one token a second: nothing refills here
	n := 0
	for s.rawProto.allowMessage(c) {
		n++
	}
	if n != 3 {
		t.Fatalf("a bucket of 3 allowed %d", n)
	}
}

// BenchmarkFanoutMetrics: what a fan-out batch pays for metrics, its
// start time taken at publish and, once written, its deliveries counted
// and its time observed.
func BenchmarkFanoutMetrics(b *testing.B) {
	s, err := New(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	// every: each batch timed; sampled: what the fan-out does, one batch
	// in fanoutSample timed (Room.publish, observeFanout).
	for _, sample := range []uint32{1, fanoutSample} {
		name := "every"
		if sample > 1 {
			name = "sampled"
		}
		b.Run(name, func(b *testing.B) {
			var batches uint32
			b.ReportAllocs()
			for b.Loop() {
				var start int64
				if batches%sample == 0 {
					start = s.since()
				}
				batches++
				s.stats.Deliveries.Add(100)
				s.observeFanout(start, 100)
			}
		})
	}
}

// BenchmarkRateLimit: the token bucket, per message.
func BenchmarkRateLimit(b *testing.B) {
	s, err := New(Config{Addr: "127.0.0.1:0", MaxMessageRate: 1_000_000, MaxMessageBurst: 1_000_000})
	if err != nil {
		b.Fatal(err)
	}
	c := &Conn{srv: s}
	c.rlTokens = 1_000_000 * 1000
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.rawProto.allowMessage(c)
	}
}
