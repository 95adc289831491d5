package xdsclient

import (
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
)

// The snapshot cache in ADS mode answers a named request only when it names
// every resource of that type in the snapshot, so snapshots hold exactly the
// referenced routes and endpoints.
var (
	specV1 = snapshotSpec{
		version:   "v1",
		listeners: map[string]string{"L1": "R1"},
		routes:    map[string]string{"R1": "C1"},
		clusters:  []string{"C1", "C2"},
		endpoints: map[string]uint32{"C1": 1001, "C2": 1002},
	}
	// specV2 repoints L1 to R2, replaces C2 by C3 and moves C1's endpoint.
	specV2 = snapshotSpec{
		version:   "v2",
		listeners: map[string]string{"L1": "R2"},
		routes:    map[string]string{"R2": "C3"},
		clusters:  []string{"C1", "C3"},
		endpoints: map[string]uint32{"C1": 2001, "C3": 2003},
	}
)

// waitSynced waits until the handler holds exactly the v1 or v2 view.
func waitSynced(t *testing.T, h *recHandler, spec snapshotSpec) {
	t.Helper()
	var routes []string
	for _, r := range spec.listeners {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	clusters := slices.Sorted(slices.Values(spec.clusters))
	waitFor(t, "LDS "+spec.version, func() bool { return h.hasNames(ListenerType, "L1") })
	waitFor(t, "CDS "+spec.version, func() bool { return h.hasNames(ClusterType, clusters...) })
	waitFor(t, "RDS "+spec.version, func() bool { return h.hasNames(RouteType, routes...) })
	waitFor(t, "EDS "+spec.version, func() bool {
		if !h.hasNames(EndpointType, clusters...) {
			return false
		}
		for _, c := range clusters {
			if claPort(h.get(EndpointType, c)) != spec.endpoints[c] {
				return false
			}
		}
		return true
	})
	waitFor(t, "L1 route "+spec.version, func() bool {
		r, err := listenerRoute(h.get(ListenerType, "L1"))
		return err == nil && r == spec.listeners["L1"]
	})
}

// noEmptyFullStateUpdates checks the handler never lost LDS/CDS (e.g. on disconnect).
func noEmptyFullStateUpdates(t *testing.T, h *recHandler) {
	t.Helper()
	for _, u := range h.history() {
		if (u.typeURL == ListenerType || u.typeURL == ClusterType) && len(u.names) == 0 {
			t.Errorf("handler got an empty %s set", u.typeURL)
		}
	}
}

// TestProxyFlow covers wildcard LDS/CDS, named RDS/EDS subscribed from inside
// OnUpdate (as the proxy does), ACKs, a new snapshot version with changes and
// removals, against a real go-control-plane snapshot cache.
func TestProxyFlow(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			checkGoroutines(t)
			snaps := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
			setSnapshot(t, snaps, specV1)
			srv := startXDSServer(t, "127.0.0.1:0", snaps)

			h := newRecHandler()
			var c *Client
			h.follow = proxyFollow(&c)
			c = newTestClient(t, srv.addr, m.delta, h)
			c.Wildcard(ListenerType)
			c.Wildcard(ClusterType)
			runClient(t, c)

			waitSynced(t, h, specV1)
			for _, typ := range []string{ListenerType, ClusterType, RouteType, EndpointType} {
				waitFor(t, "ACK of "+typ, func() bool { return srv.rec.ackSeen(m.delta, typ, "v1") })
				waitFor(t, "status of "+typ, func() bool {
					s := c.Status()
					ts := s.Types[typ]
					return s.Connected && ts.Connected && ts.Version == "v1" && !ts.NACKed && ts.Nonce != "" && !ts.LastUpdate.IsZero()
				})
			}
			if got := c.Status().Types[RouteType].Names; !slices.Equal(got, []string{"R1"}) {
				t.Errorf("RDS subscription = %v, want [R1]", got)
			}

			setSnapshot(t, snaps, specV2)
			waitSynced(t, h, specV2)
			for _, typ := range []string{ListenerType, ClusterType} {
				waitFor(t, "ACK of v2 "+typ, func() bool { return srv.rec.ackSeen(m.delta, typ, "v2") })
			}
			if m.delta {
				// C2 must have gone away through removed_resources, not a local prune (CDS is wildcard).
				found := false
				for _, r := range srv.rec.deltaResponses() {
					if r.GetTypeUrl() == ClusterType && slices.Contains(r.GetRemovedResources(), "C2") {
						found = true
					}
				}
				if !found {
					t.Errorf("server never sent C2 in removed_resources")
				}
			}
			noEmptyFullStateUpdates(t, h)
		})
	}
}

