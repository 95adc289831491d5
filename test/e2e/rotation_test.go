package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/amime-mesh/amime/internal/proxy/agent"
)

// TestCertificateRotationUnderLoad runs fortio through a client sidecar to
// a reviews workload sidecar while both renew short-lived workload
// certificates several times, and checks Istio's behaviour: no request
// fails, each side renews at half life (several times, but not in a
// loop), all traffic is mTLS, and a new connection made after a rotation
// is authenticated with the new certificate, on both sides.
//
// Connections opened before a rotation keep the session they negotiated:
// TLS authenticates a peer once, at the handshake, and neither Envoy nor
// amime re-handshakes an open connection when its certificate changes (so
// the load's keep-alive connections outlive the certificate they were
// opened with, as in Istio). That is why the check of the new certificate
// is made by probes that open fresh connections: one dials the reviews
// sidecar's inbound port, one is a mesh endpoint the client sidecar must
// connect to anew for every request. Both keep TLS session resumption on,
// as sidecars do: a new connection must not resume a session negotiated
// with the previous certificate (Envoy builds a new SSL context, with a
// new session cache and ticket key, on every secret update).
func TestCertificateRotationUnderLoad(t *testing.T) {
	const (
		certTTL = 8 * time.Second // renewed every ~4s
		loadFor = 30 * time.Second
		qps     = 300
		conns   = 4
		// A probe every half second sees every certificate at least a few
		// times before the next renewal.
		probeEvery = 500 * time.Millisecond
	)
	fortio := tool(t, "fortio")

	cp := startControlPlane(t, cpOpts{secure: true})
	cp.mustApply(t, reviewsServiceEntry, "serviceentry.networking.istio.io/reviews created")

	// The certprobe identity's certificate, from the CA as a sidecar's
	// agent gets it (default lifetime: it does not rotate during the test).
	probeID := cp.identity(t, "certprobe")
	probeAgent := startAgent(t, cp.Secure, probeID[3], probeID[5], "spiffe://cluster.local/ns/default/sa/certprobe")

	app := startXFCCApp(t)
	prom := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	ttl := []string{"--cert-ttl", certTTL.String()}
	reviews := cp.startWorkload(t, "reviews-v1", "v1", app.srv,
		append(append(cp.identity(t, "reviews"), "--prometheus-addr", prom), ttl...)...)
	client := cp.startClient(t, append(cp.identity(t, "productpage"), ttl...)...)

	// certprobe is a mesh endpoint (tlsMode istio, service account
	// certprobe) that closes every connection after one response, so the
	// client sidecar opens a new one, with its current certificate, for
	// every probe.
	probeSrv := startProbeServer(t, probeAgent)
	cp.mustApply(t, certprobeServiceEntry, "serviceentry.networking.istio.io/certprobe created")
	cp.mustApply(t, certprobeWorkloadEntry(probeSrv.port), "workloadentry.networking.istio.io/certprobe created")

	httpc := meshClient(client.Listen)
	t.Cleanup(httpc.CloseIdleConnections)
	const target = "http://reviews:9080/"
	waitVersions(t, httpc, target, 15*time.Second, "v1")
	if err := eventually(15*time.Second, func() error {
		_, err := probeClientCert(httpc)
		return err
	}); err != nil {
		t.Fatalf("certprobe through the client sidecar: %v", err)
	}
	serverProbe := newServerProbe(probeAgent, reviews.Listen, "spiffe://cluster.local/ns/default/sa/reviews")
	if _, err := serverProbe.probe(); err != nil {
		t.Fatalf("mTLS probe of the reviews sidecar: %v", err)
	}

	reviewsBefore, clientBefore := certsObtained(t, reviews.proc), certsObtained(t, client.proc)
	start := time.Now()

	// Probes run beside the load until it ends.
	var (
		probeMu  sync.Mutex
		results  = map[string][]probeResult{}
		probeErr []string
	)
	record := func(side string, r probeResult, err error) {
		probeMu.Lock()
		defer probeMu.Unlock()
		if err != nil {
			probeErr = append(probeErr, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), side, err))
			return
		}
		results[side] = append(results[side], r)
	}
	loadDone := make(chan struct{})
	probesDone := make(chan struct{})
	go func() {
		defer close(probesDone)
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for {
			select {
			case <-loadDone:
				return
			case <-tick.C:
			}
			r, err := probeAt(reviews.proc, serverProbe.probe)
			record("reviews (server)", r, err)
			r, err = probeAt(client.proc, func() (probeResult, error) { return probeClientCert(httpc) })
			record("productpage (client)", r, err)
		}
	}()

	res, out, err := runFortio(t, fortio, loadFor, qps, conns, client.Listen, "reviews:9080")
	close(loadDone)
	<-probesDone
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("fortio: %v\n%s", err, out)
	}

	// 1. No request lost.
	t.Logf("fortio: %d calls in %v, %.0f qps over %d keep-alive connections, codes %v",
		res.DurationHistogram.Count, loadFor, res.ActualQPS, conns, res.RetCodes)
	if res.DurationHistogram.Count < int64(float64(qps)*loadFor.Seconds()/2) {
		t.Errorf("fortio made %d calls, want about %d", res.DurationHistogram.Count, int(qps*loadFor.Seconds()))
	}
	if res.RetCodes["200"] != res.DurationHistogram.Count || res.ErrorsDurationHistogram.Count != 0 {
		t.Errorf("return codes %v, %d errors for %d calls; want only 200", res.RetCodes, res.ErrorsDurationHistogram.Count, res.DurationHistogram.Count)
	}

	// 2. Several renewals on each side, at half life: expected about
	// elapsed/(TTL/2); twice that means renewal is not paced by the
	// certificate's lifetime.
	want := int(elapsed / (certTTL / 2))
	for _, s := range []struct {
		name          string
		before, after []obtained
	}{
		{"reviews", reviewsBefore, certsObtained(t, reviews.proc)},
		{"productpage", clientBefore, certsObtained(t, client.proc)},
	} {
		n := len(s.after) - len(s.before)
		t.Logf("%s sidecar: %d certificates obtained during the %v run (expected about %d)", s.name, n, elapsed.Round(time.Second), want)
		if n < 3 || n > 2*want+2 {
			t.Errorf("%s sidecar obtained %d certificates in %v with a %v TTL; want at least 3 and about %d (renewal at half life)%s",
				s.name, n, elapsed.Round(time.Second), certTTL, want, early(s.after))
		}
	}

	// 3. A new connection after a rotation presents the new certificate, on
	// both sides, and the CA kept the short lifetime asked for.
	probeMu.Lock()
	for _, e := range probeErr[:min(len(probeErr), 5)] {
		t.Errorf("probe failed: %s", e)
	}
	if len(probeErr) > 5 {
		t.Errorf("... %d probe failures in all", len(probeErr))
	}
	for side, rs := range results {
		serials := map[string]bool{}
		var stale, resumed int
		var firstStale string
		for _, r := range rs {
			serials[r.serial] = true
			if r.resumed {
				resumed++
			}
			if r.notAfter.Before(r.latest) {
				stale++
				if firstStale == "" {
					firstStale = fmt.Sprintf("at %s a new connection presented the certificate expiring %s (resumed session: %v), but the one expiring %s was obtained before it was opened",
						r.at.Format("15:04:05.000"), r.notAfter.Format(time.TimeOnly), r.resumed, r.latest.Format(time.TimeOnly))
				}
			}
			if life := r.notAfter.Sub(r.at); life > certTTL+time.Second {
				t.Errorf("%s: certificate valid %v more at %s; want at most the %v TTL asked for", side, life.Round(time.Second), r.at.Format(time.TimeOnly), certTTL)
			}
		}
		t.Logf("%s: %d probes on new connections saw %d certificates (%d resumed sessions)", side, len(rs), len(serials), resumed)
		if len(serials) < 3 {
			t.Errorf("%s: new connections saw %d certificates in %d probes; want at least 3 (one per rotation)", side, len(serials), len(rs))
		}
		if stale > 0 {
			t.Errorf("%s: %d of %d new connections presented a certificate older than the current one; first: %s", side, stale, len(rs), firstStale)
		}
	}
	if len(results) != 2 {
		t.Errorf("probes ran on %d sides, want 2", len(results))
	}
	probeMu.Unlock()

	// 4. All of it was mTLS with the client's identity: the application
	// saw the client sidecar's certificate on every request, and the
	// server sidecar's metrics say mutual_tls for the caller.
	byURI, plain, distinct := app.summary()
	t.Logf("reviews app: requests by client identity %v, %d plaintext, %d distinct client certificates on the load's connections", byURI, plain, distinct)
	if plain != 0 {
		t.Errorf("%d requests reached reviews without a client certificate", plain)
	}
	const productpage = "spiffe://cluster.local/ns/default/sa/productpage"
	if got := byURI[productpage]; got < res.DurationHistogram.Count {
		t.Errorf("reviews saw %d requests from %s, want at least fortio's %d", got, productpage, res.DurationHistogram.Count)
	}
	if err := eventually(10*time.Second, func() error {
		_, body, err := get(prom, "/stats/prometheus")
		if err != nil {
			return err
		}
		var mtls int64
		for _, l := range strings.Split(body, "\n") {
			if !strings.HasPrefix(l, "istio_requests_total{") || !strings.Contains(l, `reporter="destination"`) {
				continue
			}
			if !strings.Contains(l, `connection_security_policy="mutual_tls"`) {
				return fmt.Errorf("a request without mTLS: %s", l)
			}
			if strings.Contains(l, `source_principal="`+productpage+`"`) {
				v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				if err != nil {
					return fmt.Errorf("%s: %w", l, err)
				}
				mtls += int64(v)
			}
		}
		if mtls < res.DurationHistogram.Count {
			return fmt.Errorf("%d mutual_tls requests from %s, want at least fortio's %d:\n%s",
				mtls, productpage, res.DurationHistogram.Count, grepLines(body, "istio_requests_total{"))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// runFortio sends qps requests a second for d over conns keep-alive
// connections to the client sidecar's HTTP_PROXY listener, for host.
func runFortio(t *testing.T, fortio string, d time.Duration, qps, conns int, proxy, host string) (fortioResult, []byte, error) {
	t.Helper()
	var r fortioResult
	out := filepath.Join(t.TempDir(), "result.json")
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fortio, "load", "-qps", strconv.Itoa(qps), "-c", strconv.Itoa(conns),
		"-t", d.String(), "-json", out, "-H", "Host: "+host, "http://"+proxy+"/")
	log, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return r, log, fmt.Errorf("did not finish within %v", d+30*time.Second)
	}
	data, rerr := os.ReadFile(out)
	if rerr != nil {
		return r, log, fmt.Errorf("no result (%v): %w", err, rerr)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, log, fmt.Errorf("result: %w", err)
	}
	// fortio exits non-zero when calls failed; the result says which.
	return r, log, nil
}

// obtained is one "workload certificate obtained" line of a sidecar.
type obtained struct {
	at, expires, renewAt time.Time
}

var obtainedLine = regexp.MustCompile(`^time=(\S+) .*msg="workload certificate obtained".* expires=(\S+) renew_at=(\S+)`)

// certsObtained parses the sidecar's log for the certificates its agent
// obtained, in order.
func certsObtained(t *testing.T, p *proc) []obtained {
	t.Helper()
	var out []obtained
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m := obtainedLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var o obtained
		var err error
		for i, dst := range []*time.Time{&o.at, &o.expires, &o.renewAt} {
			if *dst, err = time.Parse(time.RFC3339Nano, m[i+1]); err != nil {
				t.Fatalf("%s log: %q: %v", p.name, sc.Text(), err)
			}
		}
		out = append(out, o)
	}
	return out
}

