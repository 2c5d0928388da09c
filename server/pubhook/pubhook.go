package pubhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultTimeout     = 500 * time.Millisecond
	DefaultConcurrency = 64
	DefaultQueue       = 10000
	// maxAnswer bounds the answer read: a replacement is a message, and
	// messages are capped far below this by the engine.
	maxAnswer = 1 << 20
)

// ErrBadConfig is returned by Config.Validate.
var ErrBadConfig = errors.New("pubhook: invalid config")

// Config configures a Hook.
type Config struct {
	// URL is where messages are POSTed (http:// or https://).
	URL string
	// Key and Secret sign each POST as Pusher signs webhooks: the header
	// X-Pusher-Key is Key, X-Pusher-Signature the hex HMAC-SHA256 of the
	// body with Secret.
	Key, Secret string
	// Timeout bounds one POST, answer included. Zero means 500 ms.
	Timeout time.Duration
	// FailClosed rejects a message whose POST timed out, failed or was
	// answered with anything but one of the three actions; false (the
	// default, fail-open) lets it through unchanged.
	FailClosed bool
	// Concurrency is how many POSTs may be in flight. Zero means 64.
	Concurrency int
	// Queue is how many messages may wait for a POST. Zero means 10000.
	Queue int
}

// Validate reports a URL that is not http(s) or a negative field.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: URL %q is not an http:// or https:// URL", ErrBadConfig, c.URL)
	}
	if c.Timeout < 0 || c.Concurrency < 0 || c.Queue < 0 {
		return fmt.Errorf("%w: timeout, concurrency and queue must not be negative", ErrBadConfig)
	}
	return nil
}

// Message is what the backend is asked about.
type Message struct {
	Kind     string // "raw" (a raw room's message) or "client_event" (Pusher)
	Room     string // raw: the room's name, "" for the lobby
	Channel  string // Pusher: the channel
	Event    string // Pusher: the client-* event name
	UserID   string // who sent it, when known ("" otherwise)
	SocketID string // Pusher: the socket_id; raw: the connection's ID
	Data     string // the message
	Encoding string // "base64" when Data is binary encoded so; "" for text
}

// body is the JSON POSTed.
type body struct {
	TimeMS   int64   `json:"time_ms"`
	Kind     string  `json:"kind"`
	Room     *string `json:"room,omitempty"`
	Channel  string  `json:"channel,omitempty"`
	Event    string  `json:"event,omitempty"`
	UserID   string  `json:"user_id,omitempty"`
	SocketID string  `json:"socket_id,omitempty"`
	Data     string  `json:"data"`
	Encoding string  `json:"encoding,omitempty"`
}

// Action is what happens to a message.
type Action uint8

const (
	Allow   Action = iota // published as it is
	Replace               // Decision.Data published instead
	Reject                // dropped; Decision.Reason says why
)

// Failure says why a message was decided by the failure policy.
type Failure uint8

const (
	Answered  Failure = iota // the backend decided
	Timeout                  // no answer within Config.Timeout
	Error                    // the POST failed or was not answered 200
	BadAnswer                // a 200 that is not one of the three actions
	QueueFull                // submitted over Config.Queue: not asked
)

var failureNames = [...]string{"answered", "timeout", "error", "bad_answer", "queue_full"}

func (f Failure) String() string { return failureNames[f] }

// Decision is the answer about one message.
type Decision struct {
	Action  Action
	Data    string // Replace: what to publish
	Reason  string // Reject: the backend's reason (or the failure's)
	Failure Failure
	// Last: no later message of the same sender was waiting when the
	// callback began (one may be submitted while it runs).
	Last bool
}

// Stats are a Hook's counters.
type Stats struct {
	Allowed, Replaced, Rejected uint64    // decided by the backend
	Failed                      [5]uint64 // by Failure (Answered unused)
	FailedOpen, FailedClosed    uint64    // failures let through / rejected
	Cancelled                   uint64    // dropped: their sender went away
	Posts                       uint64    // POSTs made
	PostNanos                   uint64    // their total duration
	Waiting                     int       // messages waiting for a POST now
}

