// TestGRPCXDS is the conformance check with a client nobody here wrote:
// grpc-go's own xDS resolver and balancer, driven by our control plane.

package controlplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/proxy"
)

// TestGRPCXDS checks the control plane with a client nobody here wrote:
// grpc-go's xDS resolver, bootstrapped at our xDS server as a proxyless
// gRPC node, routes RPCs to two real gRPC backends as a VirtualService
// says (90/10 split, header match), and follows a change. An amime
// sidecar on the same control plane gets the same assertions: it asks for
// listeners and clusters by wildcard and for routes and endpoints by name,
// which the server's cache must still answer.
func TestGRPCXDS(t *testing.T) {
	e := startGRPCXDS(t)
	v1, v2 := e.backend("v1"), e.backend("v2")
	e.apply(fmt.Sprintf(grpcxdsMesh, v1, v2) + grpcxdsVirtualService(`
  - name: canary
    match:
    - headers:
        x-canary: {exact: "yes"}
    route:
    - destination: {host: recommendation, subset: v2}
  - name: split
    route:
    - destination: {host: recommendation, subset: v1}
      weight: 90
    - destination: {host: recommendation, subset: v2}
      weight: 10`))

	clients := []struct {
		name string
		c    testgrpc.TestServiceClient
	}{
		{"grpc-go xds", e.dial("xds:///recommendation.default.svc.cluster.local:8080")},
		{"amime sidecar", e.sidecar()},
	}
	canary := metadata.Pairs("x-canary", "yes")
	for _, c := range clients {
		e.waitFor(15*time.Second, c.name+": a first RPC", func() bool {
			_, err := e.call(c.c, nil)
			return err == nil
		})

		// 90/10: the v1 share of 1000 calls has a standard deviation of
		// about 1%, so ±5% fails only when the split is wrong.
		const n = 1000
		counts := map[string]int{}
		for range n {
			name, err := e.call(c.c, nil)
			if err != nil {
				t.Fatalf("%s: call: %v\n%s", c.name, err, e.status())
			}
			counts[name]++
		}
		share := float64(counts["v1"]) / n
		t.Logf("%s: split over %d calls: v1 %d (%.1f%%), v2 %d", c.name, n, counts["v1"], 100*share, counts["v2"])
		if share < 0.85 || share > 0.95 || counts["v1"]+counts["v2"] != n {
			t.Errorf("%s: v1 got %.1f%% of calls (%v), want 90%% ± 5%%", c.name, 100*share, counts)
		}

		// Header route: every call with x-canary: yes goes to v2.
		for i := range 200 {
			if name, err := e.call(c.c, canary); err != nil || name != "v2" {
				t.Fatalf("%s: canary call %d: answered by %q, err %v; want v2", c.name, i, name, err)
			}
		}
	}

	// The short name, without port, is a target too (single-port service).
	short := e.dial("xds:///recommendation")
	e.waitFor(10*time.Second, "a call to xds:///recommendation", func() bool {
		name, err := e.call(short, canary)
		return err == nil && name == "v2"
	})

	// Everything to v2: the clients follow without reconnecting.
	e.apply(grpcxdsVirtualService(`
  - route:
    - destination: {host: recommendation, subset: v2}`))
	for _, c := range clients {
		streak := 0
		e.waitFor(10*time.Second, c.name+": all calls to go to v2", func() bool {
			// 50 in a row under the old 90/10 split: chance 1e-50.
			if name, err := e.call(c.c, nil); err == nil && name == "v2" {
				streak++
			} else {
				streak = 0
			}
			return streak == 50
		})
		for i := range 200 {
			if name, err := e.call(c.c, nil); err != nil || name != "v2" {
				t.Fatalf("%s: call %d after the change: answered by %q, err %v; want v2", c.name, i, name, err)
			}
		}
	}
	for id, problem := range e.unsynced() {
		t.Errorf("xDS node %s:%s", id, problem)
	}
}

// grpcxdsMesh is the recommendation service: a ServiceEntry selecting two
// WorkloadEntries on 127.0.0.1 (the backends' ports, %d v1 and %d v2) and
// the DestinationRule naming their subsets.
const grpcxdsMesh = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: recommendation, namespace: default}
spec:
  hosts: [recommendation.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {name: grpc, number: 8080, protocol: GRPC}
  workloadSelector:
    labels: {app: recommendation}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: recommendation-v1, namespace: default}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  labels: {app: recommendation, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: recommendation-v2, namespace: default}
spec:
  address: 127.0.0.1
  ports: {grpc: %d}
  labels: {app: recommendation, version: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: recommendation, namespace: default}
