package e2e

// The ingress gateway's servers beyond plaintext HTTP, end to end: a
// control plane, a gateway proxy (router) and backends, all real
// processes and sockets on loopback, driven by real TLS clients.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gwCA is a test certificate authority.
type gwCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newGatewayCA(t *testing.T, name string) *gwCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &gwCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf for dnsNames; files are written to dir as
// <base>.pem and <base>.key.
func (ca *gwCA) issue(t *testing.T, dir, base string, client bool, dnsNames ...string) (tls.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	certFile, keyFile := filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certFile, keyFile
}

// tcpEcho answers every line with "echo: <line>".
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, "echo: "+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// gatewayClient is an HTTPS client that connects to addr whatever the
// URL's host, so the URL carries the name sent as SNI and Host.
func gatewayClient(addr string, cfg *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   cfg,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
		},
		// The redirect itself is under test.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// gatewayGet returns the app's reply and the certificate the server showed.
func gatewayGet(c *http.Client, url string) (appReply, *x509.Certificate, error) {
	var r appReply
	resp, err := c.Get(url)
	if err != nil {
		return r, nil, err
	}
	defer resp.Body.Close()
	var leaf *x509.Certificate
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		leaf = resp.TLS.PeerCertificates[0]
	}
	if resp.StatusCode != http.StatusOK {
		return r, leaf, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, leaf, fmt.Errorf("%s: body: %w", url, err)
	}
	return r, leaf, nil
}

func TestGatewayServers(t *testing.T) {
	certDir := t.TempDir()
	ca := newGatewayCA(t, "gateway test CA")
	clientCA := newGatewayCA(t, "partner client CA")
	backendCA := newGatewayCA(t, "backend CA")
	_, aCert, aKey := ca.issue(t, certDir, "a", false, "a.example.com")
	_, bCert, bKey := ca.issue(t, certDir, "b", false, "b.example.com")
	goodClient, _, _ := clientCA.issue(t, certDir, "partner", true, "partner.example.net")
	otherClient, _, _ := clientCA.issue(t, certDir, "intruder", true, "intruder.example.net")
	backendPair, _, _ := backendCA.issue(t, certDir, "backend", false, "secure.example.com")
	clientCAFile := filepath.Join(certDir, "client-ca.pem")
	if err := os.WriteFile(clientCAFile, clientCA.pem, 0o600); err != nil {
		t.Fatal(err)
	}

	appA, appB := startApp(t, "app-a", "v1"), startApp(t, "app-b", "v1")
	secure := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(appReply{Name: "secure-backend", Host: r.Host, Path: r.URL.Path})
	}))
	secure.TLS = &tls.Config{Certificates: []tls.Certificate{backendPair}}
	secure.StartTLS()
	t.Cleanup(secure.Close)
	echo := tcpEcho(t)

	ports := map[string]int{}
	for _, n := range []string{"https", "mutual", "passthrough", "http", "tcp", "admin"} {
		ports[n] = freePort(t)
	}
	cp := startControlPlane(t, cpOpts{})
	cp.mustApply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backends}
