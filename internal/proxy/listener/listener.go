// Package listener runs the proxy's listeners: it accepts connections,
// picks the filter chain that matches each one (Envoy's
// filter_chain_match rules) and hands the connection to that chain's
// network filter (HTTP connection manager or TCP proxy).
package listener

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amime-mesh/amime/internal/proxy/accesslog"
	"github.com/amime-mesh/amime/internal/proxy/drain"
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/hcm"
	"github.com/amime-mesh/amime/internal/proxy/rbac"
	"github.com/amime-mesh/amime/internal/proxy/tcpproxy"
	"github.com/amime-mesh/amime/internal/proxy/telemetry"
	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
)

const (
	hcmType           = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	tcpProxyType      = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	httpInspectorType = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
)

// ConnHandler serves one accepted connection.
type ConnHandler interface {
	ServeConn(ctx context.Context, nc net.Conn)
}

// Deps are what filter chains need from the proxy.
type Deps struct {
	HCM      *hcm.Env
	Clusters tcpproxy.ClusterSource
	Log      *slog.Logger
	// Secrets resolve SDS secret names of TLS transport sockets; nil when
	// the proxy has no workload identity.
	Secrets tlsctx.Secrets
	// TCPTelemetry records Istio's TCP metrics for tcp_proxy; nil: none.
	TCPTelemetry *telemetry.TCPMetrics
}

// Compiled is a validated listener configuration.
type Compiled struct {
	Name    string
	Address string // "ip:port"
	// RDSNames are the route configurations the listener needs before it can
	// serve (Envoy's listener warming).
	RDSNames      []string
	chains        []*chain
	defaultChain  *chain
	httpInspector bool
	tlsInspector  bool
	// filterTimeout bounds the listener filters (listener_filters_timeout,
	// 15s by default, 0 for none); when it fires the connection is closed
	// unless continueOnTimeout.
	filterTimeout     time.Duration
	continueOnTimeout bool
	Config            *listenerv3.Listener
}

type chain struct {
	name        string
	ports       map[uint32]bool // destination_port (one value in Envoy; a set here)
	prefixes    []netip.Prefix
	serverNames []string // exact names and "*.suffix" wildcards
	appProtos   map[string]bool
	transport   string
	// tls terminates TLS before the network filter (nil: none).
	tls *tlsctx.Server
	// rbac are network RBAC filters run before the handler.
	rbac    []*rbac.Filter
	handler ConnHandler
	// config is the chain as received: a connection keeps running while
	// an update leaves its chain unchanged, and is drained otherwise.
	config *listenerv3.FilterChain
}

// Rules lists the Listener fields amime implements (the network filters'
// rules are merged in by the caller).
func Rules() fieldcheck.Rules {
	return fieldcheck.Merge(fieldcheck.Rules{
		"envoy.config.listener.v3.Listener": {"name", "address", "stat_prefix", "filter_chains", "default_filter_chain",
			"listener_filters", "traffic_direction", "metadata", "bind_to_port", "listener_filters_timeout", "continue_on_listener_filters_timeout"},
		"envoy.config.listener.v3.FilterChain":                              {"filter_chain_match", "filters", "name", "metadata", "transport_socket"},
		"envoy.config.listener.v3.FilterChainMatch":                         {"destination_port", "prefix_ranges", "server_names", "transport_protocol", "application_protocols"},
		"envoy.config.listener.v3.Filter":                                   {"name", "typed_config"},
		"envoy.config.listener.v3.ListenerFilter":                           {"name", "typed_config"},
		"envoy.config.core.v3.CidrRange":                                    {"address_prefix", "prefix_len"},
		"envoy.config.core.v3.Address":                                      {"socket_address"},
		"envoy.config.core.v3.SocketAddress":                                {"protocol", "address", "port_value"},
		"envoy.config.core.v3.Metadata":                                     {fieldcheck.All},
		"envoy.extensions.filters.listener.http_inspector.v3.HttpInspector": {},
		"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector":   {},
	}, hcm.Rules(), tcpproxy.Rules(), tlsctx.Rules(), rbac.Rules())
}