// early describes certificates whose renewal was due before they were even
// obtained, the evidence of a renewal loop.
func early(certs []obtained) string {
	var n int
	var first obtained
	for _, o := range certs {
		if o.renewAt.Before(o.at) {
			if n == 0 {
				first = o
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d of %d were due for renewal before they were obtained, e.g. obtained %s, renew_at %s, expires %s",
		n, len(certs), first.at.Format(time.RFC3339Nano), first.renewAt.Format(time.RFC3339), first.expires.Format(time.RFC3339))
}

// probeResult is the certificate a peer presented on a new connection.
type probeResult struct {
	at       time.Time // when the connection was opened
	latest   time.Time // expiry of the newest certificate the peer had logged by then
	notAfter time.Time // expiry of the certificate it presented
	serial   string
	resumed  bool // the TLS session was resumed from an earlier connection
}

// probeAt runs probe and fills in what the peer p had obtained before it.
// The agent logs a certificate after it serves it, so a connection opened
// after the line must present that certificate or a newer one.
func probeAt(p *proc, probe func() (probeResult, error)) (probeResult, error) {
	var latest time.Time
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		if m := obtainedLine.FindStringSubmatch(l); m != nil {
			if e, err := time.Parse(time.RFC3339, m[2]); err == nil && e.After(latest) {
				latest = e
			}
		}
	}
	at := time.Now()
	r, err := probe()
	r.at, r.latest = at, latest
	return r, err
}

// startAgent runs a workload agent for id, the way a sidecar does, and
// waits for its first certificate.
func startAgent(t *testing.T, addr, tokenFile, rootFile, id string) *agent.Agent {
	t.Helper()
	root, err := os.ReadFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{
		Addr: addr, RootCert: root, ID: spiffeid.RequireFromString(id),
		Token: func() (string, error) {
			b, err := os.ReadFile(tokenFile)
			return strings.TrimSpace(string(b)), err
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-a.Ready():
	case <-time.After(15 * time.Second):
		t.Fatalf("no certificate for %s within 15s", id)
	}
	return a
}

// meshVerifier checks a peer's certificate as a sidecar does: its chain
// against the mesh trust bundle, its identity against want ("" for any).
func meshVerifier(a *agent.Agent, want string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		roots, err := a.Roots(agent.RootSecret)
		if err != nil {
			return err
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if want != "" && (len(leaf.URIs) != 1 || leaf.URIs[0].String() != want) {
			return fmt.Errorf("peer is %v, want %s", leaf.URIs, want)
		}
		return nil
	}
}

// serverProbe opens a new mTLS connection to a workload sidecar's inbound
// port per probe, as a client sidecar would: with the certprobe identity
// and a session cache, so a server that resumed sessions negotiated with
// its previous certificate would be caught.
type serverProbe struct {
	addr string
	cfg  *tls.Config
}

func newServerProbe(a *agent.Agent, addr, want string) *serverProbe {
	return &serverProbe{addr: addr, cfg: &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: "outbound_.9080_._.reviews.default.svc.cluster.local",
		NextProtos: []string{"http/1.1"},
		// SVIDs carry no host name: verified by meshVerifier instead.
		InsecureSkipVerify: true,
		VerifyConnection:   meshVerifier(a, want),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return a.Certificate(agent.WorkloadSecret)
		},
		ClientSessionCache: tls.NewLRUClientSessionCache(1),
	}}
}

