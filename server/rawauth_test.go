package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

const testRawSecret = "raw-secret-for-tests"

// mintRaw signs raw token claims with HS256 and secret.
func mintRaw(t testing.TB, secret string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func rawClaimsFor(user string, rooms []string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": user, "rooms": rooms, "exp": exp.Unix()}
}

// dialToken dials path with ?token=tok (tok "": none) using gorilla; on a
// refused handshake it returns the status and the body's one line.
func dialToken(t testing.TB, s *Server, path, tok string) (*websocket.Conn, int, string) {
	t.Helper()
	u := wsURL(s, path)
	if tok != "" {
		u += "?token=" + url.QueryEscape(tok)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(u, nil)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		return c, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return nil, resp.StatusCode, strings.TrimSpace(string(b))
}

func TestRawAuthHandshake(t *testing.T) {
	s := newTestServer(t, Config{RawAuthSecret: testRawSecret, MaxConnsPerUser: 2, AdminAddr: "127.0.0.1:0"})
	hour := time.Now().Add(time.Hour)
	good := mintRaw(t, testRawSecret, rawClaimsFor("alice", []string{"general", "team-*", ""}, hour))
	for _, tc := range []struct {
		name, path, tok string
		status          int
		reason          string
	}{
		{"missing", "/chat/general", "", 401, "token required: connect with ?token=<JWT>"},
		{"malformed", "/chat/general", "not-a-jwt", 401, "token malformed"},
		{"forged", "/chat/general", mintRaw(t, "another secret", rawClaimsFor("alice", []string{"general"}, hour)), 401, "token signature invalid"},
		{"expired", "/chat/general", mintRaw(t, testRawSecret, rawClaimsFor("alice", []string{"general"}, time.Now().Add(-time.Minute))), 401, "token expired"},
		{"no exp", "/chat/general", mintRaw(t, testRawSecret, jwt.MapClaims{"sub": "alice", "rooms": []string{"general"}}), 401, "token claims invalid: sub and exp are required"},
		{"no sub", "/chat/general", mintRaw(t, testRawSecret, jwt.MapClaims{"rooms": []string{"general"}, "exp": hour.Unix()}), 401, "token claims invalid: sub and exp are required"},
		{"alg none", "/chat/general", noneToken(t), 401, "token signature invalid"},
		{"wrong room", "/chat/random", good, 403, `token does not allow room "random"`},
		{"lobby not named", "/chat", mintRaw(t, testRawSecret, rawClaimsFor("bob", []string{"general"}, hour)), 403, `token does not allow room ""`},
		{"room", "/chat/general", good, 101, ""},
		{"prefix", "/chat/team-blue", good, 101, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, status, reason := dialToken(t, s, tc.path, tc.tok)
			if status != tc.status || reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", status, reason, tc.status, tc.reason)
			}
			if c != nil {
				c.Close()
			}
		})
	}
	// The lobby, for a token that names it.
	if _, status, reason := dialToken(t, s, "/chat", good); status != 101 {
		t.Fatalf("lobby: %d %q", status, reason)
	}
	for reason, want := range map[string]float64{"missing": 1, "malformed": 1, "signature": 2, "expired": 1, "claims": 2, "room": 2} {
		waitMetric(t, s, `chatd_raw_auth_rejected_total{reason="`+reason+`"}`, want)
	}
}

// noneToken is an unsigned token (alg "none"), which must never pass.
func noneToken(t testing.TB) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, rawClaimsFor("mallory", []string{"*"}, time.Now().Add(time.Hour))).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRawAuthPerUserCapAndReadOnly(t *testing.T) {
	s := newTestServer(t, Config{RawAuthSecret: testRawSecret, MaxConnsPerUser: 2, AdminAddr: "127.0.0.1:0"})
	hour := time.Now().Add(time.Hour)
	alice := mintRaw(t, testRawSecret, rawClaimsFor("alice", []string{"*"}, hour))
	a1, _, _ := dialToken(t, s, "/chat/room", alice)
	a2, _, _ := dialToken(t, s, "/chat/other", alice)
	if a1 == nil || a2 == nil {
		t.Fatal("alice's first two connections refused")
	}
	if _, status, reason := dialToken(t, s, "/chat/room", alice); status != 429 || reason != "too many connections for this user" {
		t.Fatalf("third connection of alice: %d %q, want 429", status, reason)
	}
	waitMetric(t, s, `chatd_raw_auth_rejected_total{reason="user_conns"}`, 1)
	// Another user is not affected.
	ro := map[string]any{"sub": "reader", "rooms": []string{"room"}, "exp": hour.Unix(), "publish": false}
	reader, status, _ := dialToken(t, s, "/chat/room", mintRaw(t, testRawSecret, ro))
	if reader == nil {
		t.Fatalf("reader refused: %d", status)
	}
	// A slot frees when a connection closes.
	a2.Close()
	testutil.CheckFor(t, 5*time.Second, func() error {
		c, status, reason := dialToken(t, s, "/chat/room", alice)
		if c == nil {
			return fmt.Errorf("after a close: %d %q", status, reason)
		}
		return nil
	})
	waitConns(t, s, 3)
	// The read-only member receives but what it sends is not relayed.
	if err := reader.WriteMessage(websocket.TextMessage, []byte("from the reader")); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, s, "chatd_raw_auth_readonly_dropped_total", 1)
	if err := a1.WriteMessage(websocket.TextMessage, []byte("from alice")); err != nil {
		t.Fatal(err)
	}
	reader.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, m, err := reader.ReadMessage(); err != nil || string(m) != "from alice" {
		t.Fatalf("reader got %q, %v; want alice's message", m, err)
	}
	a1.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, m, err := a1.ReadMessage(); err == nil {
		t.Fatalf("alice got %q: the read-only member's message was relayed", m)
	}
}