// Compile validates a listener and builds its filter chains.
func Compile(l *listenerv3.Listener, deps *Deps) (*Compiled, error) {
	if err := Rules().Check(l); err != nil {
		return nil, err
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("address.socket_address: required")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return nil, fmt.Errorf("address.socket_address.protocol: only TCP is supported")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("address.socket_address.address: %q is not an IP address", sa.GetAddress())
	}
	c := &Compiled{Name: l.GetName(), Address: net.JoinHostPort(ip.String(), strconv.Itoa(int(sa.GetPortValue()))), Config: l,
		filterTimeout: 15 * time.Second, continueOnTimeout: l.GetContinueOnListenerFiltersTimeout()}
	if d := l.GetListenerFiltersTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("listener_filters_timeout: must be a non-negative duration")
		}
		c.filterTimeout = d.AsDuration()
	}
	if c.Name == "" {
		return nil, fmt.Errorf("name: must not be empty")
	}
	for i, lf := range l.GetListenerFilters() {
		switch lf.GetTypedConfig().GetTypeUrl() {
		case httpInspectorType:
			c.httpInspector = true
		case tlsctx.InspectorTypeURL:
			c.tlsInspector = true
		default:
			return nil, fmt.Errorf("listener_filters[%d]: type %q is not supported by amime", i, lf.GetTypedConfig().GetTypeUrl())
		}
	}
	for i, fc := range l.GetFilterChains() {
		ch, err := compileChain(fc, deps, c)
		if err != nil {
			return nil, fmt.Errorf("filter_chains[%d].%w", i, err)
		}
		c.chains = append(c.chains, ch)
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		ch, err := compileChain(fc, deps, c)
		if err != nil {
			return nil, fmt.Errorf("default_filter_chain.%w", err)
		}
		c.defaultChain = ch
	}
	if len(c.chains) == 0 && c.defaultChain == nil {
		return nil, fmt.Errorf("filter_chains: at least one filter chain is required")
	}
	return c, nil
}

