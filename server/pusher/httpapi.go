package pusher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HTTP API limits.
const (
	// MaxTimestampSkew is how far auth_timestamp may be from the server's
	// clock.
	MaxTimestampSkew = 600 * time.Second
	// MaxEventChannels is the number of channels one event may go to.
	MaxEventChannels = 100
	// MaxBatchEvents is the number of events in one batch_events call.
	MaxBatchEvents = 10
)

// APIHandler returns the HTTP API (Pusher "HTTP API reference"), to be
// mounted at /apps/ without stripping the prefix (the signature covers the
// full path):
//
//	POST /apps/{app_id}/events
//	POST /apps/{app_id}/batch_events
//	GET  /apps/{app_id}/channels
//	GET  /apps/{app_id}/channels/{channel}
//	GET  /apps/{app_id}/channels/{channel}/users
//	GET  /apps/{app_id}/channels/{channel}/history (chatd's; history.go)
//	POST /apps/{app_id}/users/{user_id}/terminate_connections
//
// Every request must be signed (auth_key, auth_timestamp within 600 s,
// auth_version 1.0, body_md5 for a non-empty body, auth_signature).
// Errors are JSON {"error":"..."} with status 400 (bad request), 401
// (authentication), 404 (unknown app or path), 405 (method) or 413 (too
// large).
func (p *Protocol) APIHandler() http.Handler {
	routes := [...]struct {
		method, path, endpoint string
		h                      func(*apiRequest) (any, *apiError)
	}{
		{"POST", "/apps/{app_id}/events", "events", p.apiEvents},
		{"POST", "/apps/{app_id}/batch_events", "batch_events", p.apiBatchEvents},
		{"GET", "/apps/{app_id}/channels", "channels", p.apiChannels},
		{"GET", "/apps/{app_id}/channels/{channel}", "channel", p.apiChannel},
		{"GET", "/apps/{app_id}/channels/{channel}/users", "users", p.apiUsers},
		{"GET", "/apps/{app_id}/channels/{channel}/history", "history", p.apiHistory},
		{"POST", "/apps/{app_id}/users/{user_id}/terminate_connections", "terminate_connections", p.apiTerminate},
	}
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.Handle(rt.method+" "+rt.path, p.api(rt.endpoint, rt.h))
		mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			p.countAPI(r.PathValue("app_id"), rt.endpoint, http.StatusMethodNotAllowed)
			w.Header().Set("Allow", rt.method)
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+": use "+rt.method)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p.countAPI("", "other", http.StatusNotFound)
		writeError(w, http.StatusNotFound, "no such HTTP API path: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// apiError is an HTTP API failure with its status.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// apiRequest is an authenticated HTTP API request.
type apiRequest struct {
	r     *http.Request
	st    *appState
	query url.Values
	body  []byte
}

// api wraps an endpoint with app lookup, body reading and authentication,
// and counts the request under endpoint (Protocol.APICounts).
func (p *Protocol) api(endpoint string, h func(*apiRequest) (any, *apiError)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := p.authenticate(w, r)
		if err == nil {
			var resp any
			if resp, err = h(req); err == nil {
				p.countAPI(r.PathValue("app_id"), endpoint, http.StatusOK)
				writeJSON(w, http.StatusOK, resp)
				return
			}
		}
		p.countAPI(r.PathValue("app_id"), endpoint, err.status)
		writeError(w, err.status, err.msg)
	})
}

// maxBody is the largest request body read: a batch of MaxBatchEvents
// events of MaxEventBytes each, JSON-escaped (up to 6 bytes per byte would
// be absurd; twice is generous), plus names and channels.
func maxBody(app *App) int64 {
	return int64(MaxBatchEvents)*int64(2*app.MaxEventBytes+8<<10) + 64<<10
}

