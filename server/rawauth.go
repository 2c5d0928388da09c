package server

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
)

// Signed tokens for raw rooms (Config.RawAuthSecret). A client connects
// to /chat/{room}?token=JWT; the token, HS256-signed with the secret by
// the application's backend, names the user (sub), the rooms it may join
// (rooms: names, "" for the lobby, a trailing * for a prefix), whether it
// may send (publish, default true) and when it expires (exp, required).
// It is verified here, at the handshake, with no call to the backend:
//
//	401 token required | token malformed | token signature invalid |
//	    token expired | token claims invalid (no sub, no exp, not yet valid)
//	403 token does not allow room "x"
//	429 too many connections for this user (Config.MaxConnsPerUser)
//
// each answered with that one line and counted by reason
// (chatd_raw_auth_rejected_total). A connection whose token expires is
// closed at exp with 1008 "token expired" (chatd_closed_total{reason=
// "token_expired"}); the client connects again with a fresh token. A
// read-only member's messages (publish: false) are dropped, not relayed
// (chatd_raw_auth_readonly_dropped_total).
//
// What the engine knows of a raw connection beyond Conn (its user, its
// ID for the publish hook) lives in rawAccess's table, not in Conn: a
// connection costs nothing more unless raw auth or the publish hook is on.

// Reasons a raw handshake is refused for its token (metric labels).
const (
	authMissing = iota
	authMalformed
	authForged
	authExpired
	authClaims
	authRoom
	authUserConns
	numAuthReasons
)

var authReasonNames = [numAuthReasons]string{"missing", "malformed", "signature", "expired", "claims", "room", "user_conns"}

// rawClaims are a raw token's claims.
type rawClaims struct {
	Rooms   []string `json:"rooms"`
	Publish *bool    `json:"publish,omitempty"`
	jwt.RegisteredClaims
}

// rawIdentity is what chatd knows of one raw connection while raw auth or
// the publish hook is on.
type rawIdentity struct {
	id      uint64 // the connection's ID (the publish hook's socket_id)
	user    string // the token's sub; "" without raw auth
	room    string // the room's name ("" the lobby)
	exp     int64  // Unix seconds; 0: never
	publish bool
	counted bool // counts against MaxConnsPerUser
}

// rawAccess is raw auth, per-user caps, token expiry and the raw rooms'
// publish hook.
type rawAccess struct {
	s      *Server
	key    any             // HS256 secret ([]byte) or RS256/ES256 public key; nil: no tokens needed
	parser *jwt.Parser     // accepts the key's algorithm only
	hook   *rawPublishHook // nil: off

	ids atomic.Uint64

	conns sync.Map // *Conn -> *rawIdentity: read per message, without a lock

	mu       sync.Mutex
	users    map[string]int    // open connections per user (MaxConnsPerUser)
	expiring map[int64][]*Conn // by exp second
	timer    *time.Timer       // fires at the earliest key of expiring
	timerAt  int64
	stopped  bool

	rejected [numAuthReasons]atomic.Uint64
	readOnly atomic.Uint64 // messages of read-only members dropped
	expired  atomic.Uint64 // connections closed at their token's exp
}

// newRawAccess sets up s.access when raw auth or the publish hook is on.
func (s *Server) newRawAccess() {
	c := s.cfg
	if c.RawAuthSecret == "" && len(c.RawAuthPublicKey) == 0 && c.PublishHook.URL == "" {
		return
	}
	a := &rawAccess{s: s}
	var methods []string
	switch {
	case c.RawAuthSecret != "":
		a.key, methods = []byte(c.RawAuthSecret), []string{"HS256"}
	case len(c.RawAuthPublicKey) > 0:
		a.key, methods, _ = parsePublicKey(c.RawAuthPublicKey) // checked by Validate
	}
	if a.key != nil {
		a.parser = jwt.NewParser(jwt.WithValidMethods(methods), jwt.WithExpirationRequired())
		a.users = make(map[string]int)
		a.expiring = make(map[int64][]*Conn)
	}
	if c.PublishHook.URL != "" {
		a.hook = newRawPublishHook(s)
	}
	s.access = a
}