spec:
  host: recommendation
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

func grpcxdsVirtualService(http string) string {
	return `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: recommendation, namespace: default}
spec:
  hosts: [recommendation]
  http:` + http + "\n"
}

// grpcxdsEnv is a running control plane and what the test started around it.
type grpcxdsEnv struct {
	t  *testing.T
	cp *ControlPlane
	rb resolver.Builder
}

// startGRPCXDS runs a control plane on 127.0.0.1 and builds grpc-go's xds
// resolver bootstrapped at it, as a proxyless gRPC node the way Istio's
// agent writes the bootstrap (id sidecar~…, GENERATOR grpc). grpc-go reads
// GRPC_XDS_BOOTSTRAP_CONFIG once, when its package initializes, so
// t.Setenv cannot reach it; NewXDSResolverWithConfigForTesting, public in
// google.golang.org/grpc/xds, takes the same JSON.
func startGRPCXDS(t *testing.T) *grpcxdsEnv {
	e := &grpcxdsEnv{t: t}
	e.checkGoroutines()
	cp, err := New(Options{XDSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Debounce: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.cp = cp
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	bootstrap := fmt.Sprintf(`{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {
    "id": "sidecar~127.0.0.1~grpc-client.default~default.svc.cluster.local",
    "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}
  }
}`, cp.XDSAddr())
	if e.rb, err = xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap)); err != nil {
		t.Fatal(err)
	}
	return e
}

// grpcxdsBackend answers TestService.UnaryCall with its name.
type grpcxdsBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

func (b *grpcxdsBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: b.name}, nil
}

// backend serves a real gRPC backend on 127.0.0.1 and returns its port.
func (e *grpcxdsEnv) backend(name string) int {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, &grpcxdsBackend{name: name})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	e.t.Cleanup(func() { s.Stop(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

func (e *grpcxdsEnv) apply(yaml string) {
	e.t.Helper()
	objs, err := config.Decode([]byte(yaml))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.cp.Store().ApplyAll(objs); err != nil {
		e.t.Fatal(err)
	}
}

func (e *grpcxdsEnv) dial(target string) testgrpc.TestServiceClient {
	e.t.Helper()
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(e.rb))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// sidecar runs an amime proxy on the control plane, with its HTTP_PROXY
// listener on a free port of 127.0.0.1, and returns a plain gRPC client
// of it that names the service as authority: the sidecar routes by it.
func (e *grpcxdsEnv) sidecar() testgrpc.TestServiceClient {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	md, err := structpb.NewStruct(map[string]any{MetaNamespace: "default", MetaHTTPProxy: addr})
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := proxy.New(proxy.Options{
		Bootstrap: &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "sidecar~127.0.0.1~frontend.default~default.svc.cluster.local", Metadata: md}},
		XDSAddr:   e.cp.XDSAddr(), DrainDuration: time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Run(ctx)
	}()
	e.t.Cleanup(func() { cancel(); <-done })
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("recommendation.default.svc.cluster.local:8080"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// call makes one RPC and returns the name of the backend that answered.
func (e *grpcxdsEnv) call(c testgrpc.TestServiceClient, md metadata.MD) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if md != nil {
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	return resp.GetServerId(), err
}

// waitFor polls cond until it holds, failing with the xDS status of every
// node (a NACK says why) after d.
func (e *grpcxdsEnv) waitFor(d time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s\n%s", d, what, e.status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *grpcxdsEnv) status() string {
	var b strings.Builder
	for _, s := range e.cp.xds.Status() {
		fmt.Fprintf(&b, "xDS node %s: %v %s\n", s.ID, s.Types, s.Error)
	}
	return b.String()
}

// unsynced lists the nodes that have not ACKed everything sent to them
// (a NACK carries the client's reason), with what is wrong.
func (e *grpcxdsEnv) unsynced() map[string]string {
	out := map[string]string{}
	for _, s := range e.cp.xds.Status() {
		problem := ""
		if s.Error != "" {
			problem = " " + s.Error
		}
		for typ, st := range s.Types {
			if st != "SYNCED" {
				problem += fmt.Sprintf(" %s %s", typ, st)
			}
		}
		if problem != "" {
			out[s.ID] = problem
		}
	}
	return out
}

// checkGoroutines fails the test if goroutines it started outlive it. It
// is registered first, so its cleanup runs after every other.
func (e *grpcxdsEnv) checkGoroutines() {
	before := runtime.NumGoroutine()
	e.t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				e.t.Errorf("%d goroutines left running (%d before the test):\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
