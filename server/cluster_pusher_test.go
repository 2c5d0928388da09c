package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"chatd/bench/testutil"
	"chatd/bench/testutil/natstest"
	"chatd/server/pusher"

	gorilla "github.com/gorilla/websocket"
)

// Tests of Pusher across the nodes of a cluster: real chatd servers in
// this process joined by a real NATS server with JetStream, Pusher
// clients speaking the protocol over gorilla/websocket.

// newPusherCluster starts n nodes sharing apps, joined through one NATS
// server, and waits until each has the cluster's shared state.
func newPusherCluster(t *testing.T, n int, apps *pusher.Apps) []*Server {
	t.Helper()
	ns := natstest.Start(t, 0)
	nodes := make([]*Server, n)
	for i := range nodes {
		nodes[i] = newTestServer(t, Config{Apps: apps, Cluster: ClusterConfig{
			NATS: []string{ns.ClientURL()}, NodeID: "n" + strconv.Itoa(i), NodeTimeout: 3 * time.Second}})
	}
	waitShared(t, nodes...)
	return nodes
}

func waitShared(t *testing.T, nodes ...*Server) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, func() error {
		for i, s := range nodes {
			if st := s.broker.Stats(); !st.Connected || !st.SharedUp || st.Nodes != len(nodes) {
				return fmt.Errorf("node %d: connected %v, shared state up %v, %d nodes alive", i, st.Connected, st.SharedUp, st.Nodes)
			}
		}
		return nil
	})
}

// pclient is a Pusher connection of a test; its reader goroutine files
// every message it gets.
type pclient struct {
	t        *testing.T
	c        *gorilla.Conn
	app      *pusher.App
	socketID string
	mu       sync.Mutex
	msgs     []limitsMsg
	closed   error
}

func pdial(t *testing.T, s *Server, app *pusher.App) *pclient {
	t.Helper()
	c, id := limitsDial(t, s, app.Key)
	pc := &pclient{t: t, c: c, app: app, socketID: id}
	go func() {
		for {
			m, err := limitsTryRead(c, time.Minute)
			pc.mu.Lock()
			if err != nil {
				pc.closed = err
				pc.mu.Unlock()
				return
			}
			pc.msgs = append(pc.msgs, m)
			pc.mu.Unlock()
		}
	}()
	return pc
}

func (pc *pclient) send(v any) {
	b, _ := json.Marshal(v)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if err := pc.c.WriteMessage(gorilla.TextMessage, b); err != nil && pc.closed == nil {
		pc.t.Errorf("write: %v", err)
	}
}

// subscribe sends pusher:subscribe, signed for private and presence
// channels (as user with info on presence ones).
func (pc *pclient) subscribe(channel, user string) {
	d := map[string]string{"channel": channel}
	switch {
	case strings.HasPrefix(channel, "presence-"):
		cd := fmt.Sprintf(`{"user_id":%q,"user_info":{"name":%q}}`, user, "name of "+user)
		d["channel_data"] = cd
		d["auth"] = pusher.ChannelAuth(pc.app, pc.socketID, channel, cd)
	case strings.HasPrefix(channel, "private-"):
		d["auth"] = pusher.ChannelAuth(pc.app, pc.socketID, channel, "")
	}
	pc.send(map[string]any{"event": "pusher:subscribe", "data": d})
}

func (pc *pclient) signin(user string) {
	ud := fmt.Sprintf(`{"id":%q}`, user)
	pc.send(map[string]any{"event": "pusher:signin", "data": map[string]string{
		"user_data": ud, "auth": pusher.UserAuth(pc.app, pc.socketID, ud)}})
}

func (pc *pclient) all() []limitsMsg {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return slices.Clone(pc.msgs)
}