// authenticate checks an HTTP API request as the Pusher servers do
// ("Authentication" in the HTTP API reference).
func (p *Protocol) authenticate(w http.ResponseWriter, r *http.Request) (*apiRequest, *apiError) {
	appID := r.PathValue("app_id")
	app, ok := p.apps.ByID(appID)
	if !ok {
		return nil, &apiError{http.StatusNotFound, "unknown app_id " + strconv.Quote(appID)}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody(app)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
		}
		return nil, badRequest("reading request body: %v", err)
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("invalid query string: %v", err)
	}
	unauthorized := func(msg string) (*apiRequest, *apiError) {
		p.log.Debug("pusher: HTTP API request refused", "app", app.ID, "path", r.URL.Path, "error", msg)
		return nil, &apiError{http.StatusUnauthorized, msg}
	}
	for _, k := range [...]string{"auth_key", "auth_timestamp", "auth_version", "auth_signature"} {
		if query.Get(k) == "" {
			return unauthorized("missing " + k + " query parameter")
		}
	}
	if query.Get("auth_key") != app.Key {
		return unauthorized("auth_key " + strconv.Quote(query.Get("auth_key")) + " is not the key of app " + strconv.Quote(app.ID))
	}
	if v := query.Get("auth_version"); v != "1.0" {
		return unauthorized("unsupported auth_version " + strconv.Quote(v) + ": use 1.0")
	}
	toSign := StringToSign(r.Method, r.URL.Path, query)
	want := sign(app.Secret, toSign)
	if !verifyAuth(strings.ToLower(query.Get("auth_signature")), want) {
		return unauthorized("invalid auth_signature: it must be the hex HMAC-SHA256, keyed by the app secret, of " +
			strconv.Quote(toSign))
	}
	ts, err := strconv.ParseInt(query.Get("auth_timestamp"), 10, 64)
	if err != nil {
		return unauthorized("auth_timestamp " + strconv.Quote(query.Get("auth_timestamp")) + " is not a number of seconds")
	}
	now := p.now()
	if skew := now.Sub(time.Unix(ts, 0)); skew > MaxTimestampSkew || skew < -MaxTimestampSkew {
		return unauthorized(fmt.Sprintf("auth_timestamp %d is %v away from the server time %d; the limit is %v",
			ts, skew.Round(time.Second).Abs(), now.Unix(), MaxTimestampSkew))
	}
	if md5 := query.Get("body_md5"); len(body) > 0 || md5 != "" {
		if md5 == "" {
			return unauthorized("missing body_md5 query parameter: required for a non-empty body")
		}
		if got := BodyMD5(body); !strings.EqualFold(md5, got) {
			return unauthorized("body_md5 " + strconv.Quote(md5) + " does not match the body (its MD5 is " + got + ")")
		}
	}
	return &apiRequest{r: r, st: p.states[app.ID], query: query, body: body}, nil
}

// eventRequest is one event of POST /events or of a batch.
type eventRequest struct {
	Name     string          `json:"name"`
	Data     json.RawMessage `json:"data"`
	Channel  string          `json:"channel"`
	Channels []string        `json:"channels"`
	SocketID string          `json:"socket_id"`
	Info     string          `json:"info"`
}

// event is a validated event ready to publish.
type event struct {
	name     string
	data     string
	channels []string
	except   string // socket_id
	info     []string
}

func (p *Protocol) apiEvents(req *apiRequest) (any, *apiError) {
	var er eventRequest
	if len(req.body) > 0 {
		if err := json.Unmarshal(req.body, &er); err != nil {
			return nil, badRequest("request body is not a JSON event object: %v", err)
		}
	} else {
		// Parameters MAY be given in the query string (discouraged).
		q := req.query
		er = eventRequest{Name: q.Get("name"), Channel: q.Get("channel"), SocketID: q.Get("socket_id"), Info: q.Get("info"),
			Channels: append(q["channels"], q["channels[]"]...)}
		if q.Has("data") {
			er.Data, _ = json.Marshal(q.Get("data"))
		}
	}
	ev, err := validateEvent(req.st.app, &er, false)
	if err != nil {
		return nil, err
	}
	if err := waitStored(p.publishEvent(req.st, ev)); err != nil {
		return nil, err
	}
	if len(ev.info) == 0 {
		return struct{}{}, nil
	}
	chans := make(map[string]map[string]int, len(ev.channels))
	for _, c := range ev.channels {
		chans[c] = channelCounts(req.st.channel(c), ev.info)
	}
	return map[string]any{"channels": chans}, nil
}

