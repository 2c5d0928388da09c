package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"

	gorilla "github.com/gorilla/websocket"

	"chatd/bench/testutil"
)

// TestAdminAddrDefaultTaken: a default admin address (AdminAddrDefault)
// that another listener has is skipped with one warning naming
// -admin-addr, and the server serves; the same address not marked default
// fails Start with ErrAdminListen (TestAdminAddrInUse).
func TestAdminAddrDefaultTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var logs testutil.LockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s := newTestServer(t, Config{AdminAddr: ln.Addr().String(), AdminAddrDefault: true, Logger: log})
	if a := s.AdminAddr(); a != nil {
		t.Fatalf("admin listener on %v, want none: its address is taken", a)
	}
	var warnings []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=WARN") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "-admin-addr") || !strings.Contains(warnings[0], ln.Addr().String()) {
		t.Fatalf("warnings %q, want one naming -admin-addr and %s", warnings, ln.Addr())
	}
	if !strings.Contains(logs.String(), "admin=off") {
		t.Errorf("start-up line does not say admin=off:\n%s", logs.String())
	}
	c, _, err := gorilla.DefaultDialer.Dial(wsURL(s, "/chat"), nil)
	if err != nil {
		t.Fatalf("dial with the admin address skipped: %v", err)
	}
	c.Close()

	// Not a default: the operator's address, taken, is an error.
	s2, err := New(Config{Addr: "127.0.0.1:0", AdminAddr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); !errors.Is(err, ErrAdminListen) {
		s2.Shutdown(context.Background())
		t.Fatalf("Start with the operator's admin address taken: %v, want ErrAdminListen", err)
	}
}

// TestBuildInfoMetric: /metrics has chatd_build_info 1 with the build's
// labels (here the test binary's: its Go version at least is known).
func TestBuildInfoMetric(t *testing.T) {
	s := newTestServer(t, Config{AdminAddr: "127.0.0.1:0"})
	code, body := adminGet(t, s, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	var line string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "chatd_build_info{") {
			line = l
		}
	}
	for _, want := range []string{`goversion="` + runtime.Version() + `"`, `dirty="`, `revision="`, `revision_time="`, `version="`} {
		if !strings.Contains(line, want) {
			t.Errorf("chatd_build_info line %q lacks %s", line, want)
		}
	}
	if !strings.HasSuffix(line, "} 1") {
		t.Errorf("chatd_build_info line %q: want the value 1", line)
	}
}
