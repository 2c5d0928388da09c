// Package natstest runs a real NATS server (github.com/nats-io/nats-server)
// inside a test process, for tests of chatd's cluster. It is apart from
// package testutil so that only the tests that need NATS compile it.
package natstest

import (
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Server is a NATS server started by Start.
type Server struct {
	*natsserver.Server
}

// Start runs a NATS server with JetStream (its store in a temporary
// directory) on 127.0.0.1:port (0: any free port), waits until it accepts
// clients, and shuts it down when the test ends.
func Start(t testing.TB, port int) Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("natstest: NATS server not ready after 5s")
	}
	t.Cleanup(ns.Shutdown)
	return Server{ns}
}

// Subs returns the number of subscriptions the server's clients hold to
// chatd's room subjects (chatd.room.*): the rooms each node receives.
func (s Server) Subs() uint32 {
	sz, err := s.Subsz(&natsserver.SubszOptions{Subscriptions: true, Limit: 1 << 20})
	if err != nil {
		return 0
	}
	n := uint32(0)
	for _, d := range sz.Subs {
		if strings.HasPrefix(d.Subject, "chatd.room.") {
			n++
		}
	}
	return n
}
