package e2e

// End-to-end tests of the control plane driving real sidecars: config
// changes while traffic flows, refused config, restarts, self-registered
// workloads, and the proxy-status/proxy-config views. The harness is in
// cp_harness_test.go.

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// convergeWithin is how soon after `amime apply` returns every request
// must follow the new config (debounce 50ms + push + table swap).
const convergeWithin = time.Second

func isVersion(v string) func(sample) bool {
	return func(s sample) bool { return s.err == nil && s.version == v }
}

func TestApplyChangeDeleteWhileTrafficFlows(t *testing.T) {
	m := startReviewsMesh(t, cpOpts{})
	loop := startTraffic(t, m.client.Listen, m.reviews, 2)

	// Each step: change the config, then check that the requests started
	// from convergeWithin after the CLI returned on all follow it. Wall
	// clock times are logged to place any failed request.
	step := func(name string, doc string, match func(sample) bool, wantOut ...string) {
		t.Helper()
		r := m.cp.cli(t, "apply", "-f", writeFile(t, "step.yaml", doc))
		t0 := time.Now()
		for _, want := range wantOut {
			if r.code != 0 || !slices.Contains(strings.Split(r.stdout, "\n"), want) {
				t.Fatalf("%s: exit %d, printed %q%s; want a line %q", name, r.code, r.stdout, r.stderr, want)
			}
		}
		d := loop.convergence(t, t0, convergeWithin, 300*time.Millisecond, match)
		t.Logf("%s: apply returned at %s; converged %v later", name, t0.Format("15:04:05.000"), d.Round(time.Millisecond))
		if d > convergeWithin {
			t.Errorf("%s: took %v to converge, want ≤ %v", name, d.Round(time.Millisecond), convergeWithin)
		}
	}
	// One apply with both: the subsets the route names arrive with it.
	step("100% v1", reviewsDestinationRule+"---\n"+reviewsVS(100, 0), isVersion("v1"),
		"destinationrule.networking.istio.io/reviews created", "virtualservice.networking.istio.io/reviews created")
	v2 := reviewsVS(0, 100)
	step("100% v2", v2, isVersion("v2"), "virtualservice.networking.istio.io/reviews configured")

	// Without the VirtualService, the DestinationRule alone routes
	// nowhere in particular: both versions answer again. The first v1
	// answer after all-v2 is the change.
	r := m.cp.cli(t, "delete", "-f", writeFile(t, "v2.yaml", v2))
	t0 := time.Now()
	if r.code != 0 || !strings.Contains(r.stdout, "virtualservice.networking.istio.io/reviews deleted") {
		t.Fatalf("delete vs: exit %d, printed %q%s", r.code, r.stdout, r.stderr)
	}
	var firstV1 time.Duration
	if err := eventually(convergeWithin+2*time.Second, func() error {
		seen := map[string]bool{}
		for _, s := range loop.since(t0) {
			if s.err == nil && !seen[s.version] {
				seen[s.version] = true
				if s.version == "v1" {
					firstV1 = s.start.Sub(t0)
				}
			}
		}
		if !seen["v1"] || !seen["v2"] {
			return fmt.Errorf("versions seen since the delete: %v", seen)
		}
		return nil
	}); err != nil {
		t.Fatalf("after deleting the VirtualService: %v", err)
	}
	t.Logf("delete: returned at %s; both versions answer again, the first v1 %v later", t0.Format("15:04:05.000"), firstV1.Round(time.Millisecond))
	if firstV1 > convergeWithin {
		t.Errorf("delete: v1 back after %v, want ≤ %v", firstV1.Round(time.Millisecond), convergeWithin)
	}

	loop.halt()
	all := loop.all()
	if n, desc := failures(all); n > 0 {
		t.Errorf("%d of %d requests failed while config changed:%s", n, len(all), desc)
	} else {
		t.Logf("%d requests, none failed", len(all))
	}
	// The loop must really have run across all three changes.
	if len(all) < 200 {
		t.Errorf("only %d requests made; the loop did not keep traffic flowing", len(all))
	}
}

