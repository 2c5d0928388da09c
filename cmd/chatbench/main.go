// Command chatbench is the load generator for chatd and the servers it is
// compared with: density, broadcast, churn, slowloris, slowconsumer and
// soak scenarios over the raw /chat/{room} WebSocket protocol, and
// broadcast over Pusher Channels too (-protocol pusher, or raw,pusher to
// compare the two on one server). A soak that fails its checks exits 1.
// See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"chatd/bench"
	"chatd/server/buildinfo"
)

func main() {
	// A worker process (chatbench re-executed by itself for -procs)
	// never returns from here.
	bench.RunWorkerIfAsked()

	cfg, err := bench.ParseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if errors.Is(err, bench.ErrVersion) {
		fmt.Println(buildinfo.Read().String("chatbench"))
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bench.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
