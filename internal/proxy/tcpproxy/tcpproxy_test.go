package tcpproxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/amime-mesh/amime/internal/proxy/telemetry"

	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func weighted(ws ...*tcpv3.TcpProxy_WeightedCluster_ClusterWeight) *tcpv3.TcpProxy_WeightedClusters {
	return &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: ws}}
}

func cw(name string, w uint32) *tcpv3.TcpProxy_WeightedCluster_ClusterWeight {
	return &tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: name, Weight: w}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *tcpv3.TcpProxy
		want string
	}{
		{"no stat prefix", &tcpv3.TcpProxy{ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}}, "stat_prefix: must not be empty"},
		{"no cluster specifier", &tcpv3.TcpProxy{StatPrefix: "s"}, "cluster_specifier: cluster or weighted_clusters is required"},
		{"empty cluster", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{}}, "cluster: must not be empty"},
		{"no weighted clusters", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: weighted()},
			"weighted_clusters.clusters: at least one cluster is required"},
		{"unnamed weighted cluster", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: weighted(cw("a", 1), cw("", 1))},
			"weighted_clusters.clusters[1].name: must not be empty"},
		// Envoy's proto validation requires weight >= 1.
		{"zero weight", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: weighted(cw("a", 1), cw("b", 0))},
			"weighted_clusters.clusters[1].weight: must be at least 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(tc.cfg)
			if err == nil || err.Error() != tc.want {
				t.Errorf("Compile = %+v, %v; want error %q", c, err, tc.want)
			}
		})
	}
}

func TestCompileSettings(t *testing.T) {
	c, err := Compile(&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	// Envoy's default idle_timeout is one hour.
	if c.IdleTimeout != time.Hour || c.StatPrefix != "s" {
		t.Errorf("defaults: idle %v prefix %q", c.IdleTimeout, c.StatPrefix)
	}
	c, err = Compile(&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}, IdleTimeout: durationpb.New(0)})
	if err != nil || c.IdleTimeout != 0 {
		t.Errorf("idle_timeout 0s (disabled): %v, %v", c, err)
	}
}

func TestPick(t *testing.T) {
	tests := []struct {
		name string
		spec any
		want map[string]int // picks over r = 0..total-1
	}{
		{"single", &tcpv3.TcpProxy_Cluster{Cluster: "only"}, map[string]int{"only": 1}},
		{"weighted", weighted(cw("a", 1), cw("b", 3), cw("c", 2)), map[string]int{"a": 1, "b": 3, "c": 2}},
		{"one weighted", weighted(cw("a", 5)), map[string]int{"a": 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &tcpv3.TcpProxy{StatPrefix: "s"}
			switch s := tc.spec.(type) {
			case *tcpv3.TcpProxy_Cluster:
				m.ClusterSpecifier = s
			case *tcpv3.TcpProxy_WeightedClusters:
				m.ClusterSpecifier = s
			}
			c, err := Compile(m)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for r := range c.total {
				got[c.pick(r)]++
			}
			// r beyond the total wraps around: a second pass is the same.
			for r := c.total; r < 2*c.total; r++ {
				if c.pick(r) != c.pick(r-c.total) {
					t.Errorf("pick(%d) != pick(%d)", r, r-c.total)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("picks %v, want %v", got, tc.want)
			}
		})
	}
}

// server runs handle for every connection accepted on 127.0.0.1 until the
// test ends.
func server(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// clusters returns a Manager holding one static cluster per name -> address
// ("" for a cluster without endpoints).
func clusters(t *testing.T, eps map[string]string) *cluster.Manager {
	t.Helper()
	var cfgs []*clusterv3.Cluster
	for name, addr := range eps {
		cfg := &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(2 * time.Second)}
		if addr != "" {
			host, port, _ := net.SplitHostPort(addr)
			p, _ := strconv.Atoi(port)
			cfg.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
					}}},
				}}}},
			}}}
		}
		cfgs = append(cfgs, cfg)
	}
	set, err := cluster.Build(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	m := cluster.NewManager(quietLog())
	m.Replace(context.Background(), set)
	t.Cleanup(m.Close)
	return m
}

// proxy starts a listener whose connections a Handler for cfg serves, and
// returns its address.
func proxy(t *testing.T, m *tcpv3.TcpProxy, src ClusterSource) string {
	t.Helper()
	return proxyWith(t, m, src, nil)
}

