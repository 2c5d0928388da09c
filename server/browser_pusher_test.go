package server

import (
	"bytes"
	"context"
	"image"
	"image/draw"
	"image/png"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserPusherApp drives the Pusher chat app served at / in two
// headless Chromium tabs: alice and bob join one room, see each other in
// the member list, exchange client events, and alice sees bob leave when
// his tab closes.
//
// With CHATD_SCREENSHOT=file.png set, it also saves the two pages side by
// side, taken just before bob leaves.
func TestBrowserPusherApp(t *testing.T) {
	s := newTestServer(t, Config{})
	ctx1 := browserStart(t, 60*time.Second)
	pageURL := "http://" + s.Addr().String() + "/"
	const room = "browser-test"

	// alice is the browser's first tab, bob a second one.
	if err := chromedp.Do(ctx1, chromedp.EmulateViewport(900, 640), chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("alice: navigate to %s: %v", pageURL, err)
	}
	ctx2, cancel2 := chromedp.NewContext(ctx1)
	defer cancel2()
	if err := chromedp.Do(ctx2, chromedp.EmulateViewport(900, 640), chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("bob: navigate to %s: %v", pageURL, err)
	}
	browserWaitStatus(t, ctx1, "alice", "connected")
	browserWaitStatus(t, ctx2, "bob", "connected")
	waitConns(t, s, 2)

	// alice first, so that she sees bob arrive.
	pusherJoin(t, ctx1, "alice", "alice", room)
	pusherWaitMembers(t, ctx1, "alice", "alice")
	pusherJoin(t, ctx2, "bob", "bob", room)
	pusherWaitMembers(t, ctx2, "bob", "alice", "bob")
	pusherWaitMembers(t, ctx1, "alice", "alice", "bob")
	browserWaitLogLine(t, ctx1, "alice", "bob joined")

	// Markup in a message is text, never HTML.
	msg := `hello bob <b>not bold</b> & "quoted"`
	pusherSend(t, ctx1, "alice", msg)
	browserWaitLogLine(t, ctx2, "bob", "alice: "+msg)
	browserWaitLogLine(t, ctx1, "alice", "me: "+msg)
	for _, p := range []struct {
		name string
		ctx  context.Context
	}{{"alice", ctx1}, {"bob", ctx2}} {
		if n, err := chromedp.Run(p.ctx, chromedp.Evaluate[int](`document.querySelectorAll('#log *:not(div)').length`)); err != nil || n != 0 {
			t.Errorf("%s: #log has %d elements other than its lines (%v): user text became markup", p.name, n, err)
		}
	}

	// bob's reply is a barrier: an echo of alice's message to alice would
	// have reached her before it.
	reply := "hi alice"
	pusherSend(t, ctx2, "bob", reply)
	browserWaitLogLine(t, ctx1, "alice", "bob: "+reply)
	browserWaitLogLine(t, ctx2, "bob", "me: "+reply)

	pusherCheckLog(t, ctx1, "alice", []string{
		"you joined room " + room + " as alice",
		"bob joined",
		"me: " + msg,
		"bob: " + reply,
	})
	pusherCheckLog(t, ctx2, "bob", []string{
		"you joined room " + room + " as bob",
		"alice: " + msg,
		"me: " + reply,
	})
	if got, err := chromedp.Run(ctx1, chromedp.Value(chromedp.ID("message"))); err != nil || got != "" {
		t.Errorf("alice: #message = %q, %v after sending; want it cleared", got, err)
	}

	if file := os.Getenv("CHATD_SCREENSHOT"); file != "" {
		pusherScreenshot(t, file, ctx1, ctx2)
	}

	// carol comes late: the app asks for the room's recent messages
	// (chatd_rewind) and shows them after her join, each once.
	ctx3, cancel3 := chromedp.NewContext(ctx1)
	defer cancel3()
	if err := chromedp.Do(ctx3, chromedp.EmulateViewport(900, 640), chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("carol: navigate to %s: %v", pageURL, err)
	}
	browserWaitStatus(t, ctx3, "carol", "connected")
	pusherJoin(t, ctx3, "carol", "carol", room)
	pusherWaitMembers(t, ctx3, "carol", "alice", "bob", "carol")
	browserWaitLogLine(t, ctx3, "carol", "bob: "+reply)
	pusherCheckLog(t, ctx3, "carol", []string{
		"you joined room " + room + " as carol",
		"alice: " + msg,
		"bob: " + reply,
	})
	if err := chromedp.Cancel(ctx3); err != nil {
		t.Fatalf("carol: closing the tab: %v", err)
	}
	pusherWaitMembers(t, ctx1, "alice", "alice", "bob")

	// bob closes his tab: his connection ends and alice sees him leave.
	if err := chromedp.Cancel(ctx2); err != nil {
		t.Fatalf("bob: closing the tab: %v", err)
	}
	pusherWaitMembers(t, ctx1, "alice", "alice")
	browserWaitLogLine(t, ctx1, "alice", "bob left")
	waitConns(t, s, 1)
	browserWaitStatus(t, ctx1, "alice", "connected")
}

// pusherJoin fills in the join form as a user would and submits it.
func pusherJoin(t *testing.T, ctx context.Context, page, name, room string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("join")),
		chromedp.Click(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.SetValue(chromedp.ID("room"), room), // it has a default
		chromedp.Click(chromedp.ID("join")),
	)
	if err != nil {
		t.Fatalf("%s: joining room %q as %q: %v", page, room, name, err)
	}
}