func compileChain(fc *listenerv3.FilterChain, deps *Deps, l *Compiled) (*chain, error) {
	m := fc.GetFilterChainMatch()
	ch := &chain{name: fc.GetName(), transport: m.GetTransportProtocol(), config: fc}
	if p := m.GetDestinationPort(); p != nil {
		ch.ports = map[uint32]bool{p.GetValue(): true}
	}
	for i, r := range m.GetPrefixRanges() {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("filter_chain_match.prefix_ranges[%d].address_prefix: %w", i, err)
		}
		// As in Envoy's CidrRange: an unset prefix_len is 0, and a length
		// beyond the address size is the whole address.
		if r.GetPrefixLen().GetValue() > 128 {
			return nil, fmt.Errorf("filter_chain_match.prefix_ranges[%d].prefix_len: must be at most 128", i)
		}
		p, err := a.Unmap().Prefix(min(int(r.GetPrefixLen().GetValue()), a.Unmap().BitLen()))
		if err != nil {
			return nil, fmt.Errorf("filter_chain_match.prefix_ranges[%d].prefix_len: %w", i, err)
		}
		ch.prefixes = append(ch.prefixes, p)
	}
	switch ch.transport {
	case "", "raw_buffer":
	case "tls":
		if !l.tlsInspector {
			return nil, fmt.Errorf("filter_chain_match.transport_protocol: \"tls\" needs the envoy.filters.listener.tls_inspector listener filter")
		}
	default:
		return nil, fmt.Errorf("filter_chain_match.transport_protocol: %q is not supported by amime (want raw_buffer or tls)", ch.transport)
	}
	for i, n := range m.GetServerNames() {
		if !l.tlsInspector {
			return nil, fmt.Errorf("filter_chain_match.server_names: needs the envoy.filters.listener.tls_inspector listener filter")
		}
		if n == "" || (strings.Contains(n, "*") && !strings.HasPrefix(n, "*.")) || strings.Count(n, "*") > 1 {
			return nil, fmt.Errorf("filter_chain_match.server_names[%d]: %q is not a host name or *.suffix wildcard", i, n)
		}
		ch.serverNames = append(ch.serverNames, strings.ToLower(n))
	}
	if ts := fc.GetTransportSocket(); !tlsctx.IsRawBuffer(ts) {
		if ts.GetTypedConfig().GetTypeUrl() != tlsctx.DownstreamTypeURL {
			return nil, fmt.Errorf("transport_socket.typed_config: type %q is not supported by amime", ts.GetTypedConfig().GetTypeUrl())
		}
		srv, err := tlsctx.CompileDownstream(ts.GetTypedConfig(), deps.Secrets)
		if err != nil {
			return nil, fmt.Errorf("transport_socket.%w", err)
		}
		ch.tls = srv
	}
	if len(m.GetApplicationProtocols()) > 0 {
		if !l.httpInspector && !l.tlsInspector {
			return nil, fmt.Errorf("filter_chain_match.application_protocols: needs the envoy.filters.listener.http_inspector or tls_inspector listener filter")
		}
		ch.appProtos = map[string]bool{}
		for _, p := range m.GetApplicationProtocols() {
			ch.appProtos[p] = true
		}
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, fmt.Errorf("filters: a terminal network filter (http_connection_manager or tcp_proxy) is required")
	}
	// Network RBAC filters may come first; the last filter serves.
	last := len(filters) - 1
	for i, f := range filters[:last] {
		if f.GetTypedConfig().GetTypeUrl() != rbac.NetworkTypeURL {
			return nil, fmt.Errorf("filters[%d].typed_config: type %q is not supported by amime before the terminal filter (only envoy.filters.network.rbac is)", i, f.GetTypedConfig().GetTypeUrl())
		}
		rf, err := rbac.ParseNetwork(f.GetTypedConfig())
		if err != nil {
			return nil, fmt.Errorf("filters[%d].typed_config.%w", i, err)
		}
		ch.rbac = append(ch.rbac, rf)
	}
	f := filters[last]
	at := fmt.Sprintf("filters[%d]", last)
	switch f.GetTypedConfig().GetTypeUrl() {
	case hcmType:
		cfg := &hcmv3.HttpConnectionManager{}
		if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			return nil, fmt.Errorf("%s.typed_config: %w", at, err)
		}
		hc, err := hcm.Compile(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s.typed_config.%w", at, err)
		}
		var sinks *accesslog.Sinks
		if deps.HCM != nil {
			sinks = deps.HCM.AccessLogSinks
		}
		if err := hc.BindAccessLogs(sinks); err != nil {
			return nil, fmt.Errorf("%s.typed_config.%w", at, err)
		}
		if hc.RDSName != "" {
			l.RDSNames = append(l.RDSNames, hc.RDSName)
		}
		ch.handler = hcm.New(hc, deps.HCM)
	case tcpProxyType:
		cfg := &tcpv3.TcpProxy{}
		if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			return nil, fmt.Errorf("%s.typed_config: %w", at, err)
		}
		tc, err := tcpproxy.Compile(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s.typed_config.%w", at, err)
		}
		ch.handler = tcpproxy.New(tc, deps.Clusters, deps.Log, deps.TCPTelemetry)
	default:
		return nil, fmt.Errorf("%s.typed_config: type %q is not supported by amime", at, f.GetTypedConfig().GetTypeUrl())
	}
	return ch, nil
}

// connInfo is what the listener filters learned about a connection.
type connInfo struct {
	transport string   // "raw_buffer" or "tls"
	sni       string   // lower case
	appProtos []string // TLS ALPN offers, or the HTTP inspector's answer
}

// match picks a filter chain with Envoy's precedence: destination port,
// then destination IP (longest prefix), then server name (exact before
// the longest wildcard), then transport protocol, then application
// protocol; at each step a chain with the criterion set beats one without
// it, and there is no going back to a less specific chain.
func (c *Compiled) match(dst netip.AddrPort, ci connInfo) *chain {
	best := c.selectBy(c.chains, func(ch *chain) (bool, bool) {
		if ch.ports == nil {
			return true, false
		}
		return ch.ports[uint32(dst.Port())], true
	})
	best = c.selectPrefix(best, dst.Addr())
	best = selectServerName(best, ci.sni)
	best = c.selectBy(best, func(ch *chain) (bool, bool) {
		if ch.transport == "" {
			return true, false
		}
		return ch.transport == ci.transport, true
	})
	best = c.selectBy(best, func(ch *chain) (bool, bool) {
		if ch.appProtos == nil {
			return true, false
		}
		for _, p := range ci.appProtos {
			if ch.appProtos[p] {
				return true, true
			}
		}
		return false, true
	})
	if len(best) > 0 {
		return best[0]
	}
	return c.defaultChain
}

