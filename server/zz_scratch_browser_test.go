package server

import (
	"context"
	"testing"
	"time"

	"chatd/server/pusher"

	"github.com/chromedp/chromedp"
)

func TestScratchPusherApp(t *testing.T) {
	app := pusher.DefaultApp()
	app.ActivityTimeout = time.Second
	apps, err := pusher.NewApps(app)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{Apps: apps})
	ctx1 := browserStart(t, 90*time.Second)
	url := "http://" + s.Addr().String() + "/"
	if err := chromedp.Do(ctx1, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	browserWaitStatus(t, ctx1, "a", "connected")
	if _, err := chromedp.Run(ctx1, chromedp.Evaluate[any](`window.pings=0; window.sent=[]; { const o = ws.onmessage; ws.onmessage = e => { if (e.data.includes('pusher:ping')) window.pings++; o(e); }; const s = ws.send; ws.send = function(d) { window.sent.push(d); return s.call(this, d); }; } 1`)); err != nil {
		t.Fatal(err)
	}
	pusherJoin(t, ctx1, "a", "zoë <x>", "r1")
	pusherWaitMembers(t, ctx1, "a", "zoë <x>")
	// rate limit: 15 sends quickly
	_, err = chromedp.Run(ctx1, chromedp.Evaluate[any](`for (let i = 0; i < 15; i++) { $("message").value = "m" + i; $("form").requestSubmit(); } 1`))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	lines, _ := browserLogLines(ctx1)
	t.Logf("log: %q", lines)
	ctx2, c2 := context.WithTimeout(ctx1, 40*time.Second)
	defer c2()
	_ = ctx2
	time.Sleep(35 * time.Second)
	st, _ := chromedp.Run(ctx1, chromedp.Text(chromedp.ID("status")))
	p, _ := chromedp.Run(ctx1, chromedp.Evaluate[int](`window.pings`))
	sent, _ := chromedp.Run(ctx1, chromedp.Evaluate[[]string](`window.sent.filter(s => s.includes('pong')).slice(0,2)`))
	lines, _ = browserLogLines(ctx1)
	t.Logf("after 35s: status %q pings %d pongs %q log tail %q", st, p, sent, lines[len(lines)-3:])
	// shutdown -> 4200
	sctx, sc := context.WithTimeout(context.Background(), 5*time.Second)
	defer sc()
	go s.Shutdown(sctx)
	time.Sleep(1500 * time.Millisecond)
	st, _ = chromedp.Run(ctx1, chromedp.Text(chromedp.ID("status")))
	lines, _ = browserLogLines(ctx1)
	t.Logf("after shutdown: status %q log tail %q", st, lines[len(lines)-3:])
}