func TestInvalidApplyLeavesConfigServing(t *testing.T) {
	m := startReviewsMesh(t, cpOpts{})
	m.cp.mustApply(t, reviewsDestinationRule+"---\n"+reviewsVS(0, 100), "virtualservice.networking.istio.io/reviews created")
	waitOnly(t, m.httpc, m.reviews, 5*time.Second, "v2", 20)
	goodYAML := m.cp.mustCLI(t, "get", "vs", "reviews", "-o", "yaml")
	m.cp.waitSynced(t, 5*time.Second, m.allProxies())
	updates := map[*sidecar]map[string]string{}
	for _, p := range []*sidecar{m.client, m.v1, m.v2} {
		updates[p] = p.xdsUpdates(t)
	}

	invalid := []struct{ name, doc, path string }{
		{"weights sum to 90", reviewsVS(30, 60), "spec.http[0].route[1].weight"},
		{"unknown field", strings.Replace(reviewsVS(0, 100), "subset: v2", "subsett: v2", 1),
			"spec.http[0].route[1].destination"},
		{"bad regex", strings.Replace(reviewsVS(100, 0), "  - route:", "  - match:\n    - uri: {regex: \"a(b\"}\n    route:", 1),
			"spec.http[0].match[0].uri.regex"},
		// All or nothing: a valid change to reviews must not be applied
		// when another document of the same apply is refused.
		{"valid doc then invalid doc", reviewsVS(100, 0) + "---\n" + strings.Replace(reviewsVS(50, 40), "reviews", "ratings", -1),
			"spec.http[0].route[1].weight"},
	}
	loop := startTraffic(t, m.client.Listen, m.reviews, 2)
	t0 := time.Now()
	for i := range 20 {
		c := invalid[i%len(invalid)]
		r := m.cp.applyYAML(t, c.doc)
		if r.code == 0 {
			t.Errorf("apply #%d (%s): exit 0, want a refusal; printed %q", i, c.name, r.stdout)
			continue
		}
		if !strings.Contains(r.stderr, c.path) {
			t.Errorf("apply #%d (%s): error %q does not name %s", i, c.name, strings.TrimSpace(r.stderr), c.path)
		}
		if strings.Contains(r.stdout, "configured") || strings.Contains(r.stdout, "created") {
			t.Errorf("apply #%d (%s): refused but printed %q", i, c.name, r.stdout)
		}
	}
	burst := time.Since(t0)
	// Keep the loop running a little past the burst: a late push of a
	// refused config would show here.
	time.Sleep(300 * time.Millisecond)
	loop.halt()

	// The stored object is byte for byte the last good one (same
	// resourceVersion: nothing was written).
	if got := m.cp.mustCLI(t, "get", "vs", "reviews", "-o", "yaml"); got != goodYAML {
		t.Errorf("get vs -o yaml changed after refused applies:\n%s\nwant:\n%s", got, goodYAML)
	}
	var vs struct {
		Spec struct {
			HTTP []struct {
				Route []struct {
					Destination struct{ Subset string }
					Weight      int
				}
			}
		}
	}
	if err := yaml.Unmarshal([]byte(goodYAML), &vs); err != nil {
		t.Fatalf("get vs -o yaml: %v", err)
	}
	if len(vs.Spec.HTTP) != 1 || len(vs.Spec.HTTP[0].Route) != 2 || vs.Spec.HTTP[0].Route[1].Destination.Subset != "v2" || vs.Spec.HTTP[0].Route[1].Weight != 100 {
		t.Errorf("get vs -o yaml is not the last good spec (100%% v2):\n%s", goodYAML)
	}
	if out := m.cp.cli(t, "get", "vs", "ratings"); out.code == 0 {
		t.Errorf("ratings exists after an apply that was refused as a whole:\n%s", out.stdout)
	}

	ss := loop.since(t0)
	if n, desc := failures(ss); n > 0 {
		t.Errorf("%d of %d requests failed during the invalid applies:%s", n, len(ss), desc)
	}
	for _, s := range ss {
		if s.err == nil && s.version != "v2" {
			t.Errorf("request at %v answered by %s; the last good config sends everything to v2", s.start.Sub(t0).Round(time.Millisecond), s.version)
			break
		}
	}
	if len(ss) < 20 {
		t.Errorf("only %d requests during the burst", len(ss))
	}

	m.cp.waitSynced(t, 5*time.Second, m.allProxies())
	// Refused config never reaches a proxy: no proxy accepted an update.
	for p, before := range updates {
		if after := p.xdsUpdates(t); !maps.Equal(after, before) {
			t.Errorf("%s: xDS updates %v -> %v across refused applies, want none", p.name, before, after)
		}
	}
	t.Logf("20 invalid applies in %v refused; %d requests all served by v2; proxies SYNCED", burst.Round(time.Millisecond), len(ss))
}

