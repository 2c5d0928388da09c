// Package natstest runs a real NATS server (github.com/nats-io/nats-server)
// inside a test process, for tests of chatd's cluster. It is apart from
// package testutil so that only the tests that need NATS compile it.
package natstest

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Server is a NATS server started by Start.
type Server struct {
	*natsserver.Server
	base uint32 // the server's own subscriptions
}

// Start runs a NATS server on 127.0.0.1:port (0: any free port), waits
// until it accepts clients, and shuts it down when the test ends.
func Start(t testing.TB, port int) Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("natstest: NATS server not ready after 5s")
	}
	t.Cleanup(ns.Shutdown)
	return Server{ns, ns.NumSubscriptions()}
}

// Subs returns the number of subscriptions the server's clients hold.
func (s Server) Subs() uint32 { return s.NumSubscriptions() - s.base }
