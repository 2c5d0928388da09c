package bench

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The Pusher Channels mode of the broadcast scenario (-protocol pusher).
// Members are Pusher protocol 7 clients: they connect to
// /app/{key}?protocol=7, wait for pusher:connection_established, subscribe
// to a public channel and wait for pusher_internal:subscription_succeeded,
// and answer pusher:ping with pusher:pong. Senders are not members: each
// is a keep-alive HTTP/1.1 client of the signed HTTP API, publishing
// POST /apps/{app_id}/events {"name":"msg","channel":CH,"data":PAYLOAD}.
// Every member receives {"event":"msg","channel":CH,"data":PAYLOAD} and
// checks PAYLOAD as the raw mode checks a frame: the text payload is plain
// ASCII without quotes or backslashes, so it is a JSON string as it is.
//
// The signing is written from the Pusher HTTP API reference, not taken
// from chatd's server/pusher package, so that a run also checks the
// server against the documented scheme.

// Protocols a target can be loaded over.
const (
	ProtocolRaw    = "raw"    // /chat/{room}: members send frames to each other
	ProtocolPusher = "pusher" // /app/{key}: HTTP API publishers, channel subscribers
)

// chatd's default Pusher app (server/pusher: DefaultAppID, DefaultAppKey,
// DefaultAppSecret); its secret is public.
const (
	DefaultPusherAppID     = "chatd"
	DefaultPusherAppKey    = "chatd-key"
	DefaultPusherAppSecret = "chatd-secret"
	DefaultPusherChannel   = "bench"
)

// pusherEventName is the event the senders publish.
const pusherEventName = "msg"

// publishTimeout bounds one HTTP API call (connect, request, response).
const publishTimeout = 10 * time.Second

// PusherSpec puts a group of members on the Pusher protocol and tells its
// senders how to publish.
type PusherSpec struct {
	AppID   string `json:"app_id"`
	Key     string `json:"key"`
	Secret  string `json:"secret"`
	Channel string `json:"channel"`
}

// pusherPath is the WebSocket path of a Pusher app.
func pusherPath(key string) string { return "/app/" + url.PathEscape(key) + "?protocol=7" }

// validPusherChannel reports whether name is a channel chatbench can
// subscribe to without authorization: a valid Pusher channel name (1 to
// 164 of A-Z a-z 0-9 _ - = @ , . ;) that is not private-, presence- or a
// user's #server-to-user- channel.
func validPusherChannel(name string) error {
	if len(name) == 0 || len(name) > 164 {
		return fmt.Errorf("chatbench: -channel %q: a Pusher channel name has 1 to 164 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-=@,.;", c) >= 0
		if !ok {
			return fmt.Errorf("chatbench: -channel %q: use only A-Z a-z 0-9 _ - = @ , . ;", name)
		}
	}
	if strings.HasPrefix(name, "private-") || strings.HasPrefix(name, "presence-") {
		return fmt.Errorf("chatbench: -channel %q: chatbench subscribes without authorization, so the channel must be public (no private- or presence- prefix)", name)
	}
	return nil
}

// ErrPusher wraps every failed Pusher connect or subscribe.
var ErrPusher = errors.New("chatbench: pusher subscribe failed")

// pusherJoinError is a connection that did not get as far as
// subscription_succeeded; class is its short name for the report.
type pusherJoinError struct {
	class string
	msg   string
	err   error
}

func (e *pusherJoinError) Error() string { return "chatbench: pusher: " + e.msg }
func (e *pusherJoinError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrPusher}
	}
	return []error{ErrPusher, e.err}
}

// pusherEnvelope is a Pusher message; data is usually a JSON string.
type pusherEnvelope struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// dataBytes returns the event data: the string's contents, or the JSON
// text itself when data is not a string.
func (e *pusherEnvelope) dataBytes() ([]byte, error) {
	raw := bytes.TrimSpace(e.Data)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
	return raw, nil
}

// pusherErrorText describes a pusher:error or pusher:subscription_error.
func pusherErrorText(e *pusherEnvelope) (class, text string) {
	data, _ := e.dataBytes()
	var d struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type"`
		Error   string `json:"error"`
		Status  int    `json:"status"`
	}
	_ = json.Unmarshal(data, &d)
	switch {
	case d.Code != nil:
		class = fmt.Sprintf("%s %d", e.Event, *d.Code)
	case d.Status != 0:
		class = fmt.Sprintf("%s %d", e.Event, d.Status)
	default:
		class = e.Event
	}
	return class, fmt.Sprintf("%s: %s", e.Event, strings.TrimSpace(string(data)))
}