func proxyWith(t *testing.T, m *tcpv3.TcpProxy, src ClusterSource, tel *telemetry.TCPMetrics) string {
	t.Helper()
	cfg, err := Compile(m)
	if err != nil {
		t.Fatal(err)
	}
	h := New(cfg, src, quietLog(), tel)
	ctx, cancel := context.WithCancel(context.Background())
	addr := server(t, func(c net.Conn) { h.ServeConn(ctx, c) })
	t.Cleanup(cancel) // runs before the server cleanup waits for handlers
	return addr
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Every read in these tests is bounded.
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

func TestEcho(t *testing.T) {
	up := server(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	addr := proxy(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"}},
		clusters(t, map[string]string{"echo": up}))
	c := dial(t, addr)
	// Several exchanges, one bigger than the copy buffer.
	for _, msg := range [][]byte{[]byte("hello"), bytes.Repeat([]byte("0123456789"), 10000), []byte("bye")} {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("reading echo of %d bytes: %v", len(msg), err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes differs", len(msg))
		}
	}
}

// Istio's TCP metrics: a connection is opened and closed once, request
// bytes are "received", response bytes "sent"; a connect failure closes
// with UF.
func TestTCPMetrics(t *testing.T) {
	up := server(t, func(c net.Conn) {
		b, err := io.ReadAll(c)
		if err == nil {
			_, _ = fmt.Fprintf(c, "got %d bytes", len(b))
		}
	})
	// Nothing listens on dead: connecting fails (UF).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	tel := telemetry.NewTCPMetrics(telemetry.Workload{Name: "client", Namespace: "default", App: "client", Version: "v1", CanonicalService: "client"})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(tel.Collectors()...)
	m := clusters(t, map[string]string{"outbound|9000||db.default.svc.cluster.local": up, "outbound|9001||gone.default.svc.cluster.local": dead})
	addr := proxyWith(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "outbound|9000||db.default.svc.cluster.local"}}, m, tel)
	c := dial(t, addr)
	if _, err := c.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 1000 bytes" {
		t.Fatalf("reply %q, %v", got, err)
	}
	c.Close()
	failAddr := proxyWith(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "outbound|9001||gone.default.svc.cluster.local"}}, m, tel)
	fc := dial(t, failAddr)
	if n, err := fc.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes through a proxy whose upstream is down", n)
	}
	value := func(name string, labels map[string]string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metric:
			for _, mt := range mf.GetMetric() {
				have := map[string]string{}
				for _, lp := range mt.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue metric
					}
				}
				return mt.GetCounter().GetValue()
			}
		}
		return -1
	}
	want := map[string]string{"reporter": "source", "source_workload": "client", "destination_service": "db.default.svc.cluster.local",
		"request_protocol": "tcp", "response_flags": "-"}
	deadline := time.Now().Add(5 * time.Second)
	for value("istio_tcp_connections_closed_total", want) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the handler records the close after the client saw EOF
	}
	for name, v := range map[string]float64{"istio_tcp_connections_opened_total": 1, "istio_tcp_connections_closed_total": 1,
		"istio_tcp_received_bytes_total": 1000, "istio_tcp_sent_bytes_total": float64(len("got 1000 bytes"))} {
		if got := value(name, want); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	gone := map[string]string{"destination_service": "gone.default.svc.cluster.local", "response_flags": "UF"}
	if got := value("istio_tcp_connections_closed_total", gone); got != 1 {
		t.Errorf("closed with UF = %v, want 1", got)
	}
	gone["response_flags"] = "-"
	if got := value("istio_tcp_connections_opened_total", gone); got != 1 {
		t.Errorf("opened (flags -) = %v, want 1", got)
	}
}

func TestHalfClose(t *testing.T) {
	// The upstream reads to EOF, then answers with what it got: the reply
	// arrives only if the client's FIN was passed on and the proxy kept the
	// other direction open.
	up := server(t, func(c net.Conn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = fmt.Fprintf(c, "got %d bytes: %s", len(b), b)
	})
	addr := proxy(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "up"}},
		clusters(t, map[string]string{"up": up}))
	c := dial(t, addr)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read after half-close: %v", err)
	}
	if string(got) != "got 7 bytes: request" {
		t.Errorf("reply %q", got)
	}
}

func TestWeightedClustersConnect(t *testing.T) {
	// Each upstream names itself; both must be reached.
	hello := func(name string) func(net.Conn) { return func(c net.Conn) { _, _ = io.WriteString(c, name) } }
	m := clusters(t, map[string]string{"a": server(t, hello("a")), "b": server(t, hello("b"))})
	addr := proxy(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: weighted(cw("a", 1), cw("b", 1))}, m)
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		c := dial(t, addr)
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(b)] = true
		c.Close()
	}
	if !seen["a"] || !seen["b"] || len(seen) != 2 {
		t.Errorf("reached %v, want a and b", seen)
	}
}

// closedPort returns an address on which nothing listens.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDownstreamClosedOnFailure(t *testing.T) {
	m := clusters(t, map[string]string{"empty": "", "refused": closedPort(t)})
	tests := []struct {
		name    string
		cluster string
	}{
		{"no cluster", "missing"},
		{"no host", "empty"},
		{"connect failure", "refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := proxy(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: tc.cluster}}, m)
			c := dial(t, addr)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(make([]byte, 1))
			// The proxy closes: EOF (or a reset), not the deadline.
			var ne net.Error
			if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				t.Errorf("read = %d, %v; want the connection closed", n, err)
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	up := server(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
	m := clusters(t, map[string]string{"echo": up})
	addr := proxy(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"},
		IdleTimeout: durationpb.New(200 * time.Millisecond)}, m)
	c := dial(t, addr)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle connection: read err %v, want closed by the proxy", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the 200ms idle timeout", d)
	}
}

func TestIdleTimeoutOneWayTraffic(t *testing.T) {
	// Envoy's idle timeout counts bytes in either direction: a client that
	// keeps sending to an upstream that never answers is not idle.
	received := make(chan int, 1)
	up := server(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		received <- int(n)
	})
	m := clusters(t, map[string]string{"sink": up})
	addr := proxy(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "sink"},
		IdleTimeout: durationpb.New(150 * time.Millisecond)}, m)
	c := dial(t, addr)
	tick := time.NewTicker(30 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for end := time.Now().Add(600 * time.Millisecond); time.Now().Before(end); <-tick.C {
		if _, err := c.Write([]byte("y")); err != nil {
			t.Fatalf("write after %d bytes: %v (closed as idle?)", sent, err)
		}
		sent++
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-received:
		if n != sent {
			t.Errorf("upstream received %d of %d bytes", n, sent)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream never saw EOF")
	}
}
