package listener

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amime-mesh/amime/internal/proxy/cluster"
	"github.com/amime-mesh/amime/internal/proxy/hcm"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// tcpFilter is a tcp_proxy network filter to cluster.
func tcpFilter(cluster string) *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{
		TypedConfig: mustAny(&tcpv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}),
	}}
}

// fc is a filter chain named name whose tcp_proxy goes to the cluster of
// the same name.
func fc(name string, m *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m, Filters: []*listenerv3.Filter{tcpFilter(name)}}
}

func httpInspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.http_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspv3.HttpInspector{})}}
}

func sockAddr(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func lis(chains ...*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{Name: "l", Address: sockAddr("127.0.0.1", 0), FilterChains: chains}
}

func deps() *Deps { return &Deps{Clusters: cluster.NewManager(quietLog()), Log: quietLog()} }

func TestCompileErrors(t *testing.T) {
	with := func(f func(*listenerv3.Listener)) *listenerv3.Listener {
		l := lis(fc("a", nil))
		f(l)
		return l
	}
	tests := []struct {
		name string
		l    *listenerv3.Listener
		want string
	}{
		{"no socket address", with(func(l *listenerv3.Listener) { l.Address = nil }), "address.socket_address: required"},
		{"udp", with(func(l *listenerv3.Listener) { l.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP }),
			"address.socket_address.protocol: only TCP is supported"},
		{"hostname address", with(func(l *listenerv3.Listener) { l.Address = sockAddr("localhost", 80) }),
			`address.socket_address.address: "localhost" is not an IP address`},
		{"no name", with(func(l *listenerv3.Listener) { l.Name = "" }), "name: must not be empty"},
		{"unsupported listener filter", with(func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "tls", ConfigType: &listenerv3.ListenerFilter_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}}}
		}), `listener_filters[0].typed_config: type "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst" is not supported by amime`},
		{"listener filter without config", with(func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.http_inspector"}}
		}), `listener_filters[0]: type "" is not supported by amime`},
		{"negative filter timeout", with(func(l *listenerv3.Listener) { l.ListenerFiltersTimeout = durationpb.New(-time.Second) }),
			"listener_filters_timeout: must be a non-negative duration"},
		{"no filter chain", lis(), "filter_chains: at least one filter chain is required"},
		{"tls transport", lis(fc("a", &listenerv3.FilterChainMatch{TransportProtocol: "tls"})),
			`filter_chains[0].filter_chain_match.transport_protocol: "tls" needs the envoy.filters.listener.tls_inspector listener filter`},
		{"unknown transport", lis(fc("a", &listenerv3.FilterChainMatch{TransportProtocol: "quic"})),
			`filter_chains[0].filter_chain_match.transport_protocol: "quic" is not supported by amime (want raw_buffer or tls)`},
		{"application protocols without inspector", lis(fc("a", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2c"}})),
			"filter_chains[0].filter_chain_match.application_protocols: needs the envoy.filters.listener.http_inspector or tls_inspector listener filter"},
		{"bad prefix", lis(fc("a", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{{AddressPrefix: "10.0.0.0/8"}}})),
			`filter_chains[0].filter_chain_match.prefix_ranges[0].address_prefix: ParseAddr("10.0.0.0/8"): unexpected character (at "/8")`},
		{"prefix length above 128", lis(fc("a", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{{AddressPrefix: "::", PrefixLen: wrapperspb.UInt32(129)}}})),
			"filter_chains[0].filter_chain_match.prefix_ranges[0].prefix_len: must be at most 128"},
		{"no network filter", lis(&listenerv3.FilterChain{}),
			"filter_chains[0].filters: a terminal network filter (http_connection_manager or tcp_proxy) is required"},
		{"two network filters", lis(&listenerv3.FilterChain{Filters: []*listenerv3.Filter{tcpFilter("a"), tcpFilter("b")}}),
			`filter_chains[0].filters[0].typed_config: type "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" is not supported by amime before the terminal filter (only envoy.filters.network.rbac is)`},
		{"network filter without config", lis(&listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy"}}}),
			`filter_chains[0].filters[0].typed_config: type "" is not supported by amime`},
		{"unknown network filter", lis(&listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "x", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&emptypb.Empty{})}}}}),
			`filter_chains[0].filters[0].typed_config: type "type.googleapis.com/google.protobuf.Empty" is not supported by amime`},
		{"bad tcp proxy", lis(&listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "x", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpv3.TcpProxy{StatPrefix: "s"})}}}}),
			"filter_chains[0].filters[0].typed_config.cluster_specifier: cluster or weighted_clusters is required"},
		{"bad default chain", &listenerv3.Listener{Name: "l", Address: sockAddr("127.0.0.1", 0), DefaultFilterChain: &listenerv3.FilterChain{}},
			"default_filter_chain.filters: a terminal network filter (http_connection_manager or tcp_proxy) is required"},
		{"unsupported field", with(func(l *listenerv3.Listener) { l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(1) }),
			"per_connection_buffer_limit_bytes: field is not supported by amime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(tc.l, deps())
			if err == nil || err.Error() != tc.want {
				t.Errorf("Compile = %v, %v\nwant error %s", c, err, tc.want)
			}
		})
	}
}