// close stops the expiry timer and the publish hook (Server.Shutdown).
func (a *rawAccess) close() {
	a.mu.Lock()
	a.stopped = true
	if a.timer != nil {
		a.timer.Stop()
	}
	a.mu.Unlock()
	if a.hook != nil {
		a.hook.h.Close()
	}
}

var (
	errTokenMissing = errors.New("token required: connect with ?token=<JWT>")
	errTokenClaims  = errors.New("token claims invalid: sub and exp are required")
)

// authorize checks the token of a raw handshake for room (its name, "" for
// the lobby) and returns the identity it grants; a refusal is the HTTP
// rejection to answer.
func (a *rawAccess) authorize(room, query string) (*rawIdentity, error) {
	id := &rawIdentity{room: room, publish: true}
	if a.key == nil {
		return id, nil
	}
	token := ""
	if query != "" {
		if q, err := url.ParseQuery(query); err == nil {
			token = q.Get("token")
		}
	}
	if token == "" {
		return nil, a.refuse(authMissing, http.StatusUnauthorized, errTokenMissing.Error())
	}
	var cl rawClaims
	_, err := a.parser.ParseWithClaims(token, &cl, func(*jwt.Token) (any, error) { return a.key, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, a.refuse(authExpired, http.StatusUnauthorized, "token expired")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, a.refuse(authForged, http.StatusUnauthorized, "token signature invalid")
	case errors.Is(err, jwt.ErrTokenMalformed), errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, a.refuse(authMalformed, http.StatusUnauthorized, "token malformed")
	case err != nil:
		return nil, a.refuse(authClaims, http.StatusUnauthorized, "token claims invalid: "+claimsProblem(err))
	case cl.Subject == "" || cl.ExpiresAt == nil:
		return nil, a.refuse(authClaims, http.StatusUnauthorized, errTokenClaims.Error())
	case !roomAllowed(cl.Rooms, room):
		return nil, a.refuse(authRoom, http.StatusForbidden, "token does not allow room "+strconv.Quote(room))
	}
	id.user = cl.Subject
	id.exp = cl.ExpiresAt.Unix()
	id.publish = cl.Publish == nil || *cl.Publish
	return id, nil
}

// parsePublicKey reads a PEM public key for RS256 (RSA) or ES256 (ECDSA
// P-256) tokens.
func parsePublicKey(pem []byte) (any, []string, error) {
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pem); err == nil {
		return k, []string{"RS256"}, nil
	}
	k, err := jwt.ParseECPublicKeyFromPEM(pem)
	if err != nil {
		return nil, nil, errors.New("not a PEM RSA or ECDSA public key")
	}
	if k.Curve.Params().Name != "P-256" {
		return nil, nil, errors.New("an ECDSA key must be on P-256 (ES256)")
	}
	return k, []string{"ES256"}, nil
}

// claimsProblem names what jwt found wrong, in one line.
func claimsProblem(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "sub and exp are required"
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func (a *rawAccess) refuse(why, status int, reason string) error {
	a.rejected[why].Add(1)
	return reject(status, reason)
}

// roomAllowed: a pattern is a room's name, "" for the lobby, or a prefix
// ending in * ("*" alone: every room, the lobby included).
func roomAllowed(patterns []string, room string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(room, prefix) {
				return true
			}
		} else if p == room {
			return true
		}
	}
	return false
}

