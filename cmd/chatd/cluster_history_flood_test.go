package main

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"chatd/bench/testutil"

	"github.com/gorilla/websocket"
)

// TestChatdClusterHistoryFlood: with history on, a burst from one node
// into a room whose readers are on another node must not outrun the
// stream's per-room window: the readers' node, whose feed of the room
// falls behind, holds the producers back (through the same signal as a
// member behind), so no reader that keeps up is closed and every one gets
// every message, in order. Before, the stream dropped what the readers'
// node had not delivered yet and the node closed its members (1008).
func TestChatdClusterHistoryFlood(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatd")
	natsBin := testutil.BuildInTempDir(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port := freePort(t)
	startNATSProc(t, natsBin, port, t.TempDir())
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	a := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "a")
	b := startChatd(t, bin, "-addr", "127.0.0.1:0", "-nats", url, "-node-id", "b")
	const readers, total = 4, 30000
	var conns []*websocket.Conn
	for i := 0; i < readers; i++ {
		c, resp, err := websocket.DefaultDialer.Dial("ws://"+b.addr+"/chat/flood", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		defer c.Close()
		conns = append(conns, c)
	}
	sender, resp, err := websocket.DefaultDialer.Dial("ws://"+a.addr+"/chat/flood", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer sender.Close()
	time.Sleep(time.Second) // both nodes follow the room
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(90 * time.Second))
			for n := 1; n <= total; n++ {
				_, p, err := c.ReadMessage()
				if err != nil {
					errs <- fmt.Errorf("reader %d after %d of %d: %v", i, n-1, total, err)
					return
				}
				if got, _ := strconv.Atoi(string(p[:len(p)-200])); got != n {
					errs <- fmt.Errorf("reader %d: message %d is %d", i, n, got)
					return
				}
			}
		}()
	}
	pad := make([]byte, 200)
	for i := range pad {
		pad[i] = 'x'
	}
	for n := 1; n <= total; n++ {
		msg := append([]byte(strconv.Itoa(n)), pad...)
		if err := sender.WriteMessage(websocket.TextMessage, msg); err != nil {
			t.Fatalf("send %d: %v", n, err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