spec:
  hosts: [app-a.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {name: http, number: 8001, protocol: HTTP}
  endpoints:
  - {address: 127.0.0.1, ports: {http: %s}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app-b}
spec:
  hosts: [app-b.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {name: http, number: 8002, protocol: HTTP}
  endpoints:
  - {address: 127.0.0.1, ports: {http: %s}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure}
spec:
  hosts: [secure.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {name: tls, number: 8443, protocol: TLS}
  endpoints:
  - {address: 127.0.0.1, ports: {tls: %s}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {name: tcp, number: 9000, protocol: TCP}
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: %s}}
`, portOf(t, appA.Listener.Addr().String()), portOf(t, appB.Listener.Addr().String()),
		portOf(t, secure.Listener.Addr().String()), portOf(t, echo)))
	cp.mustApply(t, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %[1]d, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, serverCertificate: %[6]s, privateKey: %[7]s}
  - port: {number: %[1]d, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, serverCertificate: %[8]s, privateKey: %[9]s}
  - port: {number: %[2]d, name: https-partners, protocol: HTTPS}
    hosts: [a.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: %[6]s
      privateKey: %[7]s
      caCertificates: %[10]s
      subjectAltNames: [partner.example.net]
  - port: {number: %[3]d, name: tls-passthrough, protocol: TLS}
    hosts: [secure.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: %[4]d, name: http, protocol: HTTP}
    hosts: [a.example.com]
    tls: {httpsRedirect: true}
  - port: {number: %[5]d, name: tcp-echo, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example.com]
  gateways: [edge]
  http:
  - route:
    - destination: {host: app-a}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts: [b.example.com]
  gateways: [edge]
  http:
  - route:
    - destination: {host: app-b}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: [secure.example.com]
  gateways: [edge]
  tls:
  - match:
    - sniHosts: [secure.example.com]
    route:
    - destination: {host: secure, port: {number: 8443}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp:
  - route:
    - destination: {host: echo, port: {number: 9000}}
`, ports["https"], ports["mutual"], ports["passthrough"], ports["http"], ports["tcp"], aCert, aKey, bCert, bKey, clientCAFile))

	gw := &sidecar{ID: "router~127.0.0.1~edge-gateway.default", Admin: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports["admin"]))}
	gw.proc = startProc(t, "gateway", amimeBin, "proxy", "--mode", "gateway", "--xds", cp.XDS, "--node-id", gw.ID,
		"--labels", "istio=ingressgateway", "--instance-ip", "127.0.0.1", "--admin-addr", gw.Admin)
	gw.waitLive(t)
	addr := func(name string) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[name])) }

	t.Run("TLS termination picks the certificate by SNI", func(t *testing.T) {
		for _, tc := range []struct{ host, app string }{{"a.example.com", "app-a"}, {"b.example.com", "app-b"}} {
			c := gatewayClient(addr("https"), &tls.Config{RootCAs: ca.pool, ServerName: tc.host})
			url := "https://" + tc.host + ":" + strconv.Itoa(ports["https"]) + "/hello"
			var r appReply
			var leaf *x509.Certificate
			if err := eventually(15*time.Second, func() (err error) {
				r, leaf, err = gatewayGet(c, url)
				return err
			}); err != nil {
				t.Fatalf("%s: %v", url, err)
			}
			// The chain verified against the CA for tc.host (crypto/tls
			// checked it); the leaf must be that host's own.
			if !slices.Equal(leaf.DNSNames, []string{tc.host}) {
				t.Errorf("%s: gateway presented %v", tc.host, leaf.DNSNames)
			}
			if r.Name != tc.app || r.Path != "/hello" {
				t.Errorf("%s: reached %s%s, want %s/hello", tc.host, r.Name, r.Path, tc.app)
			}
		}
		// A name no server has matches no filter chain: the handshake fails.
		c := gatewayClient(addr("https"), &tls.Config{RootCAs: ca.pool, ServerName: "c.example.com"})
		if _, _, err := gatewayGet(c, "https://c.example.com/"); err == nil {
			t.Error("c.example.com: request succeeded, want a failed handshake")
		}
	})

	t.Run("MUTUAL requires a client certificate with an allowed SAN", func(t *testing.T) {
		url := "https://a.example.com:" + strconv.Itoa(ports["mutual"]) + "/m"
		with := gatewayClient(addr("mutual"), &tls.Config{RootCAs: ca.pool, ServerName: "a.example.com", Certificates: []tls.Certificate{goodClient}})
		var r appReply
		if err := eventually(15*time.Second, func() (err error) {
			r, _, err = gatewayGet(with, url)
			return err
		}); err != nil {
			t.Fatalf("with a client certificate: %v", err)
		}
		if r.Name != "app-a" {
			t.Errorf("with a client certificate: reached %q", r.Name)
		}
		for name, certs := range map[string][]tls.Certificate{"no client certificate": nil, "a SAN not in subjectAltNames": {otherClient}} {
			c := gatewayClient(addr("mutual"), &tls.Config{RootCAs: ca.pool, ServerName: "a.example.com", Certificates: certs})
			if _, _, err := gatewayGet(c, url); err == nil {
				t.Errorf("%s: request succeeded, want the handshake refused", name)
			}
		}
	})

	t.Run("PASSTHROUGH shows the backend's own certificate", func(t *testing.T) {
		c := gatewayClient(addr("passthrough"), &tls.Config{RootCAs: backendCA.pool, ServerName: "secure.example.com"})
		url := "https://secure.example.com:" + strconv.Itoa(ports["passthrough"]) + "/p"
		var r appReply
		var leaf *x509.Certificate
		if err := eventually(15*time.Second, func() (err error) {
			r, leaf, err = gatewayGet(c, url)
			return err
		}); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		if leaf.Issuer.CommonName != "backend CA" || r.Name != "secure-backend" || r.Path != "/p" {
			t.Errorf("saw a certificate from %q and reached %q %q; want the backend's", leaf.Issuer.CommonName, r.Name, r.Path)
		}
	})

	t.Run("httpsRedirect answers 301 to https", func(t *testing.T) {
		host := "a.example.com:" + strconv.Itoa(ports["http"])
		c := gatewayClient(addr("http"), nil)
		var resp *http.Response
		if err := eventually(15*time.Second, func() error {
			var err error
			if resp, err = c.Get("http://" + host + "/path?q=1"); err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMovedPermanently {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}); err != nil {
			t.Fatalf("http://%s: %v", host, err)
		}
		if got, want := resp.Header.Get("Location"), "https://"+host+"/path?q=1"; got != want {
			t.Errorf("Location %q, want %q", got, want)
		}
		// A client claiming it came over TLS is redirected all the same:
		// the edge replaces x-forwarded-proto before routing.
		req, _ := http.NewRequest("GET", "http://"+host+"/path", nil)
		req.Header.Set("X-Forwarded-Proto", "https")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently {
			t.Errorf("plaintext request with x-forwarded-proto: https: status %d, want 301", resp.StatusCode)
		}
	})

	t.Run("TCP server forwards bytes", func(t *testing.T) {
		var reply string
		if err := eventually(15*time.Second, func() error {
			conn, err := net.DialTimeout("tcp", addr("tcp"), 2*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(conn, "hello gateway\n"); err != nil {
				return err
			}
			reply, err = bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			return nil
		}); err != nil {
			t.Fatalf("tcp %s: %v", addr("tcp"), err)
		}
		if reply != "echo: hello gateway\n" {
			t.Errorf("reply %q", reply)
		}
	})

	// Nothing of the configuration was left out.
	out := cp.mustCLI(t, "proxy-config", "listeners", gw.ID)
	for _, name := range []string{"https", "mutual", "passthrough", "http", "tcp"} {
		if !strings.Contains(out, strconv.Itoa(ports[name])) {
			t.Errorf("proxy-config listeners has no listener on port %d (%s):\n%s", ports[name], name, out)
		}
	}
}