// manyResources is n ServiceEntries and n VirtualServices (svc-000...):
// each VirtualService sends its host to reviews, so a request proves the
// proxy has it.
func manyResources(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc-%03[1]d
spec:
  hosts: [svc-%03[1]d.default.svc.cluster.local]
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  resolution: STATIC
  workloadSelector:
    labels:
      app: svc-%03[1]d
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc-%03[1]d
spec:
  hosts: [svc-%03[1]d.default.svc.cluster.local]
  http:
  - route:
    - destination:
        host: reviews.default.svc.cluster.local
        port: {number: 9080}
`, i)
	}
	return b.String()
}

func TestRestartKeepsEverything(t *testing.T) {
	const n = 100
	m := startReviewsMesh(t, cpOpts{})
	r := m.cp.cli(t, "apply", "-f", writeFile(t, "many.yaml", manyResources(n)))
	if r.code != 0 {
		t.Fatalf("apply %d resources: exit %d: %s", 2*n, r.code, r.stderr)
	}
	if got := strings.Count(r.stdout, " created\n"); got != 2*n {
		t.Fatalf("apply printed %d created lines, want %d:\n%s", got, 2*n, r.stdout)
	}
	svc := "http://svc-042:9080/x"
	waitVersions(t, m.httpc, svc, 5*time.Second, "v1", "v2")

	count := func() (int, int) {
		se := m.cp.mustCLI(t, "get", "serviceentries", "-A", "-o", "json")
		vs := m.cp.mustCLI(t, "get", "virtualservices", "-A", "-o", "json")
		return countJSONObjects(t, se, "svc-"), countJSONObjects(t, vs, "svc-")
	}
	if se, vs := count(); se != n || vs != n {
		t.Fatalf("before restart: %d ServiceEntries, %d VirtualServices, want %d each", se, vs, n)
	}

	m.cp.kill9(t)
	// The data plane does not need the control plane to keep serving.
	for _, u := range []string{m.reviews, svc} {
		if _, err := call(m.httpc, u); err != nil {
			t.Errorf("with the control plane down: %v", err)
		}
	}

	m.cp.restart(t)
	restarted := time.Now()
	if se, vs := count(); se != n || vs != n {
		t.Errorf("after kill -9 and restart: %d ServiceEntries, %d VirtualServices, want %d each", se, vs, n)
	}
	if out := m.cp.mustCLI(t, "get", "serviceentries", "reviews"); !strings.Contains(out, "reviews") {
		t.Errorf("reviews ServiceEntry missing after restart:\n%s", out)
	}
	for _, w := range []*sidecar{m.v1, m.v2} {
		if r := m.cp.cli(t, "get", "workloadentries", w.Name); r.code != 0 {
			t.Errorf("WorkloadEntry %s missing after restart: %s", w.Name, r.stderr)
		}
	}
	m.cp.waitSynced(t, 10*time.Second, m.allProxies())
	t.Logf("all proxies SYNCED %v after the restarted control plane was ready", time.Since(restarted).Round(time.Millisecond))

	waitVersions(t, m.httpc, svc, 5*time.Second, "v1", "v2")
	if out := m.cp.mustCLI(t, "get", "virtualservices", "svc-042", "-o", "wide"); !strings.Contains(out, "svc-042.default.svc.cluster.local") {
		t.Errorf("get virtualservices svc-042 -o wide after restart: no host:\n%s", out)
	}
	// The restarted control plane drives the proxies: a new rule applies.
	m.cp.mustApply(t, reviewsDestinationRule+"---\n"+reviewsVS(0, 100), "virtualservice.networking.istio.io/reviews created")
	waitOnly(t, m.httpc, m.reviews, 2*time.Second, "v2", 20)
}

func TestRegisteredWorkloadLifecycle(t *testing.T) {
	const (
		unhealthyAfter = 2 * time.Second
		removeAfter    = 4 * time.Second
		// The control plane asks for three heartbeats per lease, so the
		// last one before a crash is at most this old.
		heartbeat = unhealthyAfter / 3
		slack     = time.Second // push and processing on 2 shared cores
		cluster   = "outbound|9080||reviews.default.svc.cluster.local"
	)
	cp := startControlPlane(t, cpOpts{unhealthyAfter: unhealthyAfter, removeAfter: removeAfter})
	cp.mustApply(t, reviewsServiceEntry, "serviceentry.networking.istio.io/reviews created")
	stay := cp.startWorkload(t, "reviews-stay", "v1", startApp(t, "reviews-stay", "v1"))
	term := cp.startWorkload(t, "reviews-term", "v1", startApp(t, "reviews-term", "v1"))
	crash := cp.startWorkload(t, "reviews-crash", "v1", startApp(t, "reviews-crash", "v1"))
	client := cp.startClient(t)
	httpc := meshClient(client.Listen)
	t.Cleanup(httpc.CloseIdleConnections)
	target := "http://reviews:9080/"
	name := func(r appReply) string { return r.Name }
	waitAnswers(t, httpc, target, 10*time.Second, name, stay.Name, term.Name, crash.Name)

	out := cp.mustCLI(t, "get", "workloadentries")
	for _, w := range []*sidecar{stay, term, crash} {
		if !strings.Contains(out, w.Name) {
			t.Errorf("get workloadentries does not list %s:\n%s", w.Name, out)
		}
	}
	var we struct {
		Metadata struct {
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			Address string            `json:"address"`
			Labels  map[string]string `json:"labels"`
			Ports   map[string]int    `json:"ports"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(cp.mustCLI(t, "get", "workloadentries", stay.Name, "-o", "json")), &we); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("127.0.0.1:%d", we.Spec.Ports["http"]); want != stay.Listen || we.Spec.Address != "127.0.0.1" ||
		we.Spec.Labels["app"] != "reviews" || we.Spec.Labels["version"] != "v1" {
		t.Errorf("WorkloadEntry %s: %+v; want address 127.0.0.1, port http = the sidecar's %s, labels app=reviews,version=v1", stay.Name, we.Spec, stay.Listen)
	}
	stayRV := we.Metadata.ResourceVersion

	// SIGTERM: the sidecar unregisters as it starts draining.
	t0 := time.Now()
	term.signal(t, syscall.SIGTERM)
	var gone time.Duration
	if err := eventually(unhealthyAfter, func() error {
		if r := cp.cli(t, "get", "workloadentries", term.Name); r.code == 0 {
			return fmt.Errorf("%s still registered", term.Name)
		}
		gone = time.Since(t0)
		return nil
	}); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
	t.Logf("SIGTERM: %s unregistered after %v", term.Name, gone.Round(time.Millisecond))
	// "At once" means well before its lease would lapse.
	if gone > unhealthyAfter/2 {
		t.Errorf("SIGTERM: unregistered after %v, want well under the %v lease", gone.Round(time.Millisecond), unhealthyAfter)
	}
	if err := eventually(2*time.Second, func() error {
		if _, ok := cp.endpoints(t, client.ID, cluster)[term.Listen]; ok {
			return fmt.Errorf("%s still in the client's EDS", term.Listen)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if code, ok := term.waitExit(5 * time.Second); !ok || code != 0 {
		t.Errorf("%s after SIGTERM: exited=%v code %d, want a clean exit", term.Name, ok, code)
	}

	// SIGKILL: no goodbye. Traffic keeps flowing meanwhile; once the
	// client proxy has the host as unhealthy, nothing may fail or reach it.
	loop := startTraffic(t, client.Listen, target, 1)
	t0 = time.Now()
	if err := crash.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, ok := crash.waitExit(5 * time.Second); !ok {
		t.Fatal("SIGKILLed sidecar not reaped")
	}
	conns := countConns(t, crash.Listen)
	// Poll the control plane's view and the client proxy's own; also
	// check that the live workload never lapses meanwhile (its heartbeats
	// must keep up with a lease shorter than the default interval).
	var unhealthy, proxyUnhealthy, removed observed
	err := eventually(removeAfter+slack+time.Second, func() error {
		unhealthy.check(t0, func() bool {
			eps := cp.endpoints(t, client.ID, cluster)
			if h := eps[stay.Listen]; h != "" {
				t.Errorf("live workload %s is %s in the client's EDS at %v", stay.Name, h, time.Since(t0).Round(time.Millisecond))
			}
			return eps[crash.Listen] == "UNHEALTHY"
		})
		proxyUnhealthy.check(t0, func() bool {
			return strings.Contains(client.adminHealth(t, cluster, crash.Listen), "failed_eds_health")
		})
		removed.check(t0, func() bool { return cp.cli(t, "get", "workloadentries", crash.Name).code != 0 })
		if !unhealthy.seen || !proxyUnhealthy.seen || !removed.seen {
			return fmt.Errorf("UNHEALTHY in EDS: %v, in the proxy: %v, removed: %v", unhealthy, proxyUnhealthy, removed)
		}
		return nil
	})
	loop.halt()
	if err != nil {
		t.Fatalf("after SIGKILL: %v", err)
	}
	t.Logf("SIGKILL: UNHEALTHY in EDS %v (proxy %v), removed %v after the kill (lease %v/%v, heartbeat %v)",
		unhealthy, proxyUnhealthy, removed, unhealthyAfter, removeAfter, heartbeat)
	// The last heartbeat came at most one interval before the kill, and
	// the change takes a push (debounce 50ms) to show.
	unhealthy.within(t, "UNHEALTHY in EDS", unhealthyAfter-heartbeat, unhealthyAfter+slack)
	removed.within(t, "WorkloadEntry removed", removeAfter-heartbeat, removeAfter+slack)
	if err := eventually(convergeWithin, func() error {
		if _, ok := cp.endpoints(t, client.ID, cluster)[crash.Listen]; ok {
			return fmt.Errorf("%s still in the client's EDS %v after its WorkloadEntry was removed", crash.Listen, convergeWithin)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	ss := loop.since(t0.Add(proxyUnhealthy.by))
	if n, desc := failures(ss); n > 0 {
		t.Errorf("%d of %d requests failed after the proxy marked the dead host unhealthy:%s", n, len(ss), desc)
	}
	if len(ss) < 20 {
		t.Errorf("only %d requests after the host turned unhealthy", len(ss))
	}
	for _, s := range ss {
		if s.err == nil && s.name != stay.Name {
			t.Errorf("request at %v answered by %s, want %s (the only live instance)", s.start.Sub(t0).Round(time.Millisecond), s.name, stay.Name)
			break
		}
	}
	// Allow for a request already on its way when the update landed.
	if n := conns.after(t0.Add(proxyUnhealthy.by + 100*time.Millisecond)); n > 0 {
		t.Errorf("%d connections to the dead sidecar's address after the client proxy marked it unhealthy", n)
	}
	t.Logf("dead host address got %d connections in all after SIGKILL", conns.after(t0))

	// The live workload was never re-registered: its lease never lapsed.
	if err := json.Unmarshal([]byte(cp.mustCLI(t, "get", "workloadentries", stay.Name, "-o", "json")), &we); err != nil {
		t.Fatal(err)
	}
	if we.Metadata.ResourceVersion != stayRV {
		t.Errorf("%s: resourceVersion %s -> %s: it was removed and registered again although alive", stay.Name, stayRV, we.Metadata.ResourceVersion)
	}
	if _, err := call(httpc, target); err != nil {
		t.Errorf("after the lifecycle: %v", err)
	}
}

func TestProxyStatusAndConfig(t *testing.T) {
	const (
		v1Cluster   = "outbound|9080|v1|reviews.default.svc.cluster.local"
		v2Cluster   = "outbound|9080|v2|reviews.default.svc.cluster.local"
		mainCluster = "outbound|9080||reviews.default.svc.cluster.local"
	)
	m := startReviewsMesh(t, cpOpts{})
	rows := m.cp.waitSynced(t, 5*time.Second, m.allProxies())
	if len(rows) != 3 {
		t.Errorf("proxy-status lists %d proxies, want 3 (client, reviews-v1, reviews-v2): %v", len(rows), rows)
	}

	clusters := func() string { return m.cp.mustCLI(t, "proxy-config", "clusters", m.client.ID) }
	if out := clusters(); !strings.Contains(out, mainCluster) || strings.Contains(out, v1Cluster) {
		t.Errorf("proxy-config clusters before the DestinationRule: want %s and no subset clusters:\n%s", mainCluster, out)
	}

	m.cp.mustApply(t, reviewsDestinationRule, "destinationrule.networking.istio.io/reviews created")
	t0 := time.Now()
	if err := eventually(convergeWithin, func() error {
		out := clusters()
		for _, c := range []string{v1Cluster, v2Cluster} {
			if !strings.Contains(out, c) {
				return fmt.Errorf("no %s in:\n%s", c, out)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("proxy-config clusters after the DestinationRule: %v", err)
	}
	t.Logf("subset clusters in proxy-config %v after apply returned", time.Since(t0).Round(time.Millisecond))
	// The row is an EDS cluster, as istioctl shows it.
	for _, l := range strings.Split(clusters(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == v1Cluster && (len(f) != 2 || f[1] != "EDS") {
			t.Errorf("proxy-config clusters row %q, want %s EDS", l, v1Cluster)
		}
	}
	// Each subset holds exactly its version's sidecar.
	if eps := m.cp.endpoints(t, m.client.ID, v1Cluster); len(eps) != 1 || eps[m.v1.Listen] != "" {
		t.Errorf("%s endpoints %v, want only %s healthy", v1Cluster, eps, m.v1.Listen)
	}
	// SYNCED means the proxy has it: its own admin agrees.
	if err := eventually(2*time.Second, func() error {
		if h := m.client.adminHealth(t, v1Cluster, m.v1.Listen); h != "healthy" {
			return fmt.Errorf("client proxy's /clusters: %s host %s health %q, want healthy", v1Cluster, m.v1.Listen, h)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	after := m.cp.waitSynced(t, 5*time.Second, m.allProxies())
	if after[m.client.ID].Version == rows[m.client.ID].Version {
		t.Errorf("client version %s unchanged after a DestinationRule that added clusters", after[m.client.ID].Version)
	}

	// Listeners: the client's HTTP_PROXY listener, the workload's inbound.
	_, port, _ := strings.Cut(m.client.Listen, ":")
	wantName := "127.0.0.1_" + port
	found := false
	for _, l := range strings.Split(m.cp.mustCLI(t, "proxy-config", "listeners", m.client.ID), "\n") {
		if f := strings.Fields(l); slices.Contains(f, wantName) {
			found = true
			if f[len(f)-1] != m.client.Listen {
				t.Errorf("listener row %q, want address %s", l, m.client.Listen)
			}
		}
	}
	if !found {
		t.Errorf("proxy-config listeners %s has no %s", m.client.ID, wantName)
	}
	var lds struct {
		LDS []struct {
			Name    string `json:"name"`
			Address struct {
				SocketAddress struct {
					PortValue int `json:"port_value"`
				} `json:"socket_address"`
			} `json:"address"`
		}
	}
	if err := json.Unmarshal([]byte(m.cp.mustCLI(t, "proxy-config", "listeners", m.client.ID, "-o", "json")), &lds); err != nil {
		t.Fatal(err)
	}
	if len(lds.LDS) != 1 || lds.LDS[0].Name != wantName || fmt.Sprint(lds.LDS[0].Address.SocketAddress.PortValue) != port {
		t.Errorf("proxy-config listeners -o json: %+v, want only %s", lds.LDS, wantName)
	}
	if out := m.cp.mustCLI(t, "proxy-config", "listeners", m.v1.ID); !strings.Contains(out, m.v1.Listen) {
		t.Errorf("proxy-config listeners %s has no inbound listener on %s:\n%s", m.v1.ID, m.v1.Listen, out)
	}
	if out := m.cp.mustCLI(t, "proxy-config", "routes", m.client.ID); !strings.Contains(out, "http_proxy") {
		t.Errorf("proxy-config routes %s has no http_proxy route:\n%s", m.client.ID, out)
	}

	// Deleting the DestinationRule (KIND NAME form) takes its subsets away.
	if out := m.cp.mustCLI(t, "delete", "destinationrule", "reviews"); !strings.Contains(out, "destinationrule.networking.istio.io/reviews deleted") {
		t.Errorf("delete destinationrule reviews printed %q", out)
	}
	if err := eventually(convergeWithin, func() error {
		if out := clusters(); strings.Contains(out, v1Cluster) {
			return fmt.Errorf("%s still served after the DestinationRule was deleted", v1Cluster)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	if r := m.cp.cli(t, "proxy-config", "clusters", "sidecar~127.0.0.1~nobody.default"); r.code == 0 || !strings.Contains(r.stderr, "nobody") {
		t.Errorf("proxy-config for an unknown proxy: exit %d, %q; want an error naming it", r.code, r.stderr)
	}
}
