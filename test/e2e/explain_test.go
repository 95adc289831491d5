package e2e

// `amime explain` against a running mesh: the explanation must be what
// the proxies then do with real requests.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// explainUntil runs `amime explain ARGS` until its output contains every
// want (the control plane pushes config asynchronously), and returns the
// last output. The command must always exit 0: the explanation is the
// output, whatever the verdict.
func explainUntil(t *testing.T, cp *controlPlane, d time.Duration, args []string, want ...string) string {
	t.Helper()
	var last cliResult
	err := eventually(d, func() error {
		last = cp.cli(t, append([]string{"explain"}, args...)...)
		if last.code != 0 {
			return fmt.Errorf("exit %d: %s", last.code, last.stderr)
		}
		for _, w := range want {
			if !strings.Contains(last.stdout, w) {
				return fmt.Errorf("output lacks %q", w)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("amime explain %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, last.stdout, last.stderr)
	}
	return last.stdout
}

// statusThrough sends one request through the client sidecar and returns
// the status and body.
func statusThrough(c *http.Client, method, target string) (int, string, error) {
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return resp.StatusCode, string(b), nil
}

// waitStatus sends requests until one answers code.
func waitStatus(t *testing.T, c *http.Client, method, target string, code int, d time.Duration) string {
	t.Helper()
	var body string
	err := eventually(d, func() error {
		got, b, err := statusThrough(c, method, target)
		if err != nil {
			return err
		}
		body = b
		if got != code {
			return fmt.Errorf("status %d %q", got, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s %s: want %d within %v: %v", method, target, code, d, err)
	}
	return body
}

func TestExplain(t *testing.T) {
	m := startReviewsMesh(t, cpOpts{})
	cp := m.cp

	// Both versions answer: the explanation lists both sidecars' inbound
	// sides and the application reached behind each.
	out := explainUntil(t, cp, 5*time.Second, []string{"--from", "client", m.reviews},
		"GET http://reviews:9080/reviews/1 from client → 50%: reaches reviews-v", "reaches reviews-v1", "reaches reviews-v2",
		"reviews-v1 ("+m.v1.ID+"), inbound", "reviews-v2 ("+m.v2.ID+"), inbound")
	t.Logf("no VirtualService:\n%s", out)

	// A route to subset v1 without a DestinationRule: no cluster (NC).
	cp.mustApply(t, reviewsVS(100, 0), "virtualservice.networking.istio.io/reviews created")
	out = explainUntil(t, cp, 5*time.Second, []string{"--from", "client", m.reviews},
		"→ 503 NC cluster_not_found: no cluster outbound|9080|v1|reviews.default.svc.cluster.local",
		"fix: define subset v1 in a DestinationRule for reviews",
		"keeps serving its previous route table for up to 5s",
		"[VirtualService default/reviews]")
	t.Logf("missing subset:\n%s", out)
	// Reality: the client sidecar answers 503 itself, once its route
	// table goes live: a table naming an unknown cluster waits up to 5s
	// for it (route warming), as the explanation says.
	waitStatus(t, m.httpc, http.MethodGet, m.reviews, http.StatusServiceUnavailable, 10*time.Second)

	// With the subsets defined, v1 answers.
	cp.mustApply(t, reviewsDestinationRule, "destinationrule.networking.istio.io/reviews created")
	explainUntil(t, cp, 5*time.Second, []string{"--from", "client", m.reviews}, "→ reaches reviews-v1")
	waitVersions(t, m.httpc, m.reviews, 5*time.Second, "v1")

	// An AuthorizationPolicy denying POST: explain names it, and a real
	// POST through the client sidecar gets the same 403.
	cp.mustApply(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-post
spec:
  selector:
    matchLabels: {app: reviews}
  action: DENY
  rules:
  - to:
    - operation:
        methods: [POST]
`, "authorizationpolicy.security.istio.io/deny-post created")
	args := []string{"--from", "client", "-X", "POST", "-H", "x-user: alice", m.reviews}
	out = explainUntil(t, cp, 5*time.Second, args,
		"POST http://reviews:9080/reviews/1 from client → 403 RBAC: denied by AuthorizationPolicy default/deny-post",
		"rbac: denied  [AuthorizationPolicy default/deny-post]")
	t.Logf("deny POST:\n%s", out)
	body := waitStatus(t, m.httpc, http.MethodPost, m.reviews, http.StatusForbidden, 5*time.Second)
	if !strings.Contains(body, "RBAC: access denied") {
		t.Errorf("real POST: body %q, want the RBAC filter's", body)
	}
	// GET is still allowed, in the explanation and for real.
	explainUntil(t, cp, 5*time.Second, []string{"--from", "client", m.reviews}, "→ reaches reviews-v1")
	if code, b, err := statusThrough(m.httpc, http.MethodGet, m.reviews); err != nil || code != http.StatusOK {
		t.Errorf("real GET after deny-post: %d %q %v, want 200", code, b, err)
	}

	// -o json is the API's Trail.
	js := cp.mustCLI(t, "explain", "--from", "client", "-X", "POST", "-o", "json", m.reviews)
	var trail struct {
		Summary  string `json:"summary"`
		Outcomes []struct {
			Percent float64 `json:"percent"`
			Status  int     `json:"status"`
			By      string  `json:"by"`
		} `json:"outcomes"`
		Hops []struct {
			Proxy string `json:"proxy"`
			Side  string `json:"side"`
		} `json:"hops"`
	}
	if err := json.Unmarshal([]byte(js), &trail); err != nil {
		t.Fatalf("explain -o json: %v\n%s", err, js)
	}
	if len(trail.Outcomes) != 1 || trail.Outcomes[0].Status != 403 || trail.Outcomes[0].Percent != 100 ||
		trail.Outcomes[0].By != "AuthorizationPolicy default/deny-post" {
		t.Errorf("json outcomes %+v", trail.Outcomes)
	}
	if len(trail.Hops) != 2 || trail.Hops[0].Proxy != m.client.ID || trail.Hops[1].Proxy != m.v1.ID || trail.Hops[1].Side != "inbound" {
		t.Errorf("json hops %+v", trail.Hops)
	}

	// A source that is not connected is an error, not an explanation.
	if r := cp.cli(t, "explain", "--from", "ratings", m.reviews); r.code == 0 || !strings.Contains(r.stderr, "no connected proxy is \"ratings\"") {
		t.Errorf("unknown source: exit %d, stderr %q", r.code, r.stderr)
	}
}