// selectBy keeps the chains that match on a criterion, preferring those
// that name it over those that leave it empty.
func (c *Compiled) selectBy(in []*chain, f func(*chain) (match, specific bool)) []*chain {
	var specific, generic []*chain
	for _, ch := range in {
		ok, spec := f(ch)
		switch {
		case ok && spec:
			specific = append(specific, ch)
		case ok:
			generic = append(generic, ch)
		}
	}
	if len(specific) > 0 {
		return specific
	}
	return generic
}

// selectServerName keeps the chains whose server_names match sni best: an
// exact name, else the longest matching wildcard, else those without
// server_names.
func selectServerName(in []*chain, sni string) []*chain {
	return selectBest(in, func(ch *chain) (int, bool) {
		if ch.serverNames == nil {
			return -1, true
		}
		score, ok := -1, false
		for _, n := range ch.serverNames {
			switch {
			case n == sni:
				return 1 << 20, true
			case strings.HasPrefix(n, "*.") && strings.HasSuffix(sni, n[1:]) && len(sni) > len(n)-1:
				score, ok = max(score, len(n)), true
			}
		}
		return score, ok
	})
}

// selectPrefix keeps the chains whose longest matching prefix range is the
// longest, else those without prefix_ranges.
func (c *Compiled) selectPrefix(in []*chain, ip netip.Addr) []*chain {
	return selectBest(in, func(ch *chain) (int, bool) {
		if ch.prefixes == nil {
			return -1, true
		}
		score, ok := -1, false
		for _, p := range ch.prefixes {
			if p.Contains(ip.Unmap()) {
				score, ok = max(score, p.Bits()), true
			}
		}
		return score, ok
	})
}

// selectBest keeps the matching chains with the highest score.
func selectBest(in []*chain, score func(*chain) (int, bool)) []*chain {
	best := -2
	var out []*chain
	for _, ch := range in {
		l, ok := score(ch)
		switch {
		case !ok:
		case l > best:
			best = l
			out = []*chain{ch}
		case l == best:
			out = append(out, ch)
		}
	}
	return out
}

// handshakeTimeout bounds a downstream TLS handshake (Envoy's
// transport_socket_connect_timeout has no default; a peer must not hold a
// connection slot forever).
const handshakeTimeout = 10 * time.Second

// Listener is a live listening socket whose configuration can be swapped.
type Listener struct {
	ln  net.Listener
	cfg atomic.Pointer[Compiled]
	log *slog.Logger
	// wg counts Serve and the connections it started, so Wait covers both.
	wg     sync.WaitGroup
	mu     sync.Mutex // guards cancel and closed against Serve starting
	cancel context.CancelFunc
	closed atomic.Bool

	// conns are the open connections with their chain, for draining
	// those whose chain an update changes.
	connMu sync.Mutex
	conns  map[*drain.Signal]*chain
}

// Listen binds the listener's address.
func Listen(ctx context.Context, c *Compiled, log *slog.Logger) (*Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.Address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", c.Name, err)
	}
	l := &Listener{ln: ln, log: log, conns: map[*drain.Signal]*chain{}}
	l.cfg.Store(c)
	return l, nil
}

// Addr returns the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Update swaps the configuration. New connections use it; open ones keep
// the chain they started with if the update left that chain as it was,
// and are drained otherwise, as Envoy drains the connections of a changed
// filter chain (so a port turning STRICT does not keep serving plaintext
// connections opened before).
func (l *Listener) Update(c *Compiled) {
	l.cfg.Store(c)
	l.connMu.Lock()
	defer l.connMu.Unlock()
	// Many connections share few chains: compare each chain once.
	kept := map[*chain]bool{}
	for sig, ch := range l.conns {
		keep, seen := kept[ch]
		if !seen {
			keep = c.hasChain(ch.config)
			kept[ch] = keep
		}
		if !keep {
			sig.Drain()
		}
	}
}