// TestPartialResponsesMerged uses go-control-plane linear caches, which send
// only changed resources for EDS: the client must merge EDS by name but treat
// CDS (SotW) responses as the full set, and drop unsubscribed names.
func TestPartialResponsesMerged(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			checkGoroutines(t)
			cds := cachev3.NewLinearCache(ClusterType, cachev3.WithInitialResources(map[string]types.Resource{
				"c1": makeCluster("c1"), "c2": makeCluster("c2"),
			}))
			eds := cachev3.NewLinearCache(EndpointType, cachev3.WithInitialResources(map[string]types.Resource{
				"c1": makeCLA("c1", 1001), "c2": makeCLA("c2", 1002),
			}))
			srv := startXDSServer(t, "127.0.0.1:0", muxCache(map[string]cachev3.Cache{ClusterType: cds, EndpointType: eds}))

			h := newRecHandler()
			c := newTestClient(t, srv.addr, m.delta, h)
			c.Wildcard(ClusterType)
			c.Watch(EndpointType, []string{"c1", "c2"})
			runClient(t, c)
			waitFor(t, "CDS", func() bool { return h.hasNames(ClusterType, "c1", "c2") })
			waitFor(t, "EDS", func() bool { return h.hasNames(EndpointType, "c1", "c2") })

			// Update c1 only: the server sends just c1; c2 must be kept.
			before := len(srv.rec.sotwResponses()) + len(srv.rec.deltaResponses())
			if err := eds.UpdateResource("c1", makeCLA("c1", 2001)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "c1 update", func() bool { return claPort(h.get(EndpointType, "c1")) == 2001 })
			if !h.hasNames(EndpointType, "c1", "c2") {
				t.Fatalf("EDS after partial update = %v, want [c1 c2]", h.names(EndpointType))
			}
			if n := lastResponseSize(srv.rec, m.delta, EndpointType, before); n != 1 {
				t.Fatalf("server sent %d EDS resources, want a partial response with 1", n)
			}

			// Delete cluster c2: SotW resends CDS without it, delta removes it.
			if err := cds.DeleteResource("c2"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "c2 deletion", func() bool { return h.hasNames(ClusterType, "c1") })

			// Unsubscribing drops c2 from the EDS set and tells the server.
			c.Watch(EndpointType, []string{"c1"})
			waitFor(t, "EDS unsubscription", func() bool { return h.hasNames(EndpointType, "c1") })
			waitFor(t, "unsubscribe request", func() bool {
				if m.delta {
					for _, q := range srv.rec.deltaRequests() {
						if slices.Equal(q.GetResourceNamesUnsubscribe(), []string{"c2"}) {
							return true
						}
					}
					return false
				}
				reqs := srv.rec.sotwRequests()
				for _, q := range slices.Backward(reqs) {
					if q.GetTypeUrl() == EndpointType {
						return slices.Equal(q.GetResourceNames(), []string{"c1"})
					}
				}
				return false
			})
			if claPort(h.get(EndpointType, "c1")) != 2001 {
				t.Errorf("c1 changed by unsubscription of c2")
			}
		})
	}
}

func muxCache(caches map[string]cachev3.Cache) *cachev3.MuxCache {
	return &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        caches,
	}
}

// lastResponseSize is the resource count of the last response of typeURL
// among those sent after index skip (counting SotW and delta together).
func lastResponseSize(rec *recorder, delta bool, typeURL string, skip int) int {
	n := -1
	if delta {
		for _, r := range rec.deltaResponses()[skip:] {
			if r.GetTypeUrl() == typeURL {
				n = len(r.GetResources())
			}
		}
		return n
	}
	for _, r := range rec.sotwResponses()[skip:] {
		if r.GetTypeUrl() == typeURL {
			n = len(r.GetResources())
		}
	}
	return n
}