func TestCompile(t *testing.T) {
	router := &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: "http", HttpFilters: []*hcmv3.HttpFilter{router},
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "routes",
			ConfigSource: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}}
	l := &listenerv3.Listener{Name: "l", Address: sockAddr("::1", 8080), FilterChains: []*listenerv3.FilterChain{
		{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}}},
	}, ListenerFilters: []*listenerv3.ListenerFilter{httpInspector()}, ContinueOnListenerFiltersTimeout: true,
		ListenerFiltersTimeout: durationpb.New(time.Second)}
	c, err := Compile(l, deps())
	if err != nil {
		t.Fatal(err)
	}
	if c.Address != "[::1]:8080" || c.Name != "l" || len(c.RDSNames) != 1 || c.RDSNames[0] != "routes" {
		t.Errorf("address %q name %q rds %v", c.Address, c.Name, c.RDSNames)
	}
	if !c.httpInspector || !c.continueOnTimeout || c.filterTimeout != time.Second {
		t.Errorf("inspector %v continue %v timeout %v", c.httpInspector, c.continueOnTimeout, c.filterTimeout)
	}
	// Envoy's default listener_filters_timeout is 15s.
	c, err = Compile(lis(fc("a", nil)), deps())
	if err != nil || c.filterTimeout != 15*time.Second || c.continueOnTimeout {
		t.Errorf("defaults: %v timeout %v continue %v", err, c.filterTimeout, c.continueOnTimeout)
	}
}

func ports(p uint32) *listenerv3.FilterChainMatch {
	return &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p)}
}

func prefixes(m *listenerv3.FilterChainMatch, cidrs ...string) *listenerv3.FilterChainMatch {
	if m == nil {
		m = &listenerv3.FilterChainMatch{}
	}
	for _, c := range cidrs {
		addr, l, found := strings.Cut(c, "/")
		r := &corev3.CidrRange{AddressPrefix: addr}
		if found {
			n, _ := strconv.Atoi(l)
			r.PrefixLen = wrapperspb.UInt32(uint32(n))
		}
		m.PrefixRanges = append(m.PrefixRanges, r)
	}
	return m
}

func alpn(m *listenerv3.FilterChainMatch, protos ...string) *listenerv3.FilterChainMatch {
	if m == nil {
		m = &listenerv3.FilterChainMatch{}
	}
	m.ApplicationProtocols = protos
	return m
}