var pusherPong = []byte(`{"event":"pusher:pong","data":{}}`)

// pusherJoin takes a freshly upgraded connection through
// connection_established and the subscription to channel, by deadline.
func pusherJoin(c *Conn, channel string, deadline time.Time) error {
	_ = c.nc.SetDeadline(deadline)
	defer func() { _ = c.nc.SetDeadline(time.Time{}) }()
	wait := func(stage string, done func(*pusherEnvelope) bool) error {
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				cls := classifyClose(err)
				return &pusherJoinError{class: stage + ": " + cls, msg: "waiting for " + stage + ": " + err.Error(), err: err}
			}
			if op != OpText {
				continue
			}
			var e pusherEnvelope
			if err := json.Unmarshal(p, &e); err != nil {
				return &pusherJoinError{class: stage + ": not JSON", msg: fmt.Sprintf("waiting for %s: %q is not a Pusher message: %v", stage, p, err)}
			}
			switch {
			case done(&e):
				return nil
			case e.Event == "pusher:ping":
				if err := c.WriteMessage(OpText, pusherPong); err != nil {
					return &pusherJoinError{class: stage + ": " + classifyClose(err), msg: err.Error(), err: err}
				}
			case e.Event == "pusher:error" || e.Event == "pusher:subscription_error":
				cls, text := pusherErrorText(&e)
				return &pusherJoinError{class: cls, msg: "waiting for " + stage + ": " + text}
			}
		}
	}
	if err := wait("pusher:connection_established", func(e *pusherEnvelope) bool {
		return e.Event == "pusher:connection_established"
	}); err != nil {
		return err
	}
	sub, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]string{"channel": channel}})
	if err := c.WriteMessage(OpText, sub); err != nil {
		return &pusherJoinError{class: "pusher:subscribe: " + classifyClose(err), msg: "sending pusher:subscribe: " + err.Error(), err: err}
	}
	return wait("pusher_internal:subscription_succeeded", func(e *pusherEnvelope) bool {
		return e.Event == "pusher_internal:subscription_succeeded" && e.Channel == channel
	})
}

// pusherFast is the prefix of a published event as chatd (and Pusher)
// encode it, {"event":"msg","channel":CH,"data":"; a message that has it,
// ends in "} and has no quote or backslash in between carries its data
// unescaped, and needs no JSON decoding.
func pusherFast(channel string) []byte {
	b, _ := json.Marshal(pusherEventName)
	c, _ := json.Marshal(channel)
	return []byte(`{"event":` + string(b) + `,"channel":` + string(c) + `,"data":"`)
}

// pusherData returns the data of a published event on the group's
// channel (ok), or handles the message itself: a pusher:ping is answered;
// anything else is stray.
func (g *group) pusherData(m *member, p []byte) (data []byte, ok bool) {
	if bytes.HasPrefix(p, g.pusherPrefix) && len(p) >= len(g.pusherPrefix)+2 && bytes.HasSuffix(p, []byte(`"}`)) {
		d := p[len(g.pusherPrefix) : len(p)-2]
		if bytes.IndexByte(d, '"') < 0 && bytes.IndexByte(d, '\\') < 0 {
			return d, true
		}
	}
	var e pusherEnvelope
	if err := json.Unmarshal(p, &e); err != nil {
		m.corrupt.Add(1)
		return nil, false
	}
	switch {
	case e.Event == "pusher:ping":
		_ = m.conn.WriteMessage(OpText, pusherPong)
		return nil, false
	case e.Event == pusherEventName && e.Channel == g.spec.Pusher.Channel:
		d, err := e.dataBytes()
		if err != nil {
			m.corrupt.Add(1)
			return nil, false
		}
		return d, true
	}
	m.stray.Add(1)
	return nil, false
}

// PusherSignature returns the auth_signature of an HTTP API request, per
// the Pusher HTTP API reference: the lowercase hex HMAC-SHA256, keyed by
// the app secret, of METHOD "\n" PATH "\n" QUERY, where QUERY is every
// parameter but auth_signature, keys lowercased, sorted by key, joined as
// k=v with & and not URL-escaped.
func PusherSignature(secret, method, path string, query url.Values) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(pusherStringToSign(method, path, query)))
	return hex.EncodeToString(m.Sum(nil))
}