// Hook asks the backend about messages, one sender's at a time in order.
type Hook struct {
	cfg    Config
	client *http.Client

	mu      sync.Mutex
	cond    sync.Cond
	senders map[any]*sender
	ready   []*sender // senders with a message to decide, none being decided
	waiting int       // messages counted against Config.Queue
	closed  bool
	wg      sync.WaitGroup

	allowed, replaced, rejected atomic.Uint64
	failed                      [5]atomic.Uint64
	failedOpen, failedClosed    atomic.Uint64
	cancelled, posts, postNanos atomic.Uint64
}

type sender struct {
	key       any
	items     []item // items[0] is next; busy while it is being decided
	busy      bool   // in ready or being decided
	cancelled atomic.Bool
	cb        sync.Mutex // held while a done callback runs (Cancel waits for it)
}

type item struct {
	m        Message
	done     func(Decision)
	overflow bool
}

// New starts a Hook's goroutines. cfg must be valid (Validate).
func New(cfg Config) *Hook {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Queue == 0 {
		cfg.Queue = DefaultQueue
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	tr.MaxConnsPerHost = cfg.Concurrency
	h := &Hook{cfg: cfg, client: &http.Client{Transport: tr}, senders: make(map[any]*sender)}
	h.cond.L = &h.mu
	h.wg.Add(cfg.Concurrency)
	for range cfg.Concurrency {
		go h.work()
	}
	return h
}

// Config returns the configuration in use (defaults filled in).
func (h *Hook) Config() Config { return h.cfg }

// Submit queues m from sender (any comparable value: a connection); done
// is called with the decision on one of the Hook's goroutines, after the
// callbacks of sender's earlier messages. It never waits.
func (h *Hook) Submit(key any, m Message, done func(Decision)) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	s := h.senders[key]
	if s == nil {
		s = &sender{key: key}
		h.senders[key] = s
	}
	over := h.waiting >= h.cfg.Queue
	if !over {
		h.waiting++
	}
	s.items = append(s.items, item{m: m, done: done, overflow: over})
	if !s.busy {
		s.busy = true
		h.ready = append(h.ready, s)
		h.cond.Signal()
	}
	h.mu.Unlock()
}

// Pending reports whether sender has messages not yet decided.
func (h *Hook) Pending(key any) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.senders[key] != nil
}

// Cancel drops sender's undecided messages. When it returns no done
// callback of sender runs, and none will.
func (h *Hook) Cancel(key any) {
	h.mu.Lock()
	s := h.senders[key]
	if s != nil {
		delete(h.senders, key)
		s.cancelled.Store(true)
	}
	h.mu.Unlock()
	if s != nil {
		s.cb.Lock()
		s.cb.Unlock() //nolint:staticcheck // waits for a callback in progress
	}
}

// Close stops the goroutines; messages not decided are dropped. POSTs in
// flight end within Config.Timeout.
func (h *Hook) Close() {
	h.mu.Lock()
	h.closed = true
	h.cond.Broadcast()
	h.mu.Unlock()
	h.wg.Wait()
}

// Stats returns the counters.
func (h *Hook) Stats() Stats {
	st := Stats{
		Allowed: h.allowed.Load(), Replaced: h.replaced.Load(), Rejected: h.rejected.Load(),
		FailedOpen: h.failedOpen.Load(), FailedClosed: h.failedClosed.Load(),
		Cancelled: h.cancelled.Load(), Posts: h.posts.Load(), PostNanos: h.postNanos.Load(),
	}
	for i := range st.Failed {
		st.Failed[i] = h.failed[i].Load()
	}
	h.mu.Lock()
	st.Waiting = h.waiting
	h.mu.Unlock()
	return st
}