func TestRawAuthExpiryCloses(t *testing.T) {
	s := newTestServer(t, Config{RawAuthSecret: testRawSecret, AdminAddr: "127.0.0.1:0"})
	exp := time.Now().Add(2 * time.Second)
	short, _, _ := dialToken(t, s, "/chat/room", mintRaw(t, testRawSecret, rawClaimsFor("shortlived", []string{"room"}, exp)))
	long, _, _ := dialToken(t, s, "/chat/room", mintRaw(t, testRawSecret, rawClaimsFor("longlived", []string{"room"}, time.Now().Add(time.Hour))))
	if short == nil || long == nil {
		t.Fatal("refused")
	}
	short.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := short.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1008 || ce.Text != "token expired" {
		t.Fatalf("short-lived connection: %v, want close 1008 \"token expired\"", err)
	}
	if now := time.Now(); now.Before(exp.Truncate(time.Second)) {
		t.Fatalf("closed at %v, before its token's exp %v", now, exp)
	}
	waitMetric(t, s, `chatd_closed_total{reason="token_expired"}`, 1)
	waitMetric(t, s, "chatd_raw_auth_expired_total", 1)
	// The other connection is open and working.
	if err := long.WriteMessage(websocket.PingMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitConns(t, s, 1)
}

func TestRawAuthES256(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	s := newTestServer(t, Config{RawAuthPublicKey: pub})
	claims := rawClaimsFor("carol", []string{"room"}, time.Now().Add(time.Hour))
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	if c, status, reason := dialToken(t, s, "/chat/room", tok); c == nil {
		t.Fatalf("ES256 token refused: %d %q", status, reason)
	}
	// An HS256 token keyed with the public key's bytes is refused.
	if _, status, _ := dialToken(t, s, "/chat/room", mintRaw(t, string(pub), claims)); status != 401 {
		t.Fatalf("HS256 with the public key as secret: %d, want 401", status)
	}
	if _, err := New(Config{RawAuthPublicKey: []byte("junk")}); err == nil {
		t.Fatal("New accepted a junk public key")
	}
}

// TestBrowserChatToken: the served chat page in headless Chromium, opened
// with ?token=, dials the lobby with it: a good token connects and chats,
// a forged one is refused at the handshake (the browser sees 1006).
func TestBrowserChatToken(t *testing.T) {
	ctx1 := browserStart(t, 60*time.Second)
	s := newTestServer(t, Config{RawAuthSecret: testRawSecret, AdminAddr: "127.0.0.1:0"})
	page := func(tok string) string {
		return "http://" + s.Addr().String() + "/raw?token=" + url.QueryEscape(tok)
	}
	hour := time.Now().Add(time.Hour)
	if err := chromedp.Do(ctx1, chromedp.Navigate(page(mintRaw(t, testRawSecret, rawClaimsFor("ann", []string{""}, hour))))); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := chromedp.NewContext(ctx1)
	defer cancel2()
	if err := chromedp.Do(ctx2, chromedp.Navigate(page(mintRaw(t, testRawSecret, rawClaimsFor("bob", []string{"*"}, hour))))); err != nil {
		t.Fatal(err)
	}
	ctx3, cancel3 := chromedp.NewContext(ctx1)
	defer cancel3()
	if err := chromedp.Do(ctx3, chromedp.Navigate(page(mintRaw(t, "forged", rawClaimsFor("eve", []string{"*"}, hour))))); err != nil {
		t.Fatal(err)
	}
	browserWaitStatus(t, ctx1, "ann", "Connection established!")
	browserWaitStatus(t, ctx2, "bob", "Connection established!")
	browserWaitStatus(t, ctx3, "eve (forged)", "closed (1006)")
	waitConns(t, s, 2)
	browserSend(t, ctx1, "ann", "hello bob")
	browserWaitLogLine(t, ctx2, "bob", "hello bob")
	waitMetric(t, s, `chatd_raw_auth_rejected_total{reason="signature"}`, 1)
}
