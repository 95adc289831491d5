package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMutualTLSBetweenSidecars runs a control plane with its CA, a
// reviews workload and client sidecars with and without a join token, and
// checks Istio's behaviour: auto mTLS with the caller's SPIFFE identity
// reaching the application (x-forwarded-client-cert) and the server's
// metrics; PERMISSIVE (the default) also takes plaintext; STRICT refuses
// it; a proxy asking for another identity than its token's gets nothing.
func TestMutualTLSBetweenSidecars(t *testing.T) {
	cp := startControlPlane(t, cpOpts{secure: true})
	cp.mustApply(t, reviewsServiceEntry, "serviceentry.networking.istio.io/reviews created")
	prom := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	reviews := cp.startWorkload(t, "reviews-v1", "v1", startApp(t, "reviews-v1", "v1"),
		append(cp.identity(t, "reviews"), "--prometheus-addr", prom)...)
	secured := cp.startClient(t, cp.identity(t, "productpage")...)
	plain := cp.startClient(t, "--node-id", "sidecar~127.0.0.1~plain.default")
	mtlsc, plainc := meshClient(secured.Listen), meshClient(plain.Listen)
	t.Cleanup(mtlsc.CloseIdleConnections)
	t.Cleanup(plainc.CloseIdleConnections)
	const target = "http://reviews:9080/"
	waitVersions(t, mtlsc, target, 15*time.Second, "v1")

	r, err := call(mtlsc, target)
	if err != nil {
		t.Fatal(err)
	}
	xfcc := r.Headers["x-forwarded-client-cert"]
	if !strings.Contains(xfcc, "By=spiffe://cluster.local/ns/default/sa/reviews;") ||
		!strings.Contains(xfcc, ";URI=spiffe://cluster.local/ns/default/sa/productpage") {
		t.Errorf("x-forwarded-client-cert = %q, want the server (By) and the client (URI) identities", xfcc)
	}
	// The admin /certs shows the workload certificate and the trust bundle.
	var certs struct {
		Certificates []struct {
			CACert []struct {
				SerialNumber string `json:"serial_number"`
			} `json:"ca_cert"`
			CertChain []struct {
				SubjectAltNames []map[string]string `json:"subject_alt_names"`
				DaysUntilExpiry int                 `json:"days_until_expiration"`
			} `json:"cert_chain"`
		} `json:"certificates"`
	}
	if _, body, err := get(reviews.Admin, "/certs"); err != nil || json.Unmarshal([]byte(body), &certs) != nil ||
		len(certs.Certificates) != 1 || len(certs.Certificates[0].CACert) != 1 || len(certs.Certificates[0].CertChain) != 1 ||
		certs.Certificates[0].CertChain[0].SubjectAltNames[0]["uri"] != "spiffe://cluster.local/ns/default/sa/reviews" {
		t.Errorf("/certs: %v\n%s", err, body)
	}
	// PERMISSIVE by default: plaintext from a proxy without identity works,
	// and carries no client certificate.
	waitVersions(t, plainc, target, 10*time.Second, "v1")
	if r, err := call(plainc, target); err != nil || r.Headers["x-forwarded-client-cert"] != "" {
		t.Errorf("plaintext call: %v, x-forwarded-client-cert %q (want none)", err, r.Headers["x-forwarded-client-cert"])
	}

	// The server sidecar reports the caller's identity.
	if err := eventually(10*time.Second, func() error {
		_, body, err := get(prom, "/stats/prometheus")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "istio_requests_total{") && strings.Contains(l, `reporter="destination"`) &&
				strings.Contains(l, `connection_security_policy="mutual_tls"`) &&
				strings.Contains(l, `source_principal="spiffe://cluster.local/ns/default/sa/productpage"`) &&
				strings.Contains(l, `destination_principal="spiffe://cluster.local/ns/default/sa/reviews"`) {
				return nil
			}
		}
		return fmt.Errorf("no mutual_tls series with both principals in:\n%s", grepLines(body, "istio_requests_total{"))
	}); err != nil {
		t.Error(err)
	}

	// STRICT: plaintext is refused, mTLS still works.
	cp.mustApply(t, `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
`, "peerauthentication.security.istio.io/default created")
	if err := eventually(10*time.Second, func() error {
		_, err := call(plainc, target)
		if err == nil {
			return fmt.Errorf("plaintext still accepted")
		}
		if !strings.Contains(err.Error(), "status 503") {
			return fmt.Errorf("plaintext: %v, want 503", err)
		}
		return nil
	}); err != nil {
		_, dump, _ := get(reviews.Admin, "/config_dump")
		t.Fatalf("%v\nreviews config:\n%s", err, dump)
	}
	for i := 0; i < 20; i++ {
		if _, err := call(mtlsc, target); err != nil {
			t.Fatalf("mTLS call %d under STRICT: %v", i, err)
		}
	}

	// Principal and namespace rules, matched against the mTLS peer.
	ratings := cp.startClient(t, append(cp.identity(t, "ratings"), "--node-id", "sidecar~127.0.0.1~ratings.default")...)
	ratingsc := meshClient(ratings.Listen)
	t.Cleanup(ratingsc.CloseIdleConnections)
	status := func(c *http.Client) int {
		resp, err := c.Get(target)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	policy := func(name, source string) {
		cp.mustApply(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-callers, namespace: default}
spec:
  selector:
    matchLabels: {app: reviews}
  rules:
  - from:
    - source: %s
`, source), "authorizationpolicy.security.istio.io/reviews-callers "+name)
	}
	expect := func(step string, want map[*http.Client]int) {
		t.Helper()
		if err := eventually(10*time.Second, func() error {
			for c, code := range want {
				if got := status(c); got != code {
					return fmt.Errorf("%s: got %d, want %d", step, got, code)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	policy("created", `{principals: [cluster.local/ns/default/sa/productpage]}`)
	expect("principal rule", map[*http.Client]int{mtlsc: 200, ratingsc: 403})
	policy("configured", `{namespaces: [prod]}`)
	expect("namespace rule, other namespace", map[*http.Client]int{mtlsc: 403, ratingsc: 403})
	policy("configured", `{namespaces: [default], notPrincipals: [cluster.local/ns/default/sa/ratings]}`)
	expect("namespace with notPrincipals", map[*http.Client]int{mtlsc: 200, ratingsc: 403})

	// A proxy whose token is for "reviews" but that asks to be "admin".
	dir := cp.identity(t, "reviews")
	impostor := startProc(t, "impostor", amimeBin, "proxy", "--xds", cp.Secure, "--token-file", dir[3], "--root-cert", dir[5],
		"--service-account", "admin", "--admin-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))))
	if err := eventually(10*time.Second, func() error {
		if out := impostor.stderr.String(); !strings.Contains(out, "PermissionDenied") {
			return fmt.Errorf("no refusal yet")
		}
		return nil
	}); err != nil {
		t.Errorf("impostor: %v", err)
	}
	if !strings.Contains(cp.stderr.String(), "refused certificate for another identity") {
		t.Errorf("the control plane did not log the refusal")
	}
	if code, _, err := get(impostor.cmd.Args[len(impostor.cmd.Args)-1], "/ready"); err == nil && code == http.StatusOK {
		t.Errorf("impostor is ready")
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
