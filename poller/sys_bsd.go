//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package poller

// On macOS and the BSDs the one engine is easygo's netpoll over kqueue.
const defaultEngine = EngineNetpoll

var engines = []string{EngineNetpoll}

func newEngine(_ string, onError func(error)) (engine, error) {
	return newNetpoll(onError)
}

// noDelayInherited: the BSD stacks do copy TCP_NODELAY into accepted
// sockets, but that is not documented behaviour there; the listener sets
// it on each accepted socket instead (Listener.noDelay).
const noDelayInherited = false
