package pusher

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
)

// MaxWatchlist is the number of user IDs a signed-in user's watchlist may
// hold.
const MaxWatchlist = 100

// parseWatchlist returns the watchlist of a pusher:signin's user_data
// (raw is its "watchlist"; absent or null means none): distinct user IDs,
// at most MaxWatchlist of them.
func parseWatchlist(app *App, raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var ids []string
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, errors.New("watchlist must be an array of user ID strings")
	}
	if len(ids) > MaxWatchlist {
		return nil, errors.New("watchlist has " + strconv.Itoa(len(ids)) + " user IDs; at most " + strconv.Itoa(MaxWatchlist))
	}
	var list []string
	for _, id := range ids {
		if !validUserID(id, app.MaxPresenceIDLen) {
			return nil, errors.New("watchlist user ID " + strconv.Quote(id) + " is not a user ID of 1 to " +
				strconv.Itoa(app.MaxPresenceIDLen) + " bytes")
		}
		if !slices.Contains(list, id) {
			list = append(list, id)
		}
	}
	return list, nil
}

// watch registers the watchlist of s, just signed in, and sends it the
// current state of the users on it: online for those signed in, offline
// for the others. Registering and reading the state under one a.mu means
// no sign-in or sign-out of a watched user is missed or told twice.
func (a *appState) watch(s *Session) {
	if len(s.watchlist) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watchers == nil {
		a.watchers = make(map[string][]*Session)
	}
	var online, offline []string
	for _, id := range s.watchlist {
		a.watchers[id] = append(a.watchers[id], s)
		if len(a.users[id]) > 0 {
			online = append(online, id)
		} else {
			offline = append(offline, id)
		}
	}
	s.conn.Send(encodeWatchlistEvents(online, offline))
}

// unwatch forgets the watchlist of s, signed out; called with a.mu held.
func (a *appState) unwatch(s *Session) {
	for _, id := range s.watchlist {
		removeSession(a.watchers, id, s)
	}
}

// userOnline tells the watchers of id that it signed in (its first
// connection); called with a.mu held.
func (a *appState) userOnline(id string) { a.tellWatchers(id, true) }

// userOffline tells the watchers of id that it signed out (its last
// connection is gone); called with a.mu held.
func (a *appState) userOffline(id string) { a.tellWatchers(id, false) }

func (a *appState) tellWatchers(id string, online bool) {
	list := a.watchers[id]
	if len(list) == 0 {
		return
	}
	ids := []string{id}
	var msg []byte
	if online {
		msg = encodeWatchlistEvents(ids, nil)
	} else {
		msg = encodeWatchlistEvents(nil, ids)
	}
	for _, w := range list {
		w.conn.Send(msg)
	}
}

// encodeWatchlistEvents returns pusher_internal:watchlist_events with data
// {"events":[{"name":"online","user_ids":[...]},{"name":"offline",...}]},
// an empty list left out; pusher-js emits each event on
// pusher.user.watchlist.
func encodeWatchlistEvents(online, offline []string) []byte {
	b := []byte(`{"events":[`)
	for _, ev := range [...]struct {
		name string
		ids  []string
	}{{"online", online}, {"offline", offline}} {
		if len(ev.ids) == 0 {
			continue
		}
		if b[len(b)-1] == '}' {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendQuoted(b, ev.name)
		b = append(b, `,"user_ids":[`...)
		for i, id := range ev.ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, id)
		}
		b = append(b, "]}"...)
	}
	b = append(b, "]}"...)
	return encodeEvent("pusher_internal:watchlist_events", "", string(b), "")
}
