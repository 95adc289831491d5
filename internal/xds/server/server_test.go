package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/amime-mesh/amime/internal/proxy"
)

// fakeGen is a Generator whose output the test changes: a listener on port
// with one route answering body via direct_response.
type fakeGen struct {
	mu    sync.Mutex
	port  int
	body  string
	bad   bool // emit a field the proxy rejects
	calls int
}

func (g *fakeGen) set(body string, bad bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.body, g.bad = body, bad
}

func (g *fakeGen) Generate(node *corev3.Node, _ uint64) (Config, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	router, _ := anypb.New(&routerv3.Router{})
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "t",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r",
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	}
	if g.bad {
		hcm.Via = "unsupported"
	}
	hcmAny, _ := anypb.New(hcm)
	lis := &listenerv3.Listener{
		Name:         "l",
		Address:      &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(g.port)}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny}}}}},
	}
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: g.body + " for " + node.GetId()}}}},
	}}}}}
	return Config{resourcev3.ListenerType: {MustSet(resourcev3.ListenerType, lis)}, resourcev3.RouteType: {MustSet(resourcev3.RouteType, rc)}}, nil
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startServer runs the xDS server on 127.0.0.1.
func startServer(t *testing.T, gen Generator, reg prometheus.Registerer) (*Server, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := New(Options{Generator: gen, Debounce: 20 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: reg})
	g := grpc.NewServer()
	s.Register(ctx, g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = g.Serve(ln) }()
	go func() { defer wg.Done(); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); g.Stop(); wg.Wait() })
	return s, ln.Addr().String()
}

// startProxy runs a real amime proxy against addr.
func startProxy(t *testing.T, addr, id string, delta bool) {
	t.Helper()
	p, err := proxy.New(proxy.Options{Bootstrap: &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: id}}, XDSAddr: addr, Delta: delta,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DrainDuration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// gathered returns a gauge's value or a histogram's sample count.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if h := m.GetHistogram(); h != nil {
			return float64(h.GetSampleCount())
		}
		return m.GetGauge().GetValue()
	}
	return 0
}

func body(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestServerPushesAndTracksProxies(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			gen := &fakeGen{port: freePort(t), body: "v1"}
			reg := prometheus.NewRegistry()
			s, addr := startServer(t, gen, reg)
			startProxy(t, addr, "proxy-a", delta)
			url := fmt.Sprintf("http://127.0.0.1:%d/", gen.port)
			waitFor(t, 10*time.Second, "v1 served", func() bool { return body(url) == "v1 for proxy-a" })
			waitFor(t, 5*time.Second, "SYNCED", func() bool {
				st := s.Status()
				return len(st) == 1 && st[0].Types["LDS"] == "SYNCED" && st[0].Types["RDS"] == "SYNCED"
			})
			if got := gathered(t, reg, "pilot_xds"); got != 1 {
				t.Errorf("pilot_xds = %v, want 1", got)
			}

			gen.set("v2", false)
			s.Push("config")
			waitFor(t, 5*time.Second, "v2 served", func() bool { return body(url) == "v2 for proxy-a" })
			waitFor(t, 5*time.Second, "RDS SYNCED again", func() bool { return s.Status()[0].Types["RDS"] == "SYNCED" })
			st := s.Status()[0]
			if st.Types["LDS"] != "SYNCED" {
				t.Errorf("LDS %q after a route-only change", st.Types["LDS"])
			}
			if gathered(t, reg, "amime_proxy_convergence_seconds") == 0 {
				t.Error("no convergence observed")
			}

			gen.set("v3", true)
			s.Push("config")
			waitFor(t, 5*time.Second, "NACK", func() bool { return strings.HasPrefix(s.Status()[0].Types["LDS"], "NACK: ") })
			if msg := s.Status()[0].Types["LDS"]; !strings.Contains(msg, "via: field is not supported by amime") {
				t.Errorf("NACK reason %q does not name the field", msg)
			}
			// xDS types are accepted independently (as in Envoy): the listener
			// update is refused, the route update in the same push is not.
			if got := body(url); got != "v3 for proxy-a" {
				t.Errorf("after the LDS NACK the proxy serves %q, want v3 from the accepted RDS update", got)
			}
			if st := s.Status()[0].Types["RDS"]; st != "SYNCED" {
				t.Errorf("RDS %q, want SYNCED", st)
			}
			res, err := s.Resources("proxy-a")
			if err != nil || len(res["LDS"]) != 1 || len(res["RDS"]) != 1 {
				t.Errorf("Resources: %v %v", res, err)
			}
		})
	}
}

func TestServerForgetsDisconnectedProxies(t *testing.T) {
	gen := &fakeGen{port: freePort(t), body: "x"}
	s, addr := startServer(t, gen, nil)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := proxy.New(proxy.Options{Bootstrap: &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "gone"}}, XDSAddr: addr, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DrainDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	waitFor(t, 5*time.Second, "connected", func() bool { return len(s.Status()) == 1 })
	cancel()
	<-done
	waitFor(t, 5*time.Second, "forgotten", func() bool { return len(s.Status()) == 0 })
	if _, err := s.Resources("gone"); err == nil {
		t.Error("snapshot of a disconnected proxy kept")
	}
}

func TestDebounceCoalescesBursts(t *testing.T) {
	gen := &fakeGen{port: freePort(t), body: "x"}
	s, addr := startServer(t, gen, nil)
	startProxy(t, addr, "p", false)
	waitFor(t, 5*time.Second, "connected", func() bool { return len(s.Status()) == 1 && s.Status()[0].Types["LDS"] == "SYNCED" })
	gen.mu.Lock()
	before := gen.calls
	gen.mu.Unlock()
	for i := 0; i < 50; i++ {
		s.Push("burst")
	}
	waitFor(t, 5*time.Second, "a push", func() bool { gen.mu.Lock(); defer gen.mu.Unlock(); return gen.calls > before })
	// Give a second push the chance to happen if debouncing were broken:
	// the bound is the debounce interval, polled, not a fixed sleep.
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	gen.mu.Lock()
	defer gen.mu.Unlock()
	if gen.calls-before != 1 {
		t.Errorf("50 push requests in a burst caused %d generations, want 1", gen.calls-before)
	}
}