// TestNACK: a handler error NACKs with the previous version and the response
// nonce, and the previous set stays current (an update that only touches
// another name is merged into the old set, not the rejected one).
func TestNACK(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			checkGoroutines(t)
			eds := cachev3.NewLinearCache(EndpointType, cachev3.WithInitialResources(map[string]types.Resource{
				"c1": makeCLA("c1", 1001), "c2": makeCLA("c2", 1002),
			}))
			srv := startXDSServer(t, "127.0.0.1:0", muxCache(map[string]cachev3.Cache{EndpointType: eds}))

			h := newRecHandler()
			h.reject = func(typeURL string, res map[string]*anypb.Any) error {
				for name, a := range res {
					if claPort(a) == 9999 {
						return &rejectErr{name}
					}
				}
				return nil
			}
			c := newTestClient(t, srv.addr, m.delta, h)
			c.Watch(EndpointType, []string{"c1", "c2"})
			runClient(t, c)
			waitFor(t, "EDS", func() bool { return h.hasNames(EndpointType, "c1", "c2") })
			waitFor(t, "ACK", func() bool { return c.Status().Types[EndpointType].Version != "" })
			good := c.Status().Types[EndpointType].Version

			if err := eds.UpdateResource("c1", makeCLA("c1", 9999)); err != nil {
				t.Fatal(err)
			}
			const msg = "port 9999 not allowed in c1"
			var version, nonce string
			var code int32
			waitFor(t, "NACK", func() bool {
				var ok bool
				version, nonce, code, ok = srv.rec.nackSeen(m.delta, EndpointType, msg)
				return ok
			})
			if code != int32(codes.InvalidArgument) {
				t.Errorf("NACK code = %d, want InvalidArgument", code)
			}
			if !m.delta && version != good {
				t.Errorf("NACK version_info = %q, want previous %q", version, good)
			}
			if want := lastNonce(srv.rec, m.delta, EndpointType); nonce != want {
				t.Errorf("NACK nonce = %q, want the rejected response's %q", nonce, want)
			}
			st := c.Status().Types[EndpointType]
			if !st.NACKed || st.Version != good || st.LastNACK == "" {
				t.Errorf("status after NACK = %+v", st)
			}
			if claPort(h.get(EndpointType, "c1")) != 1001 {
				t.Errorf("handler state changed by rejected update")
			}

			if err := eds.UpdateResource("c2", makeCLA("c2", 3002)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "c2 update", func() bool { return claPort(h.get(EndpointType, "c2")) == 3002 })
			if p := claPort(h.get(EndpointType, "c1")); p != 1001 {
				t.Errorf("c1 port = %d, want the last accepted 1001", p)
			}
			if st := c.Status().Types[EndpointType]; st.NACKed || st.LastNACK == "" {
				t.Errorf("status after recovery = %+v", st)
			}
		})
	}
}

type rejectErr struct{ name string }

func (e *rejectErr) Error() string { return "port 9999 not allowed in " + e.name }

func lastNonce(rec *recorder, delta bool, typeURL string) string {
	var n string
	if delta {
		for _, r := range rec.deltaResponses() {
			if r.GetTypeUrl() == typeURL {
				n = r.GetNonce()
			}
		}
		return n
	}
	for _, r := range rec.sotwResponses() {
		if r.GetTypeUrl() == typeURL {
			n = r.GetNonce()
		}
	}
	return n
}

// TestReconnect: the client keeps its state while the server is down,
// reconnects to a new server on the same address, resends node, subscriptions
// and versions, and takes updates from it.
func TestReconnect(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			checkGoroutines(t)
			snaps := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
			setSnapshot(t, snaps, specV1)
			srv1 := startXDSServer(t, "127.0.0.1:0", snaps)

			h := newRecHandler()
			var c *Client
			h.follow = proxyFollow(&c)
			c = newTestClient(t, srv1.addr, m.delta, h)
			c.Wildcard(ListenerType)
			c.Wildcard(ClusterType)
			runClient(t, c)
			waitSynced(t, h, specV1)
			waitFor(t, "EDS ACK", func() bool { return srv1.rec.ackSeen(m.delta, EndpointType, "v1") })

			srv1.stop()
			waitFor(t, "disconnect", func() bool { return !c.Status().Connected })
			if st := c.Status().Types[ClusterType]; st.Version != "v1" || st.Resources != 2 || st.Connected {
				t.Errorf("status while disconnected = %+v", st)
			}

			snaps2 := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
			setSnapshot(t, snaps2, specV1)
			srv2 := startXDSServer(t, srv1.addr, snaps2)
			waitFor(t, "reconnect", func() bool { return c.Status().Connected })
			waitFor(t, "resubscription", func() bool { return resubscribed(srv2.rec, m.delta) })
			waitSynced(t, h, specV1)

			setSnapshot(t, snaps2, specV2)
			waitSynced(t, h, specV2)
			noEmptyFullStateUpdates(t, h)
		})
	}
}

