package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatd/bench/nginxconf"
	"chatd/bench/testutil"
	"chatd/server/pusher"

	gorilla "github.com/gorilla/websocket"
)

// startNginx runs nginx in the foreground with its own prefix, config,
// pid file and logs in a temp dir, proxying https://127.0.0.1:PORT to
// upstream, and returns that address and the CA pool of its certificate.
func startNginx(t testing.TB, upstream string) (addr, dir string, roots *x509.CertPool) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatal("nginx is not installed (Debian: apt-get install nginx; .ci/run does it)")
	}
	dir = t.TempDir()
	roots, err = nginxconf.SelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
		confPath, err := nginxconf.Write(dir, addr, upstream, 8192, "info")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		up := false
		for deadline := time.Now().Add(10 * time.Second); !up && time.Now().Before(deadline); {
			select {
			case <-exited:
				deadline = time.Time{} // it failed (a port taken meanwhile?)
				continue
			default:
			}
			if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
				c.Close()
				up = true
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if up {
			t.Cleanup(func() {
				cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
				if t.Failed() {
					log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
					t.Logf("nginx error.log:\n%s", log)
				}
			})
			return addr, dir, roots
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not listen on %s:\n%s", addr, log)
		}
	}
}

// TestWSSThroughNginx: chatd behind a real nginx that terminates TLS, as
// the README's recipe sets it up. The seed's raw /chat over wss:// (with
// gorilla/websocket), pusher-js with forceTLS on private and presence
// channels (node), the signed HTTP API through the proxy, and the per-IP
// cap counting the client address nginx forwards (chatd trusts
// 127.0.0.1/32, nginx's address) rather than nginx's.
func TestWSSThroughNginx(t *testing.T) {
	const perIP = 4
	s := newOpsServer(t, Config{
		MaxConnsPerIP:  perIP,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	addr, dir, roots := startNginx(t, s.Addr().String())
	tlsConf := &tls.Config{RootCAs: roots}
	dialer := func(src string) *gorilla.Dialer {
		return &gorilla.Dialer{
			HandshakeTimeout: 10 * time.Second,
			TLSClientConfig:  tlsConf,
			NetDialContext:   (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}).DialContext,
		}
	}
	wss := "wss://" + addr

	t.Run("raw /chat", func(t *testing.T) {
		a, _, err := dialer("127.0.0.1").Dial(wss+"/chat", nil)
		if err != nil {
			t.Fatalf("wss:// /chat: %v", err)
		}
		defer a.Close()
		b, _, err := dialer("127.0.0.1").Dial(wss+"/chat", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		// The 101 can reach b before the server has put it in the room:
		// a repeats until b hears it.
		b.SetReadDeadline(time.Now().Add(10 * time.Second))
		done := make(chan struct{})
		go func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
					a.WriteMessage(gorilla.TextMessage, []byte("hello over TLS"))
				}
			}
		}()
		_, msg, err := b.ReadMessage()
		close(done)
		if err != nil || string(msg) != "hello over TLS" {
			t.Fatalf("b read %q %v", msg, err)
		}
		// A binary frame, byte for byte.
		payload := []byte{0, 1, 2, 0xff, 'x'}
		b.WriteMessage(gorilla.BinaryMessage, payload)
		for {
			a.SetReadDeadline(time.Now().Add(10 * time.Second))
			op, got, err := a.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if op == gorilla.BinaryMessage {
				if string(got) != string(payload) {
					t.Fatalf("binary %x, want %x", got, payload)
				}
				break
			}
		}
	})

	t.Run("HTTP API", func(t *testing.T) {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
		path := "/apps/chatd/events"
		body := `{"name":"e","channel":"news","data":"{}"}`
		q := url.Values{"auth_key": {"chatd-key"}, "auth_timestamp": {strconv.FormatInt(time.Now().Unix(), 10)},
			"auth_version": {"1.0"}, "body_md5": {pusher.BodyMD5([]byte(body))}}
		m := hmac.New(sha256.New, []byte("chatd-secret"))
		m.Write([]byte(pusher.StringToSign("POST", path, q)))
		q.Set("auth_signature", hex.EncodeToString(m.Sum(nil)))
		resp, err := client.Post("https://"+addr+path+"?"+q.Encode(), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("signed POST %s through nginx: %d", path, resp.StatusCode)
		}
		resp, err = client.Get("https://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/healthz through nginx: %d", resp.StatusCode)
		}
		waitMetric(t, s, `chatd_pusher_api_requests_total{app="chatd",endpoint="events",status="200"}`, 1)
	})

	t.Run("per-IP cap sees the forwarded address", func(t *testing.T) {
		// Every connection reaches chatd from nginx (127.0.0.1); the cap
		// must count the clients' own addresses, 127.0.0.2 and 127.0.0.3.
		var held []*gorilla.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := 0; i < perIP; i++ {
			c, _, err := dialer("127.0.0.2").Dial(wss+"/chat/ip", nil)
			if err != nil {
				t.Fatalf("connection %d of %d from 127.0.0.2: %v", i+1, perIP, err)
			}
			held = append(held, c)
		}
		_, resp, err := dialer("127.0.0.2").Dial(wss+"/chat/ip", nil)
		if err == nil || status(resp) != http.StatusTooManyRequests {
			t.Fatalf("connection %d from 127.0.0.2 through nginx: %v (status %d), want 429", perIP+1, err, status(resp))
		}
		c, _, err := dialer("127.0.0.3").Dial(wss+"/chat/ip", nil)
		if err != nil {
			t.Fatalf("127.0.0.3 refused while 127.0.0.2 is at its cap: the cap counted nginx, not the client: %v", err)
		}
		held = append(held, c)
		if v := mustMetric(t, s, "chatd_rejected_per_ip_total"); v != 1 {
			t.Errorf("chatd_rejected_per_ip_total %v, want 1", v)
		}
	})

	t.Run("pusher-js forceTLS", func(t *testing.T) {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Fatal("node is not installed: the Pusher client tests need Node.js and npm")
		}
		jsDir := filepath.Join("pusher", "jstest")
		if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "pusher-js")); err != nil {
			t.Fatalf("%s/node_modules is missing: run npm ci there (.ci/run does; TestPusherJSClients too)", jsDir)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "wss.mjs")
		cmd.Dir = jsDir
		cmd.Env = append(os.Environ(), "CHATD_TLS_URL=https://"+addr, "NODE_EXTRA_CA_CERTS="+filepath.Join(dir, "ca.pem"))
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node wss.mjs: %v\n%s", err, out)
		}
		t.Logf("%s", out)
		// They came through nginx, over TLS, and were counted per app.
		testutil.CheckFor(t, 10*time.Second, func() error {
			_, body := adminGet(t, s, "/metrics")
			if v, err := metricValue(body, `chatd_pusher_client_events_total{app="chatd"}`); err != nil || v != 1 {
				return fmt.Errorf("client events %v %v", v, err)
			}
			return nil
		})
	})
}