// wait returns the first message (from index from) that match accepts,
// failing the test after 10 s.
func (pc *pclient) wait(what string, match func(limitsMsg) bool) limitsMsg {
	pc.t.Helper()
	var got limitsMsg
	testutil.CheckFor(pc.t, 10*time.Second, func() error {
		for _, m := range pc.all() {
			if match(m) {
				got = m
				return nil
			}
		}
		return fmt.Errorf("socket %s: no %s among %d messages", pc.socketID, what, len(pc.all()))
	})
	return got
}

func (pc *pclient) count(match func(limitsMsg) bool) int {
	n := 0
	for _, m := range pc.all() {
		if match(m) {
			n++
		}
	}
	return n
}

func isEvent(event, channel string) func(limitsMsg) bool {
	return func(m limitsMsg) bool { return m.Event == event && m.Channel == channel }
}

func isMember(event, channel, user string) func(limitsMsg) bool {
	return func(m limitsMsg) bool {
		if m.Event != event || m.Channel != channel {
			return false
		}
		var d struct {
			UserID string `json:"user_id"`
		}
		json.Unmarshal([]byte(m.Data), &d)
		return d.UserID == user
	}
}

// presenceIDs returns the member IDs of a subscription_succeeded.
func presenceIDs(t *testing.T, m limitsMsg) []string {
	t.Helper()
	var d struct {
		Presence struct {
			IDs   []string                   `json:"ids"`
			Hash  map[string]json.RawMessage `json:"hash"`
			Count int                        `json:"count"`
		} `json:"presence"`
	}
	if err := json.Unmarshal([]byte(m.Data), &d); err != nil {
		t.Fatalf("subscription_succeeded data %q: %v", m.Data, err)
	}
	if d.Presence.Count != len(d.Presence.IDs) || len(d.Presence.Hash) != len(d.Presence.IDs) {
		t.Fatalf("inconsistent presence data %q", m.Data)
	}
	return d.Presence.IDs
}

func apiJSON(t *testing.T, hc *limitsHTTP, s *Server, method, path string, query url.Values, body any) (int, map[string]any) {
	t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	status, resp := limitsAPI(t, hc.c, s, hc.app, method, path, query, b)
	var m map[string]any
	json.Unmarshal(resp, &m)
	return status, m
}

type limitsHTTP struct {
	c   *http.Client
	app *pusher.App
}