func (h *Hook) work() {
	defer h.wg.Done()
	for {
		h.mu.Lock()
		for len(h.ready) == 0 && !h.closed {
			h.cond.Wait()
		}
		if h.closed {
			h.mu.Unlock()
			return
		}
		s := h.ready[0]
		h.ready[0] = nil
		h.ready = h.ready[1:]
		it := s.items[0]
		h.mu.Unlock()

		if s.cancelled.Load() {
			h.cancelled.Add(1)
		} else {
			d := h.decide(it)
			s.cb.Lock()
			if !s.cancelled.Load() {
				h.mu.Lock()
				d.Last = len(s.items) == 1
				h.mu.Unlock()
				it.done(d)
			} else {
				h.cancelled.Add(1)
			}
			s.cb.Unlock()
		}

		h.mu.Lock()
		if !it.overflow {
			h.waiting--
		}
		s.items[0] = item{}
		s.items = s.items[1:]
		switch {
		case len(s.items) > 0:
			h.ready = append(h.ready, s)
		default:
			s.busy = false
			if h.senders[s.key] == s {
				delete(h.senders, s.key)
			}
		}
		h.mu.Unlock()
	}
}

// decide asks the backend about it, or applies the failure policy.
func (h *Hook) decide(it item) Decision {
	if it.overflow {
		return h.fail(QueueFull)
	}
	d, f := h.post(it.m)
	if f != Answered {
		return h.fail(f)
	}
	switch d.Action {
	case Allow:
		h.allowed.Add(1)
	case Replace:
		h.replaced.Add(1)
	case Reject:
		h.rejected.Add(1)
	}
	return d
}

func (h *Hook) fail(f Failure) Decision {
	h.failed[f].Add(1)
	if h.cfg.FailClosed {
		h.failedClosed.Add(1)
		return Decision{Action: Reject, Reason: "publish hook " + f.String(), Failure: f}
	}
	h.failedOpen.Add(1)
	return Decision{Action: Allow, Failure: f}
}

// answer is the JSON a backend answers.
type answer struct {
	Action string  `json:"action"`
	Data   *string `json:"data"`
	Reason string  `json:"reason"`
}

// Sign returns the X-Pusher-Signature of body: hex HMAC-SHA256 with secret.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

func (h *Hook) post(m Message) (Decision, Failure) {
	b := body{TimeMS: time.Now().UnixMilli(), Kind: m.Kind, Channel: m.Channel, Event: m.Event,
		UserID: m.UserID, SocketID: m.SocketID, Data: m.Data, Encoding: m.Encoding}
	if m.Kind == "raw" {
		b.Room = &m.Room
	}
	payload, err := json.Marshal(b)
	if err != nil {
		return Decision{}, Error
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(payload))
	if err != nil {
		return Decision{}, Error
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Pusher-Key", h.cfg.Key)
	req.Header.Set("X-Pusher-Signature", Sign(h.cfg.Secret, payload))
	start := time.Now()
	resp, err := h.client.Do(req)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
		resp.Body.Close()
	}
	h.posts.Add(1)
	h.postNanos.Add(uint64(time.Since(start)))
	switch {
	case err != nil && ctx.Err() != nil:
		return Decision{}, Timeout
	case err != nil, resp.StatusCode != http.StatusOK:
		return Decision{}, Error
	case len(raw) > maxAnswer:
		return Decision{}, BadAnswer
	}
	var a answer
	if json.Unmarshal(raw, &a) != nil {
		return Decision{}, BadAnswer
	}
	switch a.Action {
	case "allow":
		return Decision{Action: Allow}, Answered
	case "replace":
		if a.Data == nil {
			return Decision{}, BadAnswer
		}
		return Decision{Action: Replace, Data: *a.Data}, Answered
	case "reject":
		return Decision{Action: Reject, Reason: a.Reason}, Answered
	}
	return Decision{}, BadAnswer
}