func (p *Protocol) apiBatchEvents(req *apiRequest) (any, *apiError) {
	var br struct {
		Batch []eventRequest `json:"batch"`
	}
	if err := json.Unmarshal(req.body, &br); err != nil {
		return nil, badRequest("request body is not a JSON object {\"batch\":[...]}: %v", err)
	}
	if len(br.Batch) == 0 || len(br.Batch) > MaxBatchEvents {
		return nil, badRequest("batch has %d events; send 1 to %d", len(br.Batch), MaxBatchEvents)
	}
	events := make([]event, len(br.Batch))
	withInfo := false
	for i := range br.Batch {
		ev, err := validateEvent(req.st.app, &br.Batch[i], true)
		if err != nil {
			err.msg = fmt.Sprintf("batch[%d]: %s", i, err.msg)
			return nil, err
		}
		events[i] = ev
		withInfo = withInfo || len(ev.info) > 0
	}
	var stored []func() error
	for _, ev := range events {
		stored = append(stored, p.publishEvent(req.st, ev)...)
	}
	if err := waitStored(stored); err != nil {
		return nil, err
	}
	if !withInfo {
		return struct{}{}, nil
	}
	attrs := make([]map[string]int, len(events))
	for i, ev := range events {
		attrs[i] = channelCounts(req.st.channel(ev.channels[0]), ev.info)
	}
	return map[string]any{"batch": attrs}, nil
}

// validateEvent checks one event against the app's limits. In a batch an
// event names exactly one channel.
func validateEvent(app *App, er *eventRequest, batch bool) (event, *apiError) {
	ev := event{name: er.Name, except: er.SocketID}
	switch {
	case er.Name == "":
		return ev, badRequest("missing event name")
	case len(er.Name) > MaxEventNameLen:
		return ev, badRequest("event name is %d bytes; the limit is %d", len(er.Name), MaxEventNameLen)
	case strings.HasPrefix(er.Name, "pusher_internal:"):
		return ev, badRequest("event names starting with pusher_internal: are reserved")
	case er.Data == nil:
		return ev, badRequest("missing event data")
	}
	data, err := dataString(er.Data)
	if err != nil {
		return ev, badRequest("invalid data: %v", err)
	}
	if len(data) > app.MaxEventBytes {
		return ev, &apiError{http.StatusRequestEntityTooLarge,
			fmt.Sprintf("event data is %d bytes; the limit is %d", len(data), app.MaxEventBytes)}
	}
	ev.data = data
	switch {
	case batch && (len(er.Channels) > 0 || er.Channel == ""):
		return ev, badRequest("a batch event needs exactly one channel, in \"channel\"")
	case len(er.Channels) > 0 && er.Channel != "":
		return ev, badRequest("give either channel or channels, not both")
	case len(er.Channels) > MaxEventChannels:
		return ev, badRequest("event is sent to %d channels; the limit is %d", len(er.Channels), MaxEventChannels)
	case len(er.Channels) > 0:
		ev.channels = er.Channels
	case er.Channel != "":
		ev.channels = []string{er.Channel}
	default:
		return ev, badRequest("missing channel or channels")
	}
	for _, c := range ev.channels {
		if !validChannelName(c) {
			return ev, badRequest("%s", invalidChannelMsg(c))
		}
	}
	if er.SocketID != "" && !validSocketID(er.SocketID) {
		return ev, badRequest("invalid socket_id %q: expected digits.digits", er.SocketID)
	}
	info, infoErr := parseInfo(er.Info, countAttrs, nil)
	if infoErr != nil {
		return ev, infoErr
	}
	ev.info = info
	return ev, nil
}

// publishEvent publishes a validated event of the HTTP API or the demo
// endpoint: it encodes it once per channel (the channel is part of the
// message) and delivers each to its channel (appState.deliver: cache
// channels remember it), to every subscriber but the connection with
// socket_id ev.except, if that is still open.
func (p *Protocol) publishEvent(st *appState, ev event) (stored []func() error) {
	var except Conn
	if ev.except != "" {
		except = st.conn(ev.except)
	}
	for _, c := range ev.channels {
		if w := st.deliver(c, ev.name, ev.data, "", except, ev.except); w != nil {
			stored = append(stored, w)
		}
	}
	return stored
}

// waitStored waits until a cluster's history stream has stored the events
// of a request (publishEvent), so that its 200 means they are kept and
// ordered: events published one after the other, to any nodes, reach
// every subscriber in that order.
func waitStored(stored []func() error) *apiError {
	for _, w := range stored {
		if err := w(); err != nil {
			return &apiError{http.StatusServiceUnavailable, "event not stored in the cluster's history: " + err.Error()}
		}
	}
	return nil
}

// The info attributes the endpoints offer: the counts (events, batch_events,
// GET /channels) and, for GET /channels/{channel}, the cache too.
var (
	countAttrs      = []string{"user_count", "subscription_count"}
	oneChannelAttrs = []string{"user_count", "subscription_count", "cache"}
)

