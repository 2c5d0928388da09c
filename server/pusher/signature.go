package pusher

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sign returns the lowercase hex HMAC-SHA256 of msg keyed by secret, the
// digest every Pusher signature is made of.
func sign(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// ChannelAuth returns the auth string that authorizes socketID to subscribe
// to a private or presence channel: key ":" hex(HMAC-SHA256(secret,
// socket_id ":" channel [":" channel_data])). channelData is the presence
// member JSON exactly as sent in channel_data, or "" for private channels.
func ChannelAuth(app *App, socketID, channel, channelData string) string {
	msg := socketID + ":" + channel
	if channelData != "" {
		msg += ":" + channelData
	}
	return app.Key + ":" + sign(app.Secret, msg)
}

// UserAuth returns the auth string of a pusher:signin: key ":"
// hex(HMAC-SHA256(secret, socket_id "::user::" user_data)).
func UserAuth(app *App, socketID, userData string) string {
	return app.Key + ":" + sign(app.Secret, socketID+"::user::"+userData)
}

// verifyAuth compares what a client sent, an auth string (key ":"
// signature) or an HTTP API auth_signature, with the expected one in
// constant time: the key is public, the signature is the secret part, and
// the time taken must not tell how much of a guess was right.
func verifyAuth(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// StringToSign returns the string an HTTP API signature covers: the
// uppercase method, the path and the query parameters (keys lowercased,
// sorted by key, auth_signature left out, values not URL-escaped), joined
// by newlines.
func StringToSign(method, path string, query url.Values) string {
	type kv struct{ k, v string }
	pairs := make([]kv, 0, len(query))
	for k, vs := range query {
		lk := strings.ToLower(k)
		if lk == "auth_signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, kv{lk, v})
		}
	}
	slices.SortStableFunc(pairs, func(a, b kv) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	var b strings.Builder
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// SignRequest returns the auth_signature of an HTTP API request.
func SignRequest(secret, method, path string, query url.Values) string {
	return sign(secret, StringToSign(method, path, query))
}

// BodyMD5 returns the body_md5 parameter of a request body.
func BodyMD5(body []byte) string {
	sum := md5.Sum(body)
	return hex.EncodeToString(sum[:])
}

// AuthorizeRequest adds auth_key, auth_timestamp, auth_version, body_md5
// (for a non-empty body) and auth_signature to query, as a server SDK does
// before it calls the HTTP API. query may hold other parameters already.
func AuthorizeRequest(app *App, method, path string, query url.Values, body []byte, now time.Time) {
	query.Set("auth_key", app.Key)
	query.Set("auth_timestamp", strconv.FormatInt(now.Unix(), 10))
	query.Set("auth_version", "1.0")
	if len(body) > 0 {
		query.Set("body_md5", BodyMD5(body))
	}
	query.Set("auth_signature", SignRequest(app.Secret, method, path, query))
}
