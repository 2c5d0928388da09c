package bench

import (
	"context"
	"fmt"
	"runtime/debug"
)

// Request and Response are the envelope of every command the coordinator
// gives an Agent: passed by value with -procs 1, as JSON lines to and from
// a worker process otherwise (fleet.go). Each command's spec and result
// are defined next to the Agent method that carries it out.

// Request is one command from the coordinator; exactly one spec is set.
type Request struct {
	Op      string       `json:"op"`
	Open    *OpenSpec    `json:"open,omitempty"`
	Prepare *PrepareSpec `json:"prepare,omitempty"`
	Send    *SendSpec    `json:"send,omitempty"`
	Drain   *DrainSpec   `json:"drain,omitempty"`
	Group   string       `json:"group,omitempty"` // inspect, probe, close
	Close   *CloseSpec   `json:"close,omitempty"`
	Probe   *ProbeSpec   `json:"probe,omitempty"`
	Sync    *SyncSpec    `json:"sync,omitempty"`
	Soak    *SoakSpec    `json:"soak,omitempty"`
}

// Response carries the result of a Request.
type Response struct {
	Error   string           `json:"error,omitempty"`
	Open    *OpenResult      `json:"open,omitempty"`
	Prepare *PrepareResult   `json:"prepare,omitempty"`
	Send    *SendResult      `json:"send,omitempty"`
	Drain   *DrainResult     `json:"drain,omitempty"`
	Inspect *InspectResult   `json:"inspect,omitempty"`
	Probe   *ProbeResult     `json:"probe,omitempty"`
	Close   *CloseResult     `json:"close,omitempty"`
	Sync    *SyncResult      `json:"sync,omitempty"`
	Soak    *SoakAgentResult `json:"soak,omitempty"`
}

// Handle carries out one command.
func (a *Agent) Handle(ctx context.Context, req Request) Response {
	var (
		resp Response
		err  error
	)
	switch req.Op {
	case "open":
		resp.Open, err = a.open(ctx, req.Open)
	case "prepare":
		resp.Prepare, err = a.prepare(req.Prepare)
	case "send":
		resp.Send, err = a.send(ctx, req.Send)
	case "drain":
		resp.Drain, err = a.drain(ctx, req.Drain)
	case "inspect":
		resp.Inspect, err = a.inspect(req.Group)
	case "probe":
		resp.Probe, err = a.probe(req.Probe)
	case "close":
		resp.Close, err = a.close(req.Close)
	case "sync":
		resp.Sync, err = a.sync(req.Sync)
	case "soak":
		resp.Soak, err = a.soak(ctx, req.Soak)
	case "release":
		// Before a memory sample: what earlier runs of this process
		// allocated and freed goes back to the kernel, so the sample is
		// what the process holds now.
		debug.FreeOSMemory()
	default:
		err = fmt.Errorf("chatbench: unknown worker command %q", req.Op)
	}
	if err != nil {
		resp.Error = err.Error()
	}
	return resp
}