func TestMatch(t *testing.T) {
	type probe struct {
		dst   string // ip:port
		proto string // what http_inspector found
		want  string // chain name, "" for none
	}
	tests := []struct {
		name      string
		chains    []*listenerv3.FilterChain
		def       bool // add a default_filter_chain named "default"
		inspector bool
		probes    []probe
	}{
		{"destination port beats no port", []*listenerv3.FilterChain{fc("any", nil), fc("p80", ports(80))}, false, false, []probe{
			{"10.0.0.1:80", "", "p80"}, {"10.0.0.1:81", "", "any"}}},
		{"port is decided before address", []*listenerv3.FilterChain{fc("net", prefixes(nil, "10.0.0.0/8")), fc("p80", ports(80))}, false, false, []probe{
			{"10.0.0.1:80", "", "p80"}, {"10.0.0.1:81", "", "net"}, {"192.168.0.1:81", "", ""}}},
		{"longest prefix wins", []*listenerv3.FilterChain{fc("any", nil), fc("ten", prefixes(nil, "10.0.0.0/8")), fc("ten-one", prefixes(nil, "10.1.0.0/16")), fc("host", prefixes(nil, "10.1.2.3/32"))}, false, false, []probe{
			{"10.1.2.3:80", "", "host"}, {"10.1.2.4:80", "", "ten-one"}, {"10.2.0.1:80", "", "ten"}, {"192.168.0.1:80", "", "any"}, {"[::1]:80", "", "any"}}},
		{"longest of several ranges in one chain", []*listenerv3.FilterChain{fc("multi", prefixes(nil, "10.0.0.0/8", "192.168.1.0/24")), fc("mid", prefixes(nil, "192.168.0.0/16"))}, false, false, []probe{
			{"192.168.1.1:80", "", "multi"}, {"192.168.2.1:80", "", "mid"}, {"10.9.9.9:80", "", "multi"}}},
		// Envoy's CidrRange: an unset prefix_len is 0 (the whole family).
		{"unset prefix_len", []*listenerv3.FilterChain{fc("any", nil), fc("v4", prefixes(nil, "10.0.0.1"))}, false, false, []probe{
			{"192.168.0.1:80", "", "v4"}, {"[::1]:80", "", "any"}}},
		{"ipv6 prefix", []*listenerv3.FilterChain{fc("any", nil), fc("v6", prefixes(nil, "fd00::/8"))}, false, false, []probe{
			{"[fd00::1]:80", "", "v6"}, {"[fe80::1]:80", "", "any"}}},
		{"application protocols", []*listenerv3.FilterChain{fc("plain", nil), fc("h1", alpn(nil, "http/1.1")), fc("h2", alpn(nil, "h2c"))}, false, true, []probe{
			{"10.0.0.1:80", "http/1.1", "h1"}, {"10.0.0.1:80", "h2c", "h2"}, {"10.0.0.1:80", "", "plain"}, {"10.0.0.1:80", "http/1.0", "plain"}}},
		// No going back: once the port picked a chain, a mismatch later
		// means no chain, not the less specific one.
		{"no backtracking", []*listenerv3.FilterChain{fc("plain", nil), fc("p80h2", alpn(ports(80), "h2c"))}, true, true, []probe{
			{"10.0.0.1:80", "h2c", "p80h2"}, {"10.0.0.1:80", "http/1.1", "default"}, {"10.0.0.1:81", "http/1.1", "plain"}}},
		{"raw_buffer transport beats unset", []*listenerv3.FilterChain{fc("unset", nil), fc("raw", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"})}, false, false, []probe{
			{"10.0.0.1:80", "", "raw"}}},
		{"default chain", []*listenerv3.FilterChain{fc("p80", ports(80))}, true, false, []probe{
			{"10.0.0.1:80", "", "p80"}, {"10.0.0.1:81", "", "default"}}},
		{"no match without default", []*listenerv3.FilterChain{fc("p80", ports(80))}, false, false, []probe{
			{"10.0.0.1:81", "", ""}}},
		{"only a default chain", nil, true, false, []probe{{"10.0.0.1:81", "", "default"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := lis(tc.chains...)
			if tc.def {
				l.DefaultFilterChain = fc("default", nil)
			}
			if tc.inspector {
				l.ListenerFilters = []*listenerv3.ListenerFilter{httpInspector()}
			}
			c, err := Compile(l, deps())
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.probes {
				got := ""
				ci := connInfo{transport: "raw_buffer"}
				if p.proto != "" {
					ci.appProtos = []string{p.proto}
				}
				if ch := c.match(netip.MustParseAddrPort(p.dst), ci); ch != nil {
					got = ch.name
				}
				if got != p.want {
					t.Errorf("match(%s, %q) = %q, want %q", p.dst, p.proto, got, p.want)
				}
			}
		})
	}
}

func TestParseHTTPStart(t *testing.T) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	tests := []struct {
		in    string
		proto string
		done  bool
	}{
		{"GET / HTTP/1.1\r\n", "http/1.1", true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "http/1.1", true},
		{"GET / HTTP/1.1\n", "http/1.1", true},
		{"POST /x?y=1 HTTP/1.0\r\n", "http/1.0", true},
		{"CUSTOM-METHOD * HTTP/1.1\r\n", "http/1.1", true},
		{"GET / HTTP/0.9\r\n", "http/1.0", true}, // Envoy labels other versions HTTP/1.0
		{preface, "h2c", true},
		{preface + "\x00\x00\x12\x04", "h2c", true},
		// Could still become the preface or a request line: wait.
		{"P", "", false},
		{"PRI * HTTP/2.0\r\n", "", false},
		{"GET", "", false},
		{"GET ", "", false},
		{"GET /path", "", false},
		{"GET / ", "", false},
		{"GET / HT", "", false},
		{"GET / HTTP/1.1", "", false},
		{"GET / HTTP/1.1\r", "", false},
		// Not HTTP: decided at once.
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "", true},
		{"\r\nGET / HTTP/1.1\r\n", "", true},
		{"hi\n", "", true},
		{"GET /\r\n", "", true},
		{"GET  / HTTP/1.1\r\n", "", true},
		{"GET / HTTP/1.1 x\r\n", "", true},
		{"GET / HTTX", "", true},
		{"GET / HTTP/1.12", "", true},
		{"G(T / HTTP/1.1\r\n", "", true},
		{"PRX", "", false}, // "PRX" is still a valid method prefix
		{"PRI * HTTP/1.1\r\n", "http/1.1", true},
		{"SSH-2.0-OpenSSH_9.6\r\n", "", true},
	}
	for _, tc := range tests {
		proto, done := parseHTTPStart([]byte(tc.in))
		if proto != tc.proto || done != tc.done {
			t.Errorf("parseHTTPStart(%q) = %q, %v; want %q, %v", tc.in, proto, done, tc.proto, tc.done)
		}
	}
}

