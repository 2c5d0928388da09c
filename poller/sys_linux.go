package poller

import "golang.org/x/sys/unix"

// On Linux both engines exist; the default is chatd's own epoll loop.
const defaultEngine = EngineEpoll

var engines = []string{EngineEpoll, EngineNetpoll}

func newEngine(name string, onError func(error)) (engine, error) {
	if name == EngineNetpoll {
		return newNetpoll(onError)
	}
	return newEpoll(onError)
}

// noDelayInherited: Linux copies TCP_NODELAY from the listening socket
// into every socket accepted from it.
const noDelayInherited = true

// reusePortOption spreads connections over the listeners of a group.
const (
	reusePortOption = unix.SO_REUSEPORT
	reusePortName   = "SO_REUSEPORT"
)
