// Command proxycost measures what a TLS-terminating nginx in front of chatd
// costs per idle wss:// connection, next to chatd's own cost: it starts
// chatd and nginx (the README's recipe, a self-signed certificate made
// here), opens -conns idle wss:// connections through nginx with
// gorilla/websocket, holds them, and prints the RSS growth per connection of
// nginx (master and workers summed) and of chatd, from /proc.
//
//	go build -o chatd ./cmd/chatd
//	go run ./bench/proxycost -chatd ./chatd -conns 5000
//
// nginx holds two sockets per client (client side and upstream), so its
// worker needs 2 × conns open files; this process and chatd need conns
// each. All of them stay under a 20,000 open-file cap up to ~9,900.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chatd/bench"
	"chatd/bench/nginxconf"

	gorilla "github.com/gorilla/websocket"
)

func main() {
	chatdBin := flag.String("chatd", "./chatd", "chatd binary")
	nginxBin := flag.String("nginx", "nginx", "nginx binary")
	conns := flag.Int("conns", 5000, "idle wss:// connections to hold")
	hold := flag.Duration("hold", 3*time.Second, "how long to hold them before sampling")
	flag.Parse()
	if _, err := bench.RaiseOpenFileLimit(); err != nil {
		log.Printf("raising the open-file limit: %v", err)
	}
	dir, err := os.MkdirTemp("", "proxycost")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	roots, err := nginxconf.SelfSigned(dir)
	if err != nil {
		log.Fatal(err)
	}

	chatdAddr, nginxAddr := freeAddr(), freeAddr()
	chatd := exec.Command(*chatdBin, "-addr", chatdAddr, "-admin-addr", "", "-log-level", "error", "-trusted-proxies", "127.0.0.1/32")
	chatd.Stderr = os.Stderr
	if err := chatd.Start(); err != nil {
		log.Fatal(err)
	}
	defer stop(chatd)
	confPath, err := nginxconf.Write(dir, nginxAddr, chatdAddr, 20000, "warn")
	if err != nil {
		log.Fatal(err)
	}
	nginx := exec.Command(*nginxBin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	nginx.Stderr = os.Stderr
	if err := nginx.Start(); err != nil {
		log.Fatal(err)
	}
	defer stop(nginx)
	waitListen(chatdAddr)
	waitListen(nginxAddr)
	time.Sleep(300 * time.Millisecond) // the worker starts after the master listens

	nginxRSS := func() int64 {
		var sum int64
		for _, pid := range append([]int{nginx.Process.Pid}, children(nginx.Process.Pid)...) {
			rss, err := bench.ReadProcRSS(pid)
			if err == nil {
				sum += rss
			}
		}
		return sum
	}
	chatdRSS := func() int64 { rss, _ := bench.ReadProcRSS(chatd.Process.Pid); return rss }
	n0, c0 := nginxRSS(), chatdRSS()

	d := gorilla.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots}, HandshakeTimeout: 10 * time.Second}
	held := make([]*gorilla.Conn, 0, *conns)
	start := time.Now()
	for i := 0; i < *conns; i++ {
		c, _, err := d.Dial("wss://"+nginxAddr+"/chat/idle", nil)
		if err != nil {
			log.Fatalf("connection %d: %v", i+1, err)
		}
		held = append(held, c)
	}
	connect := time.Since(start)
	time.Sleep(*hold)
	n1, c1 := nginxRSS(), chatdRSS()
	kib := func(b int64) float64 { return float64(b) / 1024 }
	fmt.Printf("proxycost: %d idle wss:// connections through nginx (1 worker) to chatd, held %v; connected in %v\n", *conns, *hold, connect.Round(time.Millisecond))
	fmt.Printf("%32s %10s %10s\n", "", "nginx", "chatd")
	fmt.Printf("%32s %10.2f %10.2f\n", "RSS before (MiB)", kib(n0)/1024, kib(c0)/1024)
	fmt.Printf("%32s %10.2f %10.2f\n", "RSS after (MiB)", kib(n1)/1024, kib(c1)/1024)
	fmt.Printf("%32s %10.3f %10.3f\n", "RSS per connection (KiB)", kib(n1-n0)/float64(*conns), kib(c1-c0)/float64(*conns))
	for _, c := range held {
		c.Close()
	}
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListen(addr string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	log.Fatalf("nothing listens on %s", addr)
}

// children lists the direct children of pid (nginx's workers).
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, p)
			}
		}
	}
	return out
}