// acquire counts id against Config.MaxConnsPerUser (in the handshake's
// OnBeforeUpgrade); release gives it back if the upgrade fails.
func (a *rawAccess) acquire(id *rawIdentity) error {
	max := a.s.cfg.MaxConnsPerUser
	if id.user == "" || max <= 0 {
		return nil
	}
	a.mu.Lock()
	n := a.users[id.user]
	if n >= max {
		a.mu.Unlock()
		a.s.logLimited("handshake refused: too many connections for one user", "user", id.user, "max_conns_per_user", max)
		return a.refuse(authUserConns, http.StatusTooManyRequests, "too many connections for this user")
	}
	a.users[id.user] = n + 1
	id.counted = true
	a.mu.Unlock()
	return nil
}

func (a *rawAccess) release(id *rawIdentity) {
	if id == nil || !id.counted {
		return
	}
	a.mu.Lock()
	a.releaseLocked(id)
	a.mu.Unlock()
}

func (a *rawAccess) releaseLocked(id *rawIdentity) {
	if !id.counted {
		return
	}
	id.counted = false
	if n := a.users[id.user] - 1; n > 0 {
		a.users[id.user] = n
	} else {
		delete(a.users, id.user)
	}
}

// opened records c's identity (rawProto.onOpen) and arms its expiry.
func (a *rawAccess) opened(c *Conn, id *rawIdentity) {
	id.id = a.ids.Add(1)
	a.conns.Store(c, id)
	a.mu.Lock()
	if id.exp > 0 && !a.stopped {
		a.expiring[id.exp] = append(a.expiring[id.exp], c)
		a.armLocked(id.exp)
	}
	a.mu.Unlock()
	if id.user != "" {
		a.s.log.Debug("raw connection opened", "user", id.user, "room", id.room, "conn_id", id.id, "publish", id.publish)
	}
}

// closed forgets c (rawProto.onClose).
func (a *rawAccess) closed(c *Conn) {
	if a.hook != nil {
		a.hook.h.Cancel(c)
	}
	v, _ := a.conns.LoadAndDelete(c)
	id, _ := v.(*rawIdentity)
	a.mu.Lock()
	if id != nil {
		a.releaseLocked(id)
		if id.exp > 0 {
			list := a.expiring[id.exp]
			for i, x := range list {
				if x == c {
					list[i] = list[len(list)-1]
					list[len(list)-1] = nil
					list = list[:len(list)-1]
					break
				}
			}
			if len(list) == 0 {
				delete(a.expiring, id.exp)
			} else {
				a.expiring[id.exp] = list
			}
		}
	}
	a.mu.Unlock()
}

// identity returns c's identity, or nil.
func (a *rawAccess) identity(c *Conn) *rawIdentity {
	v, _ := a.conns.Load(c)
	id, _ := v.(*rawIdentity)
	return id
}

// armLocked makes the timer fire by at (Unix seconds).
func (a *rawAccess) armLocked(at int64) {
	if a.timer != nil && a.timerAt <= at && a.timerAt != 0 {
		return
	}
	a.timerAt = at
	d := time.Until(time.Unix(at, 0))
	if a.timer == nil {
		a.timer = time.AfterFunc(d, a.expire)
	} else {
		a.timer.Reset(d)
	}
}

// expire closes the connections whose tokens expired, and re-arms the
// timer for the next expiry.
func (a *rawAccess) expire() {
	now := time.Now().Unix()
	var due []*Conn
	var users []string
	a.mu.Lock()
	a.timerAt = 0
	next := int64(0)
	for at, list := range a.expiring {
		if at <= now {
			for _, c := range list {
				if id := a.identity(c); id != nil { // else closing meanwhile
					due = append(due, c)
					users = append(users, id.user)
				}
			}
			delete(a.expiring, at)
		} else if next == 0 || at < next {
			next = at
		}
	}
	if next != 0 && !a.stopped {
		a.armLocked(next)
	}
	a.mu.Unlock()
	for i, c := range due {
		a.expired.Add(1)
		a.s.log.Info("raw connection closed: token expired", "user", users[i])
		c.closeWith(ws.StatusPolicyViolation, "token expired", ReasonTokenExpired)
	}
}
