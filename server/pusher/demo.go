package pusher

import (
	"encoding/json"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxDemoUserLen is the longest user name the demo endpoints accept.
const MaxDemoUserLen = 64

// Rate limit of the demo endpoints. They sign and publish for anybody, so
// that an open default install cannot be used as anyone's memory or CPU,
// every caller shares one token bucket: DemoRequestsPerSecond requests a
// second, in bursts of up to DemoBurst. A request over it gets HTTP 429
// with a JSON error and Retry-After (seconds).
const (
	DemoRequestsPerSecond = 50
	DemoBurst             = 100
)

// demoLimiter is the demo endpoints' token bucket, shared by every
// DemoHandler of a Protocol.
type demoLimiter struct {
	mu      sync.Mutex
	bucket  gcra
	limited atomic.Uint64 // requests refused
}

// allow takes a token at now (time since Protocol.epoch); when there is
// none it returns how long until there is one.
func (l *demoLimiter) allow(now time.Duration) (bool, time.Duration) {
	const interval = time.Second / DemoRequestsPerSecond
	l.mu.Lock()
	ok, wait := l.bucket.allow(now, interval, (DemoBurst-1)*interval)
	l.mu.Unlock()
	if !ok {
		l.limited.Add(1)
	}
	return ok, wait
}

// DemoHandler returns the demo page's stand-in for an application server,
// to be mounted at /pusher/. It serves the default app only (see
// Apps.Default) and answers 404 when that app is not configured, because
// it signs for anybody who asks: that is safe only with the published
// default secret.
//
//	POST /pusher/auth       form socket_id, channel_name[, user]
//	  -> {"auth":"..."} for private-*, {"auth":"...","channel_data":"..."} for presence-*
//	     (user_id and user_info.name are the user field, "guest" when empty)
//	POST /pusher/user-auth  form socket_id[, user]
//	  -> {"auth":"...","user_data":"{\"id\":user,...}"} for pusher:signin
//	POST /pusher/publish    form or JSON channel, event, data[, socket_id]
//	  -> {} after publishing through the same path as the HTTP API
//
// Form fields are what pusher-js sends to its channelAuthorization and
// userAuthentication endpoints (extra fields through their params option).
//
// All three share one rate limit (DemoRequestsPerSecond, DemoBurst); over
// it they answer 429 {"error":"..."} with Retry-After.
func (p *Protocol) DemoHandler() http.Handler {
	app, ok := p.apps.Default()
	if !ok {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "the demo endpoints serve only the default app "+DefaultAppID+", which is not configured")
		})
	}
	st := p.states[app.ID]
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			// Refused before the body is read: a refusal costs next to nothing.
			if ok, wait := p.demo.allow(p.now().Sub(p.epoch)); !ok {
				secs := max(1, int((wait+time.Second-1)/time.Second))
				w.Header().Set("Retry-After", strconv.Itoa(secs))
				writeError(w, http.StatusTooManyRequests, "too many requests to the demo endpoints (at most "+
					strconv.Itoa(DemoRequestsPerSecond)+" per second for everybody): retry in "+strconv.Itoa(secs)+" s")
				return
			}
			h(w, r)
		})
	}
	handle("POST /pusher/auth", func(w http.ResponseWriter, r *http.Request) {
		f, ok := demoFields(w, r)
		if !ok {
			return
		}
		socketID, ok := demoSocketID(w, f["socket_id"])
		if !ok {
			return
		}
		channel := f["channel_name"]
		if !validChannelName(channel) {
			writeError(w, http.StatusBadRequest, "invalid channel_name "+strconv.Quote(channel))
			return
		}
		kind := classify(channel)
		switch {
		case kind&kindEncrypted != 0:
			writeError(w, http.StatusBadRequest, "the demo does not authorize encrypted channels (they need an encryption master key)")
		case kind&kindPresence != 0:
			user, ok := demoUser(w, f["user"])
			if !ok {
				return
			}
			info, _ := json.Marshal(map[string]string{"name": user})
			cd, _ := json.Marshal(struct {
				UserID   string          `json:"user_id"`
				UserInfo json.RawMessage `json:"user_info"`
			}{user, info})
			writeJSON(w, http.StatusOK, map[string]string{
				"auth":         ChannelAuth(app, socketID, channel, string(cd)),
				"channel_data": string(cd),
			})
		case kind&kindPrivate != 0:
			writeJSON(w, http.StatusOK, map[string]string{"auth": ChannelAuth(app, socketID, channel, "")})
		default:
			writeError(w, http.StatusBadRequest, "channel "+strconv.Quote(channel)+" is public: it needs no authorization")
		}
	})
	handle("POST /pusher/user-auth", func(w http.ResponseWriter, r *http.Request) {
		f, ok := demoFields(w, r)
		if !ok {
			return
		}
		socketID, ok := demoSocketID(w, f["socket_id"])
		if !ok {
			return
		}
		user, ok := demoUser(w, f["user"])
		if !ok {
			return
		}
		ud, _ := json.Marshal(map[string]any{"id": user, "user_info": map[string]string{"name": user}})
		writeJSON(w, http.StatusOK, map[string]string{"auth": UserAuth(app, socketID, string(ud)), "user_data": string(ud)})
	})
	handle("POST /pusher/publish", func(w http.ResponseWriter, r *http.Request) {
		f, ok := demoFields(w, r)
		if !ok {
			return
		}
		data, _ := json.Marshal(f["data"])
		ev, err := validateEvent(app, &eventRequest{Name: f["event"], Channel: f["channel"], SocketID: f["socket_id"], Data: data}, true)
		if err != nil {
			writeError(w, err.status, err.msg)
			return
		}
		if err := waitStored(p.publishEvent(st, ev)); err != nil {
			writeError(w, err.status, err.msg)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such demo endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// demoFields reads the string fields of a form or JSON request body.
func demoFields(w http.ResponseWriter, r *http.Request) (map[string]string, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	f := make(map[string]string)
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		var obj map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
			writeError(w, http.StatusBadRequest, "request body is not a JSON object: "+err.Error())
			return nil, false
		}
		for k, v := range obj {
			s, err := dataString(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "field "+k+": "+err.Error())
				return nil, false
			}
			f[k] = s
		}
		return f, true
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid form: "+err.Error())
		return nil, false
	}
	for k := range r.PostForm {
		f[k] = r.PostForm.Get(k)
	}
	return f, true
}

// demoSocketID returns the socket_id field of an auth request, or answers
// 400 if it is not one.
func demoSocketID(w http.ResponseWriter, id string) (string, bool) {
	if !validSocketID(id) {
		writeError(w, http.StatusBadRequest, "invalid socket_id "+strconv.Quote(id))
		return "", false
	}
	return id, true
}

// demoUser returns the user name as the demo's user ID: trimmed, "guest"
// when empty. The same name in two tabs is one presence member.
func demoUser(w http.ResponseWriter, name string) (string, bool) {
	name = strings.TrimSpace(name)
	if name == "" {
		name = "guest"
	}
	if !validUserID(name, MaxDemoUserLen) {
		writeError(w, http.StatusBadRequest, "user must be 1 to "+strconv.Itoa(MaxDemoUserLen)+" printable characters")
		return "", false
	}
	return name, true
}