// TestClusterPusherPresence: presence is cluster-wide. The member list of
// subscription_succeeded holds the members of every node; member_added
// fires when a user's first connection anywhere subscribes and
// member_removed when its last one anywhere leaves, once, to every other
// subscriber on every node, never for a second tab on another node; the
// HTTP API of any node reports the cluster's members and counts.
func TestClusterPusherPresence(t *testing.T) {
	nodes := newPusherCluster(t, 3, nil)
	app := pusher.DefaultApp()
	hc := &limitsHTTP{limitsClient(t), &app}
	const ch = "presence-room"

	a := pdial(t, nodes[0], &app)
	a.subscribe(ch, "alice")
	if ids := presenceIDs(t, a.wait("subscription_succeeded", isEvent("pusher_internal:subscription_succeeded", ch))); !slices.Equal(ids, []string{"alice"}) {
		t.Fatalf("alice sees %v", ids)
	}
	b1 := pdial(t, nodes[1], &app)
	b1.subscribe(ch, "bob")
	if ids := presenceIDs(t, b1.wait("subscription_succeeded", isEvent("pusher_internal:subscription_succeeded", ch))); !slices.Equal(ids, []string{"alice", "bob"}) {
		t.Fatalf("bob on node 1 sees %v", ids)
	}
	a.wait("member_added bob", isMember("pusher_internal:member_added", ch, "bob"))

	// bob's second tab, on node 2: no member_added anywhere.
	b2 := pdial(t, nodes[2], &app)
	b2.subscribe(ch, "bob")
	if ids := presenceIDs(t, b2.wait("subscription_succeeded", isEvent("pusher_internal:subscription_succeeded", ch))); !slices.Equal(ids, []string{"alice", "bob"}) {
		t.Fatalf("bob on node 2 sees %v", ids)
	}
	// carol on node 2 sees everybody, and everybody sees carol once.
	c := pdial(t, nodes[2], &app)
	c.subscribe(ch, "carol")
	if ids := presenceIDs(t, c.wait("subscription_succeeded", isEvent("pusher_internal:subscription_succeeded", ch))); !slices.Equal(ids, []string{"alice", "bob", "carol"}) {
		t.Fatalf("carol sees %v", ids)
	}
	for _, pc := range []*pclient{a, b1, b2} {
		pc.wait("member_added carol", isMember("pusher_internal:member_added", ch, "carol"))
	}

	for i, s := range nodes {
		status, resp := apiJSON(t, hc, s, "GET", "/apps/chatd/channels/"+ch+"/users", nil, nil)
		users, _ := json.Marshal(resp["users"])
		if status != 200 || string(users) != `[{"id":"alice"},{"id":"bob"},{"id":"carol"}]` {
			t.Fatalf("node %d: /users %d %s", i, status, users)
		}
		status, resp = apiJSON(t, hc, s, "GET", "/apps/chatd/channels/"+ch,
			url.Values{"info": {"user_count,subscription_count"}}, nil)
		if status != 200 || resp["occupied"] != true || resp["user_count"] != 3.0 || resp["subscription_count"] != 4.0 {
			t.Fatalf("node %d: channel %d %v (want 3 users, 4 subscriptions)", i, status, resp)
		}
		status, resp = apiJSON(t, hc, s, "GET", "/apps/chatd/channels",
			url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, nil)
		chans, _ := json.Marshal(resp["channels"])
		if status != 200 || string(chans) != `{"presence-room":{"user_count":3}}` {
			t.Fatalf("node %d: channels %d %s", i, status, chans)
		}
	}

	// bob's first tab leaves: bob still has one, so nothing is removed.
	b1.c.Close()
	time.Sleep(300 * time.Millisecond)
	// Then the second: member_removed bob, once, on nodes 0 and 2.
	b2.c.Close()
	for _, pc := range []*pclient{a, c} {
		pc.wait("member_removed bob", isMember("pusher_internal:member_removed", ch, "bob"))
	}
	time.Sleep(300 * time.Millisecond)
	for _, pc := range []*pclient{a, c} {
		if n := pc.count(isMember("pusher_internal:member_removed", ch, "bob")); n != 1 {
			t.Fatalf("socket %s got member_removed bob %d times", pc.socketID, n)
		}
		if n := pc.count(isMember("pusher_internal:member_added", ch, "bob")); pc == a && n != 1 {
			t.Fatalf("alice got member_added bob %d times, want 1", n)
		}
	}
	if n := c.count(isMember("pusher_internal:member_added", ch, "bob")); n != 0 {
		t.Fatalf("carol, who joined after bob, got member_added bob %d times", n)
	}
	if n := a.count(isMember("pusher_internal:member_added", ch, "alice")) + c.count(isMember("pusher_internal:member_added", ch, "carol")); n != 0 {
		t.Fatal("a member was told of its own arrival")
	}
}