func (p *serverProbe) probe() (probeResult, error) {
	var r probeResult
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", p.addr, p.cfg)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	cs := conn.ConnectionState()
	leaf := cs.PeerCertificates[0]
	r.notAfter, r.serial, r.resumed = leaf.NotAfter, leaf.SerialNumber.String(), cs.DidResume
	// A request makes sure the sidecar accepted our certificate, and
	// reading its answer takes the session ticket for the next probe.
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n"); err != nil {
		return r, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("status %d", resp.StatusCode)
	}
	return r, nil
}

// probeServer is the certprobe endpoint: it requires a mesh client
// certificate, answers with what the client presented, and closes every
// connection after one response. Session tickets stay on, as on a
// sidecar's inbound port.
type probeServer struct {
	port int
}

// peerCert is probeServer's answer.
type peerCert struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
	Resumed  bool      `json:"resumed"`
}

func startProbeServer(t *testing.T, a *agent.Agent) *probeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			leaf := r.TLS.PeerCertificates[0]
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(peerCert{Serial: leaf.SerialNumber.String(), NotAfter: leaf.NotAfter, Resumed: r.TLS.DidResume})
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	tl := tls.NewListener(ln, &tls.Config{
		MinVersion:       tls.VersionTLS12,
		NextProtos:       []string{"http/1.1"},
		GetCertificate:   func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return a.Certificate(agent.WorkloadSecret) },
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: meshVerifier(a, "spiffe://cluster.local/ns/default/sa/productpage"),
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tl)
	}()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return &probeServer{port: ln.Addr().(*net.TCPAddr).Port}
}

