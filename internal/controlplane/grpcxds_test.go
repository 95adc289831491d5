//go:build grpcxds

// The build tag keeps this file out of default builds until go.sum holds
// the modules google.golang.org/grpc/xds needs (go-spiffe, x/oauth2,
// x/sync, cloud.google.com/go/auth, …); without them `go vet ./...` and
// `go test ./...` would fail to build this package. Run it with
//
//	go test -tags grpcxds ./internal/controlplane/ -run TestGRPCXDS

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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/amime-mesh/amime/internal/config"
)

// TestGRPCXDS checks the control plane with a client nobody here wrote:
// grpc-go's xDS resolver, bootstrapped at our xDS server as a proxyless
// gRPC node, routes RPCs to two real gRPC backends as a VirtualService
// says (90/10 split, header match), and follows a change.
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

	client := e.dial("xds:///recommendation.default.svc.cluster.local:8080")
	e.waitFor(15*time.Second, "a first RPC through xDS", func() bool {
		_, err := e.call(client, nil)
		return err == nil
	})

	// 90/10: the v1 share of 1000 calls has a standard deviation of about
	// 1%, so ±5% fails only when the split is wrong.
	const n = 1000
	counts := map[string]int{}
	for range n {
		name, err := e.call(client, nil)
		if err != nil {
			t.Fatalf("call: %v\n%s", err, e.status())
		}
		counts[name]++
	}
	share := float64(counts["v1"]) / n
	t.Logf("split over %d calls: v1 %d (%.1f%%), v2 %d", n, counts["v1"], 100*share, counts["v2"])
	if share < 0.85 || share > 0.95 || counts["v1"]+counts["v2"] != n {
		t.Errorf("v1 got %.1f%% of calls (%v), want 90%% ± 5%%", 100*share, counts)
	}

	// Header route: every call with x-canary: yes goes to v2.
	canary := metadata.Pairs("x-canary", "yes")
	for i := range 200 {
		if name, err := e.call(client, canary); err != nil || name != "v2" {
			t.Fatalf("canary call %d: answered by %q, err %v; want v2", i, name, err)
		}
	}

	// The short name, without port, is a target too (single-port service).
	short := e.dial("xds:///recommendation")
	e.waitFor(10*time.Second, "a call to xds:///recommendation", func() bool {
		name, err := e.call(short, canary)
		return err == nil && name == "v2"
	})

	// Everything to v2: the client follows without reconnecting.
	e.apply(grpcxdsVirtualService(`
  - route:
    - destination: {host: recommendation, subset: v2}`))
	streak := 0
	e.waitFor(10*time.Second, "all calls to go to v2", func() bool {
		// 50 in a row under the old 90/10 split: chance 1e-50.
		if name, err := e.call(client, nil); err == nil && name == "v2" {
			streak++
		} else {
			streak = 0
		}
		return streak == 50
	})
	for i := range 200 {
		if name, err := e.call(client, nil); err != nil || name != "v2" {
			t.Fatalf("call %d after the change: answered by %q, err %v; want v2", i, name, err)
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