func (c *Compiled) hasChain(fc *listenerv3.FilterChain) bool {
	for _, ch := range c.chains {
		if ch.config == fc || proto.Equal(ch.config, fc) {
			return true
		}
	}
	return c.defaultChain != nil && (c.defaultChain.config == fc || proto.Equal(c.defaultChain.config, fc))
}

// Config returns the current configuration.
func (l *Listener) Config() *Compiled { return l.cfg.Load() }

// Serve accepts connections until Close or ctx ends.
func (l *Listener) Serve(ctx context.Context) {
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return
	}
	ctx, l.cancel = context.WithCancel(ctx)
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	stop := context.AfterFunc(ctx, func() { _ = l.ln.Close() })
	defer stop()
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed", "listener", l.cfg.Load().Name, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serveConn(ctx, nc)
		}()
	}
}

func (l *Listener) serveConn(ctx context.Context, nc net.Conn) {
	c := l.cfg.Load()
	dst, _ := netip.ParseAddrPort(nc.LocalAddr().String())
	conn := nc
	ci := connInfo{transport: "raw_buffer"}
	if c.tlsInspector {
		if c.filterTimeout > 0 {
			_ = nc.SetReadDeadline(time.Now().Add(c.filterTimeout))
		}
		hello, seen, err := tlsctx.Inspect(nc)
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout() && c.continueOnTimeout:
		default:
			l.log.Debug("tls_inspector: connection closed", "listener", c.Name, "err", err)
			_ = nc.Close()
			return
		}
		_ = nc.SetReadDeadline(time.Time{})
		if hello.TLS {
			ci = connInfo{transport: "tls", sni: strings.ToLower(hello.SNI), appProtos: hello.ALPN}
		}
		if len(seen) > 0 {
			conn = &peekedConn{Conn: nc, buf: seen}
		}
	}
	if c.httpInspector && ci.transport == "raw_buffer" {
		if c.filterTimeout > 0 {
			_ = nc.SetReadDeadline(time.Now().Add(c.filterTimeout))
		}
		proto, seen, err := inspectHTTP(conn)
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout() && c.continueOnTimeout:
			proto = ""
		default:
			// Peer gone, listener filter timeout or request line too long:
			// Envoy closes the socket without creating a connection.
			l.log.Debug("http_inspector: connection closed", "listener", c.Name, "err", err)
			_ = nc.Close()
			return
		}
		_ = nc.SetReadDeadline(time.Time{})
		if proto != "" {
			ci.appProtos = []string{proto}
		}
		if len(seen) > 0 {
			conn = &peekedConn{Conn: nc, buf: seen}
		}
	}
	ch := c.match(dst, ci)
	if ch == nil {
		l.log.Debug("no filter chain matched", "listener", c.Name, "dst", dst, "transport", ci.transport, "sni", ci.sni)
		_ = nc.Close()
		return
	}
	sig := drain.New()
	l.connMu.Lock()
	l.conns[sig] = ch
	l.connMu.Unlock()
	defer func() {
		l.connMu.Lock()
		delete(l.conns, sig)
		l.connMu.Unlock()
	}()
	ctx = drain.With(ctx, sig)
	if ch.tls != nil {
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		tc, err := ch.tls.Handshake(hctx, conn)
		cancel()
		if err != nil {
			l.log.Debug("downstream TLS handshake failed", "listener", c.Name, "chain", ch.name, "remote", nc.RemoteAddr(), "err", err)
			_ = nc.Close()
			return
		}
		conn = tc
	}
	if len(ch.rbac) > 0 && !l.authorize(c, ch, nc, conn) {
		_ = nc.Close()
		return
	}
	ch.handler.ServeConn(ctx, conn)
}

// authorize runs the chain's network RBAC filters; a denied connection is
// closed, as Envoy's network RBAC filter does.
func (l *Listener) authorize(c *Compiled, ch *chain, raw, conn net.Conn) bool {
	var a rbac.Attributes
	if ap, err := netip.ParseAddrPort(raw.RemoteAddr().String()); err == nil {
		a.DirectRemote, a.Remote = ap.Addr(), ap.Addr()
	}
	a.Destination, _ = netip.ParseAddrPort(raw.LocalAddr().String())
	if tc, ok := conn.(*tlsctx.Conn); ok {
		a.SNI, a.Peer = tc.SNI, rbac.NewPeer(tc.Peer)
	}
	for _, f := range ch.rbac {
		if d := f.Decide(&a); d.Deny {
			l.log.Debug("connection denied by RBAC", "listener", c.Name, "chain", ch.name, "remote", raw.RemoteAddr(), "details", d.Details)
			return false
		}
	}
	return true
}