// readSignal reports every successful Read of the connection it wraps.
type readSignal struct {
	net.Conn
	read chan struct{}
}

func (c *readSignal) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		select {
		case c.read <- struct{}{}:
		default: // nobody needs more than the first few
		}
	}
	return n, err
}

// connPair returns the two ends of a TCP connection on 127.0.0.1.
func connPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestInspectHTTP(t *testing.T) {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	long := "GET /" + strings.Repeat("a", 5000) + " HTTP/1.1\r\n\r\n"
	tests := []struct {
		name   string
		writes []string // written in order, each after the previous one was read
		proto  string
		err    error // nil, or os.ErrDeadlineExceeded / io.EOF / errInspectTooLong
		close  bool  // client closes after writing
	}{
		{"http/1.1", []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"}, "http/1.1", nil, false},
		{"http/1.0", []string{"GET / HTTP/1.0\r\n\r\n"}, "http/1.0", nil, false},
		{"h2 preface", []string{preface}, "h2c", nil, false},
		{"garbage", []string{"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"}, "", nil, false},
		// A first segment shorter than the h2 preface that already decides
		// must not wait for more.
		{"short request line", []string{"GET / HTTP/1.1\r\n"}, "http/1.1", nil, false},
		{"short garbage", []string{"hi\n"}, "", nil, false},
		// A request line split over segments is waited for (Envoy's
		// inspector reads until it can decide).
		{"split request line", []string{"GET / HT", "TP/1.1\r\n"}, "http/1.1", nil, false},
		{"split preface", []string{"PRI * HTTP/2.0\r\n", "\r\nSM\r\n\r\n"}, "h2c", nil, false},
		{"long request line", []string{long[:3000], long[3000:]}, "http/1.1", nil, false},
		{"partial then silence", []string{"GET / HT"}, "", os.ErrDeadlineExceeded, false},
		{"nothing then silence", nil, "", os.ErrDeadlineExceeded, false},
		{"partial then close", []string{"GET / HT"}, "", io.EOF, true},
		{"no line end in 64KiB", []string{"GET /" + strings.Repeat("a", 70000)}, "", errInspectTooLong, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, raw := connPair(t)
			server := &readSignal{Conn: raw, read: make(chan struct{}, 100)}
			var sent bytes.Buffer
			for _, w := range tc.writes {
				sent.WriteString(w)
			}
			// Each segment after the first is written only once the
			// inspector has read what came before, so it really waits.
			go func() {
				for i, w := range tc.writes {
					if i > 0 {
						<-server.read
					}
					_, _ = io.WriteString(client, w)
				}
				if tc.close {
					<-server.read
					_ = client.(*net.TCPConn).CloseWrite()
				}
			}()
			deadline := 5 * time.Second
			if tc.err == os.ErrDeadlineExceeded {
				deadline = 300 * time.Millisecond
			}
			_ = server.SetReadDeadline(time.Now().Add(deadline))
			start := time.Now()
			proto, seen, err := inspectHTTP(server)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if proto != tc.proto {
				t.Errorf("proto %q, want %q", proto, tc.proto)
			}
			if tc.err == nil && time.Since(start) > 2*time.Second {
				t.Errorf("took %v: waited for bytes that never came", time.Since(start))
			}
			// What the inspector read is a prefix of what was sent, and
			// replaying it through peekedConn gives the stream back whole.
			if !bytes.HasPrefix(sent.Bytes(), seen) {
				t.Fatalf("inspector read %q, not a prefix of %q", seen, sent.Bytes())
			}
			if tc.err != nil {
				return
			}
			_ = client.Close()
			_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
			all, err := io.ReadAll(&peekedConn{Conn: raw, buf: seen})
			if err != nil || !bytes.Equal(all, sent.Bytes()) {
				t.Errorf("replayed %d bytes (%v), want the %d sent", len(all), err, sent.Len())
			}
		})
	}
}

