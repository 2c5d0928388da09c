package broker

// The shared state's requests to other nodes: terminate a user's
// connections, and cluster-wide queries (Gather).

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Terminate asks every other node to close the connections of user.
func (b *NATS) Terminate(app, user string) {
	b.withShared(func(sh *shared) {
		_ = b.nc.Publish(b.cfg.SubjectPrefix+".pctl", appendBytes(appendBytes(nil, app), user))
	})
}

// Gather asks every other node alive for its answer to query (their
// SharedHandler.Counts) and returns the answers. It waits for as many
// answers as nodes are alive, or until a node that died meanwhile has had
// gatherTimeout to answer.
func (b *NATS) Gather(app string, query []byte) [][]byte {
	sh := b.getShared()
	if sh == nil || !b.nc.IsConnected() {
		return nil
	}
	want := sh.alive()
	if want == 0 {
		return nil
	}
	inbox := b.nc.NewRespInbox()
	sub, err := b.nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest(b.cfg.SubjectPrefix+".pq", inbox, appendBytes(nil, app, query...)); err != nil {
		return nil
	}
	deadline := time.Now().Add(gatherTimeout)
	var answers [][]byte
	seen := make(map[string]bool)
	for len(answers) < want {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		node, rest, ok := cutBytes(m.Data)
		if !ok || seen[node] {
			continue
		}
		seen[node] = true
		answers = append(answers, rest)
	}
	return answers
}

func (sh *shared) control(m *nats.Msg) {
	app, rest, ok := cutBytes(m.Data)
	if !ok {
		return
	}
	user, _, ok := cutBytes(rest)
	if ok {
		sh.h.Terminate(app, user)
	}
}

func (sh *shared) query(m *nats.Msg) {
	app, q, ok := cutBytes(m.Data)
	if !ok || m.Reply == "" {
		return
	}
	_ = sh.b.nc.Publish(m.Reply, appendBytes(nil, sh.b.id, sh.h.Counts(app, q)...))
}