// TestClusterPusherEvents: HTTP API events published on any node reach the
// subscribers of every node, leaving out the socket_id given even when it
// is on another node; client events cross nodes and are not echoed; cache
// channels replay the cluster's last event on every node;
// server-to-user events reach every connection of the user;
// terminate_connections on one node closes the user's connections on all.
func TestClusterPusherEvents(t *testing.T) {
	nodes := newPusherCluster(t, 3, nil)
	app := pusher.DefaultApp()
	hc := &limitsHTTP{limitsClient(t), &app}

	var subs []*pclient
	for _, s := range nodes {
		pc := pdial(t, s, &app)
		pc.subscribe("news", "")
		pc.subscribe("private-talk", "")
		pc.wait("news subscribed", isEvent("pusher_internal:subscription_succeeded", "news"))
		pc.wait("private-talk subscribed", isEvent("pusher_internal:subscription_succeeded", "private-talk"))
		subs = append(subs, pc)
	}
	// Interest travels to NATS asynchronously; let it settle.
	time.Sleep(300 * time.Millisecond)

	// Published on node 2, excluding the subscriber on node 1.
	status, _ := apiJSON(t, hc, nodes[2], "POST", "/apps/chatd/events", nil, map[string]any{
		"name": "flash", "channel": "news", "data": "hello", "socket_id": subs[1].socketID})
	if status != 200 {
		t.Fatalf("publish: %d", status)
	}
	for _, i := range []int{0, 2} {
		if m := subs[i].wait("flash", isEvent("flash", "news")); m.Data != "hello" {
			t.Fatalf("node %d got %+v", i, m)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := subs[1].count(isEvent("flash", "news")); n != 0 {
		t.Fatal("the excluded socket on another node got the event")
	}

	// A client event from node 0 reaches nodes 1 and 2, not node 0.
	subs[0].send(map[string]any{"event": "client-typing", "channel": "private-talk", "data": map[string]any{"who": "x"}})
	subs[1].wait("client-typing", isEvent("client-typing", "private-talk"))
	subs[2].wait("client-typing", isEvent("client-typing", "private-talk"))
	time.Sleep(300 * time.Millisecond)
	if n := subs[0].count(isEvent("client-typing", "private-talk")); n != 0 {
		t.Fatal("the client event was echoed to its sender")
	}
	for i, pc := range subs {
		if n := pc.count(isEvent("client-typing", "private-talk")); i > 0 && n != 1 {
			t.Fatalf("node %d got the client event %d times", i, n)
		}
	}

	// A cache channel nobody subscribes to, published on node 0: node 2's
	// new subscriber gets it replayed; a later event on node 1 replaces it.
	for i, data := range []string{"first", "second"} {
		status, _ = apiJSON(t, hc, nodes[i], "POST", "/apps/chatd/events", nil, map[string]any{
			"name": "price", "channel": "cache-price", "data": data})
		if status != 200 {
			t.Fatalf("publish cache: %d", status)
		}
	}
	testutil.CheckFor(t, 10*time.Second, func() error {
		pc := pdial(t, nodes[2], &app)
		defer pc.c.Close()
		pc.subscribe("cache-price", "")
		pc.wait("subscribed", isEvent("pusher_internal:subscription_succeeded", "cache-price"))
		var got limitsMsg
		testutil.CheckFor(t, 5*time.Second, func() error {
			for _, m := range pc.all() {
				if m.Event == "price" || m.Event == "pusher:cache_miss" {
					got = m
					return nil
				}
			}
			return fmt.Errorf("no replay")
		})
		if got.Event != "price" || got.Data != "second" {
			return fmt.Errorf("replay %+v, want price second", got)
		}
		return nil
	})

	// Server-to-user: one user signed in on nodes 0 and 2, the event sent
	// through node 1.
	u0, u2 := pdial(t, nodes[0], &app), pdial(t, nodes[2], &app)
	for _, pc := range []*pclient{u0, u2} {
		pc.signin("dora")
		pc.wait("signin", func(m limitsMsg) bool { return m.Event == "pusher:signin_success" })
		pc.subscribe("#server-to-user-dora", "")
		pc.wait("user channel", isEvent("pusher_internal:subscription_succeeded", "#server-to-user-dora"))
	}
	time.Sleep(300 * time.Millisecond)
	status, _ = apiJSON(t, hc, nodes[1], "POST", "/apps/chatd/events", nil, map[string]any{
		"name": "note", "channel": "#server-to-user-dora", "data": "for dora"})
	if status != 200 {
		t.Fatalf("publish to user: %d", status)
	}
	u0.wait("note", isEvent("note", "#server-to-user-dora"))
	u2.wait("note", isEvent("note", "#server-to-user-dora"))

	// terminate_connections through node 1 closes both.
	status, _ = apiJSON(t, hc, nodes[1], "POST", "/apps/chatd/users/dora/terminate_connections", nil, map[string]any{})
	if status != 200 {
		t.Fatalf("terminate: %d", status)
	}
	for i, pc := range []*pclient{u0, u2} {
		testutil.CheckFor(t, 10*time.Second, func() error {
			pc.mu.Lock()
			defer pc.mu.Unlock()
			var ce *gorilla.CloseError
			if pc.closed == nil {
				return fmt.Errorf("connection %d of dora still open", i)
			}
			if !asCloseError(pc.closed, &ce) || ce.Code != pusher.CodeUnauthorized {
				return fmt.Errorf("connection %d closed with %v, want %d", i, pc.closed, pusher.CodeUnauthorized)
			}
			return nil
		})
	}
	for i, pc := range subs {
		pc.mu.Lock()
		err := pc.closed
		pc.mu.Unlock()
		if err != nil {
			t.Fatalf("node %d's subscriber was closed: %v", i, err)
		}
	}
}

func asCloseError(err error, ce **gorilla.CloseError) bool {
	e, ok := err.(*gorilla.CloseError)
	if ok {
		*ce = e
	}
	return ok
}

// TestClusterPusherPresenceRace: many users join and leave a presence
// channel with tabs on all three nodes at once, repeatedly. After each
// round settles, every node reports the same members, they are the users
// with a tab left, and every observer (one per node, subscribed
// throughout) saw, per user, added and removed alternating and ending in
// the right state: a consistent sequence.
func TestClusterPusherPresenceRace(t *testing.T) {
	nodes := newPusherCluster(t, 3, nil)
	app := pusher.DefaultApp()
	hc := &limitsHTTP{limitsClient(t), &app}
	const ch, users, rounds = "presence-race", 24, 3

	observers := make([]*pclient, len(nodes))
	for i, s := range nodes {
		observers[i] = pdial(t, s, &app)
		observers[i].subscribe(ch, "observer-"+strconv.Itoa(i))
		observers[i].wait("subscribed", isEvent("pusher_internal:subscription_succeeded", ch))
	}
	// Every observer's view of the members, from its subscription_succeeded
	// and the events after it.
	view := func(pc *pclient) (map[string]bool, error) {
		present := make(map[string]bool)
		started := false
		for _, m := range pc.all() {
			if m.Channel != ch {
				continue
			}
			var d struct {
				UserID string `json:"user_id"`
			}
			json.Unmarshal([]byte(m.Data), &d)
			switch m.Event {
			case "pusher_internal:subscription_succeeded":
				for _, id := range presenceIDs(t, m) {
					present[id] = true
				}
				started = true
			case "pusher_internal:member_added":
				if !started || present[d.UserID] {
					return nil, fmt.Errorf("member_added %s while present", d.UserID)
				}
				present[d.UserID] = true
			case "pusher_internal:member_removed":
				if !present[d.UserID] {
					return nil, fmt.Errorf("member_removed %s while absent", d.UserID)
				}
				delete(present, d.UserID)
			}
		}
		return present, nil
	}

	rng := rand.New(rand.NewPCG(1, 2))
	open := make(map[string][]*pclient) // user -> its tabs
	for round := 0; round < rounds; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		// Each user: close some of its tabs and open new ones on random
		// nodes, all users at once.
		type plan struct {
			user          string
			toClose, keep []*pclient
			nodesFor      []int
		}
		var plans []plan
		for u := 0; u < users; u++ {
			user := "u" + strconv.Itoa(u)
			tabs := open[user]
			closeN := 0
			if len(tabs) > 0 {
				closeN = rng.IntN(len(tabs) + 1)
			}
			nodesFor := make([]int, rng.IntN(3))
			for i := range nodesFor {
				nodesFor[i] = rng.IntN(len(nodes))
			}
			plans = append(plans, plan{user, tabs[:closeN], slices.Clone(tabs[closeN:]), nodesFor})
		}
		for _, p := range plans {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var fresh []*pclient
				for i, n := range p.nodesFor {
					pc := pdial(t, nodes[n], &app)
					pc.subscribe(ch, p.user)
					fresh = append(fresh, pc)
					if i < len(p.toClose) {
						p.toClose[i].c.Close()
					}
				}
				for i := len(p.nodesFor); i < len(p.toClose); i++ {
					p.toClose[i].c.Close()
				}
				mu.Lock()
				open[p.user] = append(p.keep, fresh...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		want := []string{"observer-0", "observer-1", "observer-2"}
		for user, tabs := range open {
			if len(tabs) > 0 {
				want = append(want, user)
			}
		}
		sort.Strings(want)
		testutil.CheckFor(t, 15*time.Second, func() error {
			for i, s := range nodes {
				_, resp := apiJSON(t, hc, s, "GET", "/apps/chatd/channels/"+ch+"/users", nil, nil)
				var ids []string
				list, _ := resp["users"].([]any)
				for _, u := range list {
					ids = append(ids, u.(map[string]any)["id"].(string))
				}
				if !slices.Equal(ids, want) {
					return fmt.Errorf("round %d: node %d lists %v, want %v", round, i, ids, want)
				}
			}
			for i, pc := range observers {
				present, err := view(pc)
				if err != nil {
					t.Fatalf("round %d: observer %d: %v", round, i, err)
				}
				got := slices.Sorted(mapsKeys(present))
				if !slices.Equal(got, want) {
					return fmt.Errorf("round %d: observer %d's view %v, want %v", round, i, got, want)
				}
			}
			return nil
		})
	}
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestClusterPusherMembersLimit: the members limit is the cluster's: users
// racing into a channel with room for 3 across three nodes get 3 members
// in, the others subscription_error, and every node lists the same 3.
func TestClusterPusherMembersLimit(t *testing.T) {
	app := pusher.DefaultApp()
	app.MaxPresenceMembers = 3
	apps, err := pusher.NewApps(app)
	if err != nil {
		t.Fatal(err)
	}
	def, _ := apps.Default()
	app = *def
	nodes := newPusherCluster(t, 3, apps)
	hc := &limitsHTTP{limitsClient(t), &app}
	const ch = "presence-small"
	var clients []*pclient
	for u := 0; u < 7; u++ {
		pc := pdial(t, nodes[u%3], &app)
		clients = append(clients, pc)
	}
	for u, pc := range clients {
		pc.subscribe(ch, "u"+strconv.Itoa(u))
	}
	in, refused := 0, 0
	for _, pc := range clients {
		m := pc.wait("an answer", func(m limitsMsg) bool {
			return m.Channel == ch && (m.Event == "pusher_internal:subscription_succeeded" || m.Event == "pusher:subscription_error")
		})
		if m.Event == "pusher:subscription_error" {
			refused++
		} else {
			in++
		}
	}
	if in != 3 || refused != 4 {
		t.Fatalf("%d in, %d refused; want 3 and 4", in, refused)
	}
	var first []string
	for i, s := range nodes {
		_, resp := apiJSON(t, hc, s, "GET", "/apps/chatd/channels/"+ch+"/users", nil, nil)
		b, _ := json.Marshal(resp["users"])
		ids := []string{string(b)}
		if i == 0 {
			first = ids
		} else if !slices.Equal(ids, first) {
			t.Fatalf("node %d lists %v, node 0 %v", i, ids, first)
		}
	}
}

// TestClusterWebhooksOnce: in a cluster each webhook transition is posted
// once, by one node: a user with tabs on two nodes gives one member_added
// and, when both are gone, one member_removed; a channel subscribed on two
// nodes one channel_occupied and one channel_vacated; a node killed (its
// entries removed by the node with the smallest ID) no duplicates either.
func TestClusterWebhooksOnce(t *testing.T) {
	r := newHookReceiver(t, nil)
	app := hookApp(pusher.Webhook{URL: r.URL, EventTypes: []string{"channel_occupied", "channel_vacated", "member_added", "member_removed"}})
	apps, err := pusher.NewApps(app)
	if err != nil {
		t.Fatal(err)
	}
	nodes := newPusherCluster(t, 3, apps)
	const ch = "presence-hooks"
	var tabs []*pclient
	for i := 0; i < 2; i++ { // one user, a tab on nodes 0 and 1
		pc := pdial(t, nodes[i], &app)
		pc.subscribe(ch, "ann")
		pc.wait("subscribed", isEvent("pusher_internal:subscription_succeeded", ch))
		tabs = append(tabs, pc)
	}
	pub := []*pclient{pdial(t, nodes[1], &app), pdial(t, nodes[2], &app)}
	for _, pc := range pub {
		pc.subscribe("lobby", "")
		pc.wait("subscribed", isEvent("pusher_internal:subscription_succeeded", "lobby"))
	}
	r.waitEvents(t, 10*time.Second, []string{
		"channel_occupied " + ch, "member_added " + ch + " user=ann", "channel_occupied lobby"})
	for _, pc := range append(tabs, pub...) {
		pc.c.Close()
	}
	r.waitEvents(t, 10*time.Second, []string{
		"channel_occupied " + ch, "member_added " + ch + " user=ann", "channel_occupied lobby",
		"channel_vacated " + ch, "member_removed " + ch + " user=ann", "channel_vacated lobby"})
	// Node 2 dies with a member: node 0 (the smallest ID alive) posts its
	// member_removed and channel_vacated, node 1 does not.
	pc := pdial(t, nodes[2], &app)
	pc.subscribe(ch, "bo")
	pc.wait("subscribed", isEvent("pusher_internal:subscription_succeeded", ch))
	waitFor := []string{
		"channel_occupied " + ch, "member_added " + ch + " user=ann", "channel_occupied lobby",
		"channel_vacated " + ch, "member_removed " + ch + " user=ann", "channel_vacated lobby",
		"channel_occupied " + ch, "member_added " + ch + " user=bo"}
	r.waitEvents(t, 10*time.Second, waitFor)
	nodes[2].broker.(interface{ Abandon() }).Abandon()
	r.waitEvents(t, 20*time.Second, append(waitFor, "channel_vacated "+ch, "member_removed "+ch+" user=bo"))
	time.Sleep(time.Second)
	waitFor = append(waitFor, "channel_vacated "+ch, "member_removed "+ch+" user=bo")
	r.waitEvents(t, time.Second, waitFor)
	// Node 1 shut down with a member: it posts the member_removed and
	// channel_vacated of its own withdrawal before it exits.
	pc = pdial(t, nodes[1], &app)
	pc.subscribe(ch, "cy")
	pc.wait("subscribed", isEvent("pusher_internal:subscription_succeeded", ch))
	waitFor = append(waitFor, "channel_occupied "+ch, "member_added "+ch+" user=cy")
	r.waitEvents(t, 10*time.Second, waitFor)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes[1].Shutdown(ctx)
	r.waitEvents(t, 10*time.Second, append(waitFor, "channel_vacated "+ch, "member_removed "+ch+" user=cy"))
}

// TestClusterPusherJSClients runs pusher/jstest/cluster.mjs — laravel-echo
// and pusher-js on different nodes, the npm pusher SDK publishing to and
// querying another node — against a three-node cluster.
func TestClusterPusherJSClients(t *testing.T) {
	node, dir := jstestDir(t)
	nodes := newPusherCluster(t, 3, nil)
	var urls []string
	for _, s := range nodes {
		urls = append(urls, "http://"+s.Addr().String())
	}
	cmd := exec.Command(node, "--test", "--test-force-exit", "--test-concurrency=1", "cluster.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CHATD_URLS="+strings.Join(urls, ","))
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node tests failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "# pass 3") {
		t.Fatalf("expected 3 passing node tests:\n%s", out)
	}
	t.Logf("node --test cluster.mjs:\n%s", out)
}

// TestClusterSubscriptionCount: with subscription counts on, the count
// subscribers get (pusher_internal:subscription_count) and the
// subscription_count webhook carry the cluster's count, not one node's.
func TestClusterSubscriptionCount(t *testing.T) {
	r := newHookReceiver(t, nil)
	app := hookApp(pusher.Webhook{URL: r.URL, EventTypes: []string{"subscription_count"}})
	app.SubscriptionCount = true
	apps, err := pusher.NewApps(app)
	if err != nil {
		t.Fatal(err)
	}
	nodes := newPusherCluster(t, 2, apps)
	var subs []*pclient
	for i := 0; i < 3; i++ { // two on node 0, one on node 1
		pc := pdial(t, nodes[i/2], &app)
		pc.subscribe("counted", "")
		pc.wait("subscribed", isEvent("pusher_internal:subscription_succeeded", "counted"))
		subs = append(subs, pc)
	}
	last := func(pc *pclient) string {
		var d string
		for _, m := range pc.all() {
			if m.Event == "pusher_internal:subscription_count" {
				d = m.Data
			}
		}
		return d
	}
	testutil.CheckFor(t, 15*time.Second, func() error {
		for i, pc := range subs {
			if got := last(pc); got != `{"subscription_count":3}` {
				return fmt.Errorf("subscriber %d's last count %q, want 3", i, got)
			}
		}
		ev := r.events()
		if len(ev) == 0 || ev[len(ev)-1].SubscriptionCount == nil || *ev[len(ev)-1].SubscriptionCount != 3 {
			return fmt.Errorf("webhook events %v, want the last count 3", ev)
		}
		return nil
	})
	subs[2].c.Close() // node 1's only subscriber
	testutil.CheckFor(t, 15*time.Second, func() error {
		for i, pc := range subs[:2] {
			if got := last(pc); got != `{"subscription_count":2}` {
				return fmt.Errorf("subscriber %d's last count %q, want 2", i, got)
			}
		}
		return nil
	})
}

// TestClusterPusherNATSLate: nodes started while NATS is down serve their
// connections; a presence subscription waits for the cluster (no answer
// from a partial view) and completes, with the members of both nodes, once
// NATS is up.
func TestClusterPusherNATSLate(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	var nodes []*Server
	for i := 0; i < 2; i++ {
		nodes = append(nodes, newTestServer(t, Config{Cluster: ClusterConfig{NATS: []string{url}, NodeID: "late" + strconv.Itoa(i)}}))
	}
	app := pusher.DefaultApp()
	a, b := pdial(t, nodes[0], &app), pdial(t, nodes[1], &app)
	a.subscribe("presence-late", "ann")
	b.subscribe("presence-late", "bob")
	a.subscribe("news", "") // not presence: answered at once
	a.wait("news subscribed", isEvent("pusher_internal:subscription_succeeded", "news"))
	time.Sleep(500 * time.Millisecond)
	if n := a.count(isEvent("pusher_internal:subscription_succeeded", "presence-late")); n != 0 {
		t.Fatal("a presence subscription was answered while NATS was down")
	}
	natstest.Start(t, port)
	waitShared(t, nodes...)
	for _, pc := range []*pclient{a, b} {
		m := pc.wait("presence subscribed", isEvent("pusher_internal:subscription_succeeded", "presence-late"))
		ids := presenceIDs(t, m)
		if !slices.Contains(ids, "ann") && !slices.Contains(ids, "bob") {
			t.Fatalf("member list %v", ids)
		}
	}
	// Whoever completed first saw the other arrive: both end with both.
	hc := &limitsHTTP{limitsClient(t), &app}
	testutil.CheckFor(t, 10*time.Second, func() error {
		for i, s := range nodes {
			_, resp := apiJSON(t, hc, s, "GET", "/apps/chatd/channels/presence-late/users", nil, nil)
			if b, _ := json.Marshal(resp["users"]); string(b) != `[{"id":"ann"},{"id":"bob"}]` {
				return fmt.Errorf("node %d: members %s", i, b)
			}
		}
		return nil
	})
}
