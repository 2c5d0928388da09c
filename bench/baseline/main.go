// Command baseline is the reference chat server for chatbench comparisons:
// a gorilla/websocket hub with a read and a write goroutine per connection
// (package chatd/bench/baseline/hub), speaking chatd's raw /chat/{room}
// protocol.
//
//	go run ./bench/baseline -addr 127.0.0.1:9000
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"chatd/bench/baseline/hub"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	var cfg hub.Config
	flag.IntVar(&cfg.SendBuffer, "send-buffer", 0, "messages queued per member before it is dropped (0: 256)")
	flag.Int64Var(&cfg.MaxMessage, "max-message", 0, "largest message in bytes (0: 64 KiB)")
	flag.DurationVar(&cfg.PingInterval, "ping-interval", 0, "ping period (0: 54s)")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("baseline: %v", err)
	}
	srv := &http.Server{Handler: hub.New(cfg)}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			log.Fatalf("baseline: %v", err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
