package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

// TestImportsNothingOfChatd: any package's tests may import testutil, so
// it must not depend on one of them (an import cycle waits there).
func TestImportsNothingOfChatd(t *testing.T) {
	goTool, err := GoTool()
	if err != nil {
		t.Skipf("no go tool: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "chatd/bench/testutil").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "chatd/") && dep != "chatd/bench/testutil" {
			t.Errorf("testutil depends on %s", dep)
		}
	}
}

// TestFrameReadByGobwas: what Frame and RawFrame build is what an
// independent WebSocket implementation reads, in all three length forms.
func TestFrameReadByGobwas(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 0xffff, 0x10000} {
		payload := bytes.Repeat([]byte("abc"), n/3+1)[:n]
		for _, masked := range []bool{true, false} {
			f, err := ws.ReadFrame(bytes.NewReader(Frame(true, 0x4, byte(ws.OpBinary), masked, payload)))
			if err != nil {
				t.Fatalf("%d bytes, masked %v: %v", n, masked, err)
			}
			h := f.Header
			if !h.Fin || h.Rsv != 0x4 || h.OpCode != ws.OpBinary || h.Masked != masked || h.Length != int64(n) {
				t.Errorf("%d bytes, masked %v: header %+v", n, masked, h)
			}
			if masked {
				if h.Mask != Mask {
					t.Errorf("mask %x, want %x", h.Mask, Mask)
				}
				ws.Cipher(f.Payload, h.Mask, 0)
			}
			if !bytes.Equal(f.Payload, payload) {
				t.Errorf("%d bytes, masked %v: payload differs", n, masked)
			}
		}
	}
	// A lying length: the header announces 1000 bytes, 3 follow.
	h, err := ws.ReadHeader(bytes.NewReader(RawFrame(0x80|byte(ws.OpText), true, 1000, []byte("abc"))))
	if err != nil || h.Length != 1000 || !h.Masked {
		t.Errorf("lying header %+v, %v", h, err)
	}
}

// TestUpgradeAgainstGorilla: the hand-made handshake is one a real
// server library accepts, and a refusal reports its status.
func TestUpgradeAgainstGorilla(t *testing.T) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/chat" {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_, p, err := c.ReadMessage()
		if err == nil {
			c.WriteMessage(websocket.TextMessage, append([]byte("echo "), p...))
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, err := Upgrade(nc, addr, "/chat", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(Frame(true, 0, byte(ws.OpText), true, []byte("hi"))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	f, err := ws.ReadFrame(c)
	if err != nil || string(f.Payload) != "echo hi" {
		t.Errorf("answer %q, %v", f.Payload, err)
	}

	nc2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	var ue *UpgradeError
	if _, err := Upgrade(nc2, addr, "/busy", 3*time.Second); !errors.As(err, &ue) || ue.StatusCode != 503 {
		t.Errorf("refused handshake: %v, want an UpgradeError with 503", err)
	}
}

func TestLockedBufferAndCheckFor(t *testing.T) {
	var b LockedBuffer
	go func() {
		for i := range 3 {
			fmt.Fprintf(&b, "line %d\n", i)
		}
	}()
	CheckFor(t, 5*time.Second, func() error {
		if s := b.String(); strings.Count(s, "\n") != 3 {
			return fmt.Errorf("have %q", s)
		}
		return nil
	})
}