// upstream starts a TCP server that writes hello, then echoes; it stops at
// the end of the test.
func upstream(t *testing.T, hello string) string {
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
				_, _ = io.WriteString(c, hello)
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// manager holds one static cluster per name, at the given address.
func manager(t *testing.T, eps map[string]string) *cluster.Manager {
	t.Helper()
	var cfgs []*clusterv3.Cluster
	for name, addr := range eps {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		cfgs = append(cfgs, &clusterv3.Cluster{Name: name, LoadAssignment: &endpointv3.ClusterLoadAssignment{
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(host, uint32(p))}},
			}}}},
		}})
	}
	set, err := cluster.Build(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	m := cluster.NewManager(quietLog())
	m.Replace(context.Background(), set)
	return m
}

// serve compiles l, listens and serves it; it returns the live listener
// and a function that closes it and checks that Wait returns.
func serve(t *testing.T, l *listenerv3.Listener, d *Deps) (*Listener, func()) {
	t.Helper()
	c, err := Compile(l, d)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(context.Background(), c, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		ln.Serve(context.Background())
	}()
	stop := func() {
		ln.Close()
		waited := make(chan struct{})
		go func() {
			ln.Wait()
			close(waited)
		}()
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			t.Fatal("Wait did not return after Close")
		}
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
	}
	t.Cleanup(ln.Close)
	return ln, stop
}

func dial(t *testing.T, addr net.Addr) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

func TestListenerUpdate(t *testing.T) {
	d := &Deps{Clusters: manager(t, map[string]string{"a": upstream(t, "A"), "b": upstream(t, "B")}), Log: quietLog()}
	ln, stop := serve(t, lis(fc("a", nil)), d)
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
		t.Fatalf("bound to %v", ln.Addr())
	}

	c1 := dial(t, ln.Addr())
	if got := readN(t, c1, 1); got != "A" {
		t.Fatalf("first connection reached %q", got)
	}
	next, err := Compile(lis(fc("b", nil)), d)
	if err != nil {
		t.Fatal(err)
	}
	ln.Update(next)
	if ln.Config() != next {
		t.Error("Config does not return the update")
	}
	c2 := dial(t, ln.Addr())
	if got := readN(t, c2, 1); got != "B" {
		t.Errorf("connection after Update reached %q, want B", got)
	}
	// The open connection keeps its chain.
	if _, err := c1.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, c1, 4); got != "ping" {
		t.Errorf("old connection echo %q", got)
	}

	stop()
	// Close ended the open connections' goroutines (Wait returned) and the
	// socket: the old connections see the end, new ones are refused.
	if n, err := c1.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("open connection after Close: %d, %v", n, err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("dial succeeded after Close")
	}
}