// resubscribed checks the first requests on the new server: the node on the
// first one and, per type, the previous subscription with what we hold.
func resubscribed(rec *recorder, delta bool) bool {
	want := map[string][]string{ListenerType: nil, ClusterType: nil, RouteType: {"R1"}, EndpointType: {"C1", "C2"}}
	if delta {
		reqs := rec.deltaRequests()
		if len(reqs) < len(want) || reqs[0].GetNode().GetId() != testNodeID {
			return false
		}
		seen := map[string]bool{}
		for _, q := range reqs {
			names, ok := want[q.GetTypeUrl()]
			if !ok || seen[q.GetTypeUrl()] {
				continue
			}
			seen[q.GetTypeUrl()] = true
			// Initial request: what we subscribe to, and versions of what we hold.
			if q.GetResponseNonce() != "" || !slices.Equal(q.GetResourceNamesSubscribe(), names) || len(q.GetInitialResourceVersions()) == 0 {
				return false
			}
		}
		return len(seen) == len(want)
	}
	reqs := rec.sotwRequests()
	if len(reqs) < len(want) || reqs[0].GetNode().GetId() != testNodeID {
		return false
	}
	seen := map[string]bool{}
	for _, q := range reqs {
		names, ok := want[q.GetTypeUrl()]
		if !ok || seen[q.GetTypeUrl()] {
			continue
		}
		seen[q.GetTypeUrl()] = true
		if q.GetResponseNonce() != "" || q.GetVersionInfo() != "v1" || !slices.Equal(q.GetResourceNames(), names) {
			return false
		}
	}
	return len(seen) == len(want)
}

// TestWatchWhileDisconnected: a subscription change made while the server is
// down takes effect locally at once and is what the client asks for on reconnect.
func TestWatchWhileDisconnected(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			checkGoroutines(t)
			newEDS := func() cachev3.Cache {
				return muxCache(map[string]cachev3.Cache{EndpointType: cachev3.NewLinearCache(EndpointType,
					cachev3.WithInitialResources(map[string]types.Resource{"c1": makeCLA("c1", 1001), "c2": makeCLA("c2", 1002)}))})
			}
			srv1 := startXDSServer(t, "127.0.0.1:0", newEDS())
			h := newRecHandler()
			c := newTestClient(t, srv1.addr, m.delta, h)
			c.Watch(EndpointType, []string{"c1", "c2"})
			runClient(t, c)
			waitFor(t, "EDS", func() bool { return h.hasNames(EndpointType, "c1", "c2") })
			waitFor(t, "ACK", func() bool { return c.Status().Types[EndpointType].Version != "" })
			version := c.Status().Types[EndpointType].Version

			srv1.stop()
			waitFor(t, "disconnect", func() bool { return !c.Status().Connected })
			c.Watch(EndpointType, []string{"c1"})
			waitFor(t, "local unsubscription", func() bool { return h.hasNames(EndpointType, "c1") })

			srv2 := startXDSServer(t, srv1.addr, newEDS())
			waitFor(t, "resubscription", func() bool {
				if m.delta {
					reqs := srv2.rec.deltaRequests()
					return len(reqs) > 0 && slices.Equal(reqs[0].GetResourceNamesSubscribe(), []string{"c1"}) &&
						len(reqs[0].GetInitialResourceVersions()) == 1 && reqs[0].GetInitialResourceVersions()["c1"] != ""
				}
				reqs := srv2.rec.sotwRequests()
				return len(reqs) > 0 && slices.Equal(reqs[0].GetResourceNames(), []string{"c1"}) && reqs[0].GetVersionInfo() == version
			})
			waitFor(t, "reconnected", func() bool { return c.Status().Types[EndpointType].Connected })
			if !h.hasNames(EndpointType, "c1") {
				t.Errorf("EDS after reconnect = %v, want [c1]", h.names(EndpointType))
			}
		})
	}
}
