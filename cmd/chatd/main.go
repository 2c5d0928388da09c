// Command chatd is a high-density WebSocket chat server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"chatd/server/buildinfo"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if err == errHelp {
			os.Exit(0)
		}
		if err == errVersion {
			fmt.Println(buildinfo.Read().String("chatd"))
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "chatd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runServer(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "chatd:", err)
		os.Exit(1)
	}
}