// parseInfo parses the info parameter of an HTTP API request, a
// comma-separated list of channel attributes, for an endpoint that offers
// the attributes offered. Each attribute in turn must be one of offered,
// and refuse (nil: none is refused) must not refuse it: refuse says why an
// offered attribute does not apply to the channels asked about. The first
// attribute that fails is the error. An empty info asks for nothing.
func parseInfo(info string, offered []string, refuse func(attr string) *apiError) ([]string, *apiError) {
	if info == "" {
		return nil, nil
	}
	attrs := strings.Split(info, ",")
	for _, attr := range attrs {
		if !slices.Contains(offered, attr) {
			return nil, badRequest("unsupported info attribute %q: use %s", attr, orList(offered))
		}
		if refuse != nil {
			if err := refuse(attr); err != nil {
				return nil, err
			}
		}
	}
	return attrs, nil
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// channelCounts returns the counts asked for in info of one channel:
// subscription_count, and user_count of a presence channel only (an event
// sent to several channels may ask for it). It ignores cache.
func channelCounts(ci channelInfo, info []string) map[string]int {
	counts := make(map[string]int, len(info))
	presence := classify(ci.name)&kindPresence != 0
	for _, attr := range info {
		switch {
		case attr == "user_count" && presence:
			counts[attr] = ci.users
		case attr == "subscription_count":
			counts[attr] = ci.subs
		}
	}
	return counts
}

func (p *Protocol) apiChannels(req *apiRequest) (any, *apiError) {
	prefix := req.query.Get("filter_by_prefix")
	info, err := parseInfo(req.query.Get("info"), countAttrs, func(attr string) *apiError {
		if attr == "user_count" && !strings.HasPrefix(prefix, "presence-") {
			return badRequest("info=user_count needs filter_by_prefix=presence- (user_count exists on presence channels only)")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	list := req.st.occupied(prefix)
	chans := make(map[string]map[string]int, len(list))
	for _, ci := range list {
		chans[ci.name] = channelCounts(ci, info)
	}
	return map[string]any{"channels": chans}, nil
}

func (p *Protocol) apiChannel(req *apiRequest) (any, *apiError) {
	name, err := req.pathChannel()
	if err != nil {
		return nil, err
	}
	kind := classify(name)
	info, err := parseInfo(req.query.Get("info"), oneChannelAttrs, func(attr string) *apiError {
		switch {
		case attr == "user_count" && kind&kindPresence == 0:
			return badRequest("info=user_count applies to presence channels only")
		case attr == "cache" && kind&kindCache == 0:
			return badRequest("info=cache applies to cache channels only")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ci := req.st.channel(name)
	resp := map[string]any{"occupied": ci.subs > 0}
	for attr, n := range channelCounts(ci, info) {
		resp[attr] = n
	}
	if slices.Contains(info, "cache") {
		if data, ttl, ok := req.st.cached(name); ok {
			resp["cache"] = map[string]any{"data": data, "ttl": int(ttl.Seconds())}
		} else {
			resp["cache"] = nil
		}
	}
	return resp, nil
}

// pathChannel returns the {channel} of the request's path, checked.
func (req *apiRequest) pathChannel() (string, *apiError) {
	name := req.r.PathValue("channel")
	if !validChannelName(name) {
		return "", badRequest("invalid channel name %q", name)
	}
	return name, nil
}

func (p *Protocol) apiUsers(req *apiRequest) (any, *apiError) {
	name, err := req.pathChannel()
	if err != nil {
		return nil, err
	}
	if classify(name)&kindPresence == 0 {
		return nil, badRequest("users can only be listed for presence channels, not %q", name)
	}
	type user struct {
		ID string `json:"id"`
	}
	ids := req.st.members(name)
	users := make([]user, len(ids))
	for i, id := range ids {
		users[i] = user{id}
	}
	return map[string]any{"users": users}, nil
}

// apiTerminate closes every connection signed in as the user, with
// CodeUnauthorized so that pusher-js does not reconnect on its own.
func (p *Protocol) apiTerminate(req *apiRequest) (any, *apiError) {
	id := req.r.PathValue("user_id")
	if !validUserID(id, req.st.app.MaxPresenceIDLen) {
		return nil, badRequest("invalid user_id %q", id)
	}
	req.st.terminate(id)
	if p.cluster != nil {
		p.cluster.Terminate(req.st.app.ID, id)
	}
	return struct{}{}, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"encoding the response failed"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
