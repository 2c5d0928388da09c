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
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chatd/bench"

	gorilla "github.com/gorilla/websocket"
)

const nginxConf = `
worker_processes 1;
worker_rlimit_nofile 20000;
{{user}}
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }
    upstream chatd {
        server {{upstream}};
    }
    server {
        listen {{listen}} ssl;
        ssl_certificate     {{dir}}/cert.pem;
        ssl_certificate_key {{dir}}/key.pem;
        location / {
            proxy_pass http://chatd;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 180s;
            proxy_send_timeout 180s;
            proxy_buffering off;
        }
    }
}
`

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
	roots := certs(dir)

	chatdAddr, nginxAddr := freeAddr(), freeAddr()
	chatd := exec.Command(*chatdBin, "-addr", chatdAddr, "-admin-addr", "", "-log-level", "error", "-trusted-proxies", "127.0.0.1/32")
	chatd.Stderr = os.Stderr
	if err := chatd.Start(); err != nil {
		log.Fatal(err)
	}
	defer stop(chatd)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{upstream}}", chatdAddr, "{{listen}}", nginxAddr, "{{user}}", user).Replace(nginxConf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
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

// certs writes a CA-signed certificate for 127.0.0.1 into dir and returns
// the CA pool.
func certs(dir string) *x509.CertPool {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "proxycost CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		log.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		log.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}