func pusherStringToSign(method, path string, query url.Values) string {
	var pairs []string
	for k, vs := range query {
		lk := strings.ToLower(k)
		if lk == "auth_signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, lk+"="+v)
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		ki, _, _ := strings.Cut(pairs[i], "=")
		kj, _, _ := strings.Cut(pairs[j], "=")
		if ki != kj {
			return ki < kj
		}
		return pairs[i] < pairs[j]
	})
	return strings.ToUpper(method) + "\n" + path + "\n" + strings.Join(pairs, "&")
}

// publishError is an HTTP API call the server answered with an error.
type publishError struct {
	status int
	body   string
}

func (e *publishError) Error() string {
	return fmt.Sprintf("chatbench: HTTP API answered %d: %s", e.status, e.body)
}

// publisher is one keep-alive HTTP/1.1 client of the HTTP API: one TCP
// connection, requests written by hand, responses parsed by net/http.
type publisher struct {
	addr   string
	spec   *PusherSpec
	path   string // /apps/{id}/events, as signed
	target string // the same, escaped for the request line
	prefix []byte // {"name":"msg","channel":CH,"data":"

	nc   net.Conn
	br   *bufio.Reader
	body []byte
	req  []byte
}

func newPublisher(addr string, spec *PusherSpec) *publisher {
	name, _ := json.Marshal(pusherEventName)
	ch, _ := json.Marshal(spec.Channel)
	path := "/apps/" + spec.AppID + "/events"
	return &publisher{
		addr: addr, spec: spec, path: path,
		target: (&url.URL{Path: path}).EscapedPath(),
		prefix: []byte(`{"name":` + string(name) + `,"channel":` + string(ch) + `,"data":"`),
	}
}

// publish sends one event whose data is the JSON-safe text payload. A
// request that fails on a reused connection (the server may close an idle
// keep-alive connection at any time) is tried once more on a fresh one.
func (p *publisher) publish(payload []byte) error {
	p.body = append(append(append(p.body[:0], p.prefix...), payload...), `"}`...)
	for attempt := 0; ; attempt++ {
		reused := p.nc != nil
		if p.nc == nil {
			nc, err := net.DialTimeout("tcp", p.addr, publishTimeout)
			if err != nil {
				return err
			}
			p.nc, p.br = nc, bufio.NewReaderSize(nc, 4<<10)
		}
		err := p.roundTrip()
		if err == nil {
			return nil
		}
		var pe *publishError
		if errors.As(err, &pe) {
			return err
		}
		p.close()
		if !reused || attempt > 0 {
			return err
		}
	}
}

func (p *publisher) roundTrip() error {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sum := md5.Sum(p.body)
	md := hex.EncodeToString(sum[:])
	sig := PusherSignature(p.spec.Secret, "POST", p.path, url.Values{
		"auth_key": {p.spec.Key}, "auth_timestamp": {ts}, "auth_version": {"1.0"}, "body_md5": {md},
	})
	r := p.req[:0]
	r = append(r, "POST "...)
	r = append(r, p.target...)
	r = append(r, "?auth_key="...)
	r = append(r, url.QueryEscape(p.spec.Key)...)
	r = append(r, "&auth_timestamp="...)
	r = append(r, ts...)
	r = append(r, "&auth_version=1.0&body_md5="...)
	r = append(r, md...)
	r = append(r, "&auth_signature="...)
	r = append(r, sig...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, p.addr...)
	r = append(r, "\r\nUser-Agent: chatbench\r\nContent-Type: application/json\r\nContent-Length: "...)
	r = strconv.AppendInt(r, int64(len(p.body)), 10)
	r = append(r, "\r\n\r\n"...)
	r = append(r, p.body...)
	p.req = r
	_ = p.nc.SetDeadline(time.Now().Add(publishTimeout))
	if _, err := p.nc.Write(r); err != nil {
		return err
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.Close {
		defer p.close()
	}
	if resp.StatusCode != http.StatusOK {
		return &publishError{status: resp.StatusCode, body: strings.TrimSpace(string(body))}
	}
	return nil
}

func (p *publisher) close() {
	if p.nc != nil {
		p.nc.Close()
		p.nc, p.br = nil, nil
	}
}