// probeClientCert asks certprobe, through the client sidecar, which
// certificate the sidecar presented on its new connection.
func probeClientCert(c *http.Client) (probeResult, error) {
	var r probeResult
	resp, err := c.Get("http://certprobe:9080/")
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return r, fmt.Errorf("certprobe: status %d %q", resp.StatusCode, body)
	}
	var pc peerCert
	if err := json.NewDecoder(resp.Body).Decode(&pc); err != nil {
		return r, fmt.Errorf("certprobe: %w", err)
	}
	r.notAfter, r.serial, r.resumed = pc.NotAfter, pc.Serial, pc.Resumed
	return r, nil
}

// certprobeServiceEntry is reviews' ServiceEntry for the probe service.
var certprobeServiceEntry = strings.ReplaceAll(reviewsServiceEntry, "reviews", "certprobe")

// certprobeWorkloadEntry is the probe server as a workload with a
// sidecar (tlsMode istio), so the client sidecar speaks mTLS to it and
// expects the certprobe identity.
func certprobeWorkloadEntry(port int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: certprobe
spec:
  address: 127.0.0.1
  ports: {http: %d}
  labels: {app: certprobe, security.istio.io/tlsMode: istio}
  serviceAccount: certprobe
`, port)
}

// xfccApp is the reviews application: it answers as reviews v1 and counts
// the client identities and certificates the sidecar forwarded in
// x-forwarded-client-cert.
type xfccApp struct {
	srv    *httptest.Server
	mu     sync.Mutex
	byURI  map[string]int64
	hashes map[string]bool
	plain  int64
}

func startXFCCApp(t *testing.T) *xfccApp {
	t.Helper()
	a := &xfccApp{byURI: map[string]int64{}, hashes: map[string]bool{}}
	reply, err := json.Marshal(appReply{Name: "reviews-v1", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.record(r.Header.Get("X-Forwarded-Client-Cert"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(reply)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *xfccApp) record(xfcc string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if xfcc == "" {
		a.plain++
		return
	}
	var uri, hash string
	for _, f := range strings.Split(xfcc, ";") {
		if v, ok := strings.CutPrefix(f, "URI="); ok {
			uri = v
		} else if v, ok := strings.CutPrefix(f, "Hash="); ok {
			hash = v
		}
	}
	a.byURI[uri]++
	if uri == "spiffe://cluster.local/ns/default/sa/productpage" {
		a.hashes[hash] = true
	}
}

func (a *xfccApp) summary() (byURI map[string]int64, plain int64, distinct int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	byURI = make(map[string]int64, len(a.byURI))
	for k, v := range a.byURI {
		byURI[k] = v
	}
	return byURI, a.plain, len(a.hashes)
}