// Close stops accepting; open connections are drained by their owners.
func (l *Listener) Close() {
	l.mu.Lock()
	l.closed.Store(true)
	cancel := l.cancel
	l.mu.Unlock()
	_ = l.ln.Close()
	if cancel != nil {
		cancel()
	}
}

// CloseListener stops accepting without touching open connections.
func (l *Listener) CloseListener() {
	l.closed.Store(true)
	_ = l.ln.Close()
}

// Wait waits for every connection goroutine to end.
func (l *Listener) Wait() { l.wg.Wait() }

// peekedConn replays the bytes the inspector read before the socket's.
type peekedConn struct {
	net.Conn
	buf []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		if len(c.buf) == 0 {
			c.buf = nil // let the inspection buffer go
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite keeps half-close working through the wrapper (tcp_proxy
// passes a FIN on with it).
func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// maxInspect is Envoy's http_inspector MAX_INSPECT_SIZE.
const maxInspect = 64 << 10

var errInspectTooLong = errors.New("http_inspector: no request line in the first 64 KiB")

// inspectHTTP is Envoy's http_inspector: it reads until it can tell "h2c"
// (the whole HTTP/2 preface), "http/1.1" or "http/1.0" (a complete HTTP/1
// request line), or "" (anything else), and returns the bytes it read. It
// decides as soon as the bytes seen allow, and waits for more only while
// they are a prefix of the preface or of a request line; the caller bounds
// that wait with a read deadline.
func inspectHTTP(nc net.Conn) (string, []byte, error) {
	buf := make([]byte, 0, 1024)
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxInspect {
				return "", buf, errInspectTooLong
			}
			buf = append(make([]byte, 0, min(2*cap(buf), maxInspect)), buf...)
		}
		n, err := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			if proto, done := parseHTTPStart(buf); done {
				return proto, buf, nil
			}
		}
		if err != nil {
			return "", buf, err
		}
	}
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// parseHTTPStart classifies the first bytes of a connection; done is false
// while they could still become an HTTP/2 preface or an HTTP/1 request line.
func parseHTTPStart(b []byte) (proto string, done bool) {
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if len(b) < len(h2Preface) {
			return "", false
		}
		return "h2c", true
	}
	if b[0] == '\r' || b[0] == '\n' {
		return "", true
	}
	// The line without its end; a lone trailing CR may be the start of one.
	line, complete := bytes.TrimSuffix(b, []byte("\r")), false
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line, complete = bytes.TrimSuffix(b[:i], []byte("\r")), true
	}
	// method SP request-target SP HTTP-version
	i := 0
	for i < len(line) && isTokenChar(line[i]) {
		i++
	}
	if i == len(line) {
		return "", complete // a method so far, or a line with nothing else
	}
	if i == 0 || line[i] != ' ' {
		return "", true
	}
	i++
	j := i
	for i < len(line) && line[i] > ' ' && line[i] != 0x7f {
		i++
	}
	if i == len(line) {
		return "", complete
	}
	if i == j || line[i] != ' ' {
		return "", true
	}
	v := line[i+1:]
	const pattern = "HTTP/d.d"
	for k := range min(len(v), len(pattern)) {
		ok := v[k] == pattern[k]
		if pattern[k] == 'd' {
			ok = v[k] >= '0' && v[k] <= '9'
		}
		if !ok {
			return "", true
		}
	}
	switch {
	case len(v) > len(pattern):
		return "", true
	case len(v) < len(pattern):
		return "", complete
	case !complete:
		return "", false // the version, then only the end of the line can follow
	case string(v) == "HTTP/1.1":
		return "http/1.1", true
	default:
		// Envoy's inspector labels every other version HTTP/1.0.
		return "http/1.0", true
	}
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