// pusherSend types text into #message and clicks #send, once the page
// has enabled them (it does when the subscription succeeded).
func pusherSend(t *testing.T, ctx context.Context, page, text string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.WaitEnabled(chromedp.ID("message")),
		chromedp.Click(chromedp.ID("message")),
		chromedp.SendKeys(chromedp.ID("message"), text),
		chromedp.Click(chromedp.ID("send")),
	)
	if err != nil {
		t.Fatalf("%s: sending %q: %v", page, text, err)
	}
}

// pusherMembersJS returns the names in the page's member list.
const pusherMembersJS = `Array.from(document.querySelectorAll('#members > li')).map(li => li.textContent)`

// pusherWaitMembers polls until the page's member list holds exactly want,
// in order.
func pusherWaitMembers(t *testing.T, ctx context.Context, page string, want ...string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](
		`(want) => { const got = `+pusherMembersJS+`; return got.length === want.length && got.every((m, i) => m === want[i]) }`,
		chromedp.WithPollingArgs(want),
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(15*time.Second)))
	if err != nil {
		got, gerr := chromedp.Run(ctx, chromedp.Evaluate[[]string](pusherMembersJS))
		lines, _ := browserLogLines(ctx)
		t.Fatalf("%s: #members never listed %q: %v (now %q, %v; log %q)", page, want, err, got, gerr, lines)
	}
}

// pusherCheckLog checks the page's whole log.
func pusherCheckLog(t *testing.T, ctx context.Context, page string, want []string) {
	t.Helper()
	got, err := browserLogLines(ctx)
	if err != nil {
		t.Fatalf("%s: reading #log: %v", page, err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: log = %q, want %q", page, got, want)
	}
}

// pusherScreenshot saves the pages side by side as one PNG.
func pusherScreenshot(t *testing.T, file string, ctxs ...context.Context) {
	t.Helper()
	var shots []image.Image
	width, height := 0, 0
	for i, ctx := range ctxs {
		b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot of page %d: %v", i+1, err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("screenshot of page %d: %v", i+1, err)
		}
		shots = append(shots, img)
		width += img.Bounds().Dx()
		height = max(height, img.Bounds().Dy())
	}
	const gap = 8
	width += gap * (len(shots) - 1)
	out := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(out, out.Bounds(), image.Black, image.Point{}, draw.Src)
	x := 0
	for _, img := range shots {
		r := img.Bounds()
		draw.Draw(out, image.Rect(x, 0, x+r.Dx(), r.Dy()), img, r.Min, draw.Src)
		x += r.Dx() + gap
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, out); err != nil {
		t.Fatalf("encoding the screenshot: %v", err)
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatalf("writing the screenshot: %v", err)
	}
	t.Logf("screenshot of the pages saved to %s", file)
}

// The recovery plugin loads with a <script> tag in a browser and defines
// window.ChatdRecovery, whose attach works on a pusher-js-shaped client.
func TestBrowserRecoveryPluginScriptTag(t *testing.T) {
	s := newTestServer(t, Config{})
	ctx := browserStart(t, 30*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+s.Addr().String()+"/raw")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		const s = document.createElement('script');
		s.src = '/js/chatd-recovery.js';
		document.head.appendChild(s);
		return true;
	})()`)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.PollFunction[bool](`() => typeof window.ChatdRecovery === 'object'`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("window.ChatdRecovery never appeared: %v", err)
	}
	// A stand-in with pusher-js's shape: send_event is wrapped, the
	// transport's raw messages give the position.
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const sent = [];
		const handlers = {};
		const transport = { bind: (ev, f) => { handlers[ev] = f; } };
		const fake = {
			send_event: (name, data) => sent.push([name, data]),
			connection: { connection: { transport }, bind: () => {} },
		};
		const h = ChatdRecovery.attach(fake, { rewind: 3 });
		fake.send_event('pusher:subscribe', { channel: 'c' });
		handlers.message({ data: '{"event":"e","channel":"c","data":"x","chatd_position":"ep-1:7"}' });
		fake.send_event('pusher:subscribe', { channel: 'c' });
		return JSON.stringify([sent, h.position('c')]);
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	want := `[[["pusher:subscribe",{"channel":"c","chatd_rewind":3}],["pusher:subscribe",{"channel":"c","chatd_since":"ep-1:7"}]],"ep-1:7"]`
	if got != want {
		t.Fatalf("plugin in the browser:\n got %s\nwant %s", got, want)
	}
}