func TestListenerHTTPInspector(t *testing.T) {
	d := &Deps{Clusters: manager(t, map[string]string{"h2": upstream(t, "2"), "h1": upstream(t, "1"), "other": upstream(t, "0")}), Log: quietLog()}
	l := lis(fc("h2", alpn(nil, "h2c")), fc("h1", alpn(nil, "http/1.1", "http/1.0")))
	l.DefaultFilterChain = fc("other", nil)
	l.ListenerFilters = []*listenerv3.ListenerFilter{httpInspector()}
	ln, stop := serve(t, l, d)
	defer stop()

	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	tests := []struct {
		name, send, upstream string
	}{
		{"h2c", preface, "2"},
		{"http/1.1", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "1"},
		{"http/1.0", "GET / HTTP/1.0\r\n\r\n", "1"},
		{"not http", "\x16\x03\x01\x00\x05hello", "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ln.Addr())
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			// The upstream's greeting, then the inspected bytes echoed back
			// whole; the half-close goes through the inspector's wrapper.
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.upstream + tc.send; string(got) != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestListenerFiltersTimeout(t *testing.T) {
	d := &Deps{Clusters: manager(t, map[string]string{"other": upstream(t, "0")}), Log: quietLog()}
	for _, cont := range []bool{false, true} {
		t.Run(fmt.Sprintf("continue=%v", cont), func(t *testing.T) {
			l := lis(fc("h1", alpn(nil, "http/1.1")))
			l.DefaultFilterChain = fc("other", nil)
			l.ListenerFilters = []*listenerv3.ListenerFilter{httpInspector()}
			l.ListenerFiltersTimeout = durationpb.New(200 * time.Millisecond)
			l.ContinueOnListenerFiltersTimeout = cont
			ln, stop := serve(t, l, d)
			defer stop()
			// A client that waits for the server to speak first.
			c := dial(t, ln.Addr())
			start := time.Now()
			b := make([]byte, 1)
			n, err := c.Read(b)
			if d := time.Since(start); d < 150*time.Millisecond {
				t.Errorf("answered after %v, before the 200ms listener filter timeout", d)
			}
			if cont {
				// Envoy goes on without the inspector's answer.
				if n != 1 || b[0] != '0' {
					t.Errorf("read %q, %v; want the default chain's upstream", b[:n], err)
				}
				return
			}
			var ne net.Error
			if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				t.Errorf("read %d, %v; want the connection closed", n, err)
			}
		})
	}
}

func TestListenerCloseBeforeServe(t *testing.T) {
	c, err := Compile(lis(fc("a", nil)), deps())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(context.Background(), c, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	done := make(chan struct{})
	go func() {
		ln.Serve(context.Background())
		ln.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve after Close did not return")
	}
}

func TestListenerContextEnds(t *testing.T) {
	d := &Deps{Clusters: manager(t, map[string]string{"a": upstream(t, "A")}), Log: quietLog()}
	c, err := Compile(lis(fc("a", nil)), d)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(context.Background(), c, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		ln.Serve(ctx)
		close(done)
	}()
	conn := dial(t, ln.Addr())
	if got := readN(t, conn, 1); got != "A" {
		t.Fatalf("reached %q", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return when its context ended")
	}
	waited := make(chan struct{})
	go func() { ln.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("connections outlived the context")
	}
}

func TestListenAddressInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := uint32(busy.Addr().(*net.TCPAddr).Port)
	l := lis(fc("a", nil))
	l.Address = sockAddr("127.0.0.1", port)
	c, err := Compile(l, deps())
	if err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(context.Background(), c, quietLog()); err == nil {
		ln.Close()
		t.Fatal("Listen on a busy port succeeded")
	} else if !strings.HasPrefix(err.Error(), `listener "l": `) {
		t.Errorf("error %q does not name the listener", err)
	}
}

func TestListenerUpstreamHalfClose(t *testing.T) {
	// The upstream finishes sending first; the client, behind the HTTP
	// inspector's replay wrapper, must still be able to send afterwards.
	got := make(chan string, 1)
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go func() {
		c, err := ul.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "bye")
		_ = c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	d := &Deps{Clusters: manager(t, map[string]string{"other": ul.Addr().String()}), Log: quietLog()}
	l := lis(fc("h1", alpn(nil, "http/1.1")))
	l.DefaultFilterChain = fc("other", nil)
	l.ListenerFilters = []*listenerv3.ListenerFilter{httpInspector()}
	ln, stop := serve(t, l, d)
	defer stop()

	c := dial(t, ln.Addr())
	if _, err := c.Write([]byte{0x16}); err != nil { // not HTTP: default chain
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
		t.Fatalf("read %q, %v", b, err)
	}
	if _, err := io.WriteString(c, "after"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "\x16after" {
			t.Errorf("upstream received %q, want %q", s, "\x16after")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream never saw the client's EOF")
	}
}

// directChain is an HTTP connection manager chain whose only route answers
// body itself.
func directChain(t *testing.T, body string) *listenerv3.FilterChain {
	t.Helper()
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: "in",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200,
					Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}}},
			}}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{
			TypedConfig: mustAny(&routerv3.Router{})}}},
	}
	return &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)}}}}
}

