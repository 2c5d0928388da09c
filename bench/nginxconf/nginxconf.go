// Package nginxconf writes what a private nginx needs to terminate TLS in
// front of chatd with the README's recipe: a configuration in a directory
// of its own (pid file, logs and temp paths there) and a certificate for
// 127.0.0.1 signed by a CA made on the spot. The wss:// test
// (server/proxy_test.go) and bench/proxycost use it.
package nginxconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// conf is the README's nginx recipe (TLS termination, the WebSocket paths
// with Upgrade/Connection, the HTTP API, timeouts longer than the ping
// interval), with the directory, ports and limits filled in.
const conf = `
worker_processes 1;
worker_rlimit_nofile {{rlimit}};
{{user}}
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log {{loglevel}};
events { worker_connections {{conns}}; }
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

// Write writes dir/nginx.conf for nginx listening (TLS) on listen and
// proxying to upstream, with worker_connections conns, and returns its
// path. As root the worker runs as root too: nobody could not read a
// private temporary directory.
func Write(dir, listen, upstream string, conns int, logLevel string) (string, error) {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	text := strings.NewReplacer("{{dir}}", dir, "{{upstream}}", upstream, "{{listen}}", listen, "{{user}}", user,
		"{{conns}}", strconv.Itoa(conns), "{{rlimit}}", strconv.Itoa(max(conns, 1024)), "{{loglevel}}", logLevel).Replace(conf)
	path := filepath.Join(dir, "nginx.conf")
	return path, os.WriteFile(path, []byte(text), 0o644)
}

// SelfSigned writes a CA and a certificate for 127.0.0.1 / localhost
// signed by it into dir (ca.pem, cert.pem, key.pem) and returns the CA
// pool.
func SelfSigned(dir string) (*x509.CertPool, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "chatd test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name, typ string
		b         []byte
		mode      os.FileMode
	}{{"ca.pem", "CERTIFICATE", caDER, 0o644}, {"cert.pem", "CERTIFICATE", der, 0o644}, {"key.pem", "EC PRIVATE KEY", keyDER, 0o600}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.b}), f.mode); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, nil
}