// TestListenerUpdateDrainsChangedChains: an update that leaves a
// connection's filter chain as it was keeps the connection; one that
// changes it drains the connection (an idle HTTP/1.1 connection closes).
func TestListenerUpdateDrainsChangedChains(t *testing.T) {
	d := &Deps{Clusters: cluster.NewManager(quietLog()), Log: quietLog(),
		HCM: &hcm.Env{Clusters: cluster.NewManager(quietLog()), Log: quietLog(), Conns: hcm.NewConnTracker()}}
	ln, _ := serve(t, lis(directChain(t, "one")), d)
	c := dial(t, ln.Addr())
	br := bufio.NewReader(c)
	get := func() (string, error) {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if body, err := get(); err != nil || body != "one" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	update := func(body string) {
		t.Helper()
		next, err := Compile(lis(directChain(t, body)), d)
		if err != nil {
			t.Fatal(err)
		}
		ln.Update(next)
	}
	update("one") // equal chain, new message
	if body, err := get(); err != nil || body != "one" {
		t.Fatalf("after an update that kept the chain: %q, %v (want the same connection to serve)", body, err)
	}
	update("two")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle connection on a changed chain: read %d bytes, %v; want it closed", n, err)
	}
	c2 := dial(t, ln.Addr())
	if _, err := io.WriteString(c2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "two" {
		t.Errorf("new connection: %q, want two", b)
	}
}

// TestMatchServerNameAndTransport: with the tls_inspector, server_names
// (exact before the longest wildcard, before none) and transport_protocol
// pick the chain, after destination port and IP.
func TestMatchServerNameAndTransport(t *testing.T) {
	tlsInspector := &listenerv3.ListenerFilter{Name: "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}}
	l := lis(
		fc("exact", &listenerv3.FilterChainMatch{ServerNames: []string{"api.example.com"}}),
		fc("wild", &listenerv3.FilterChainMatch{ServerNames: []string{"*.example.com"}}),
		fc("wilder", &listenerv3.FilterChainMatch{ServerNames: []string{"*.b.example.com"}}),
		fc("tls", &listenerv3.FilterChainMatch{TransportProtocol: "tls"}),
		fc("plain", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}),
	)
	l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspector}
	c, err := Compile(l, deps())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ci   connInfo
		want string
	}{
		{connInfo{transport: "tls", sni: "api.example.com"}, "exact"},
		{connInfo{transport: "tls", sni: "www.example.com"}, "wild"},
		{connInfo{transport: "tls", sni: "a.b.example.com"}, "wilder"},
		{connInfo{transport: "tls", sni: "example.com"}, "tls"},
		{connInfo{transport: "tls"}, "tls"},
		{connInfo{transport: "raw_buffer"}, "plain"},
	} {
		got := ""
		if ch := c.match(netip.MustParseAddrPort("10.0.0.1:443"), tc.ci); ch != nil {
			got = ch.name
		}
		if got != tc.want {
			t.Errorf("match(%+v) = %q, want %q", tc.ci, got, tc.want)
		}
	}
}
