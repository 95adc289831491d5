package controlplane

// The control-plane scale benchmark: a registry of N services with M
// endpoints each (WorkloadEntries) and P simulated sidecars connected over
// real gRPC on 127.0.0.1. It measures the time until every proxy has its
// full configuration, then how long one VirtualService change and one
// endpoint change take to reach every proxy (from the store write to the
// proxy's receipt of the response carrying it, so the 100 ms debounce is
// included), and per phase the process's CPU, peak and final RSS, heap,
// live heap and the xDS responses sent by type.
//
//	go test -run XXX -bench BenchmarkControlPlaneScale -benchtime 1x ./internal/controlplane/
//	go test -run XXX -bench BenchmarkControlPlaneScale -benchtime 1x ./internal/controlplane/ \
//	    -cp.services 1000 -cp.endpoints 10 -cp.proxies 1000 -cp.proc
//
// -short shrinks the defaults (1000 services, 10 endpoints each, 1000
// proxies) to a mesh CI runs in seconds (100, 5, 50);
// TestControlPlaneScaleSmall runs smaller ones with both clients as part
// of the ordinary tests, and checks that a change is one response per
// proxy.
//
// By default the proxies live in the same process, so RSS and CPU include
// theirs: an upper bound for the control plane. -cp.proc runs them in a
// child process (this test binary) so that the figures are the control
// plane's alone; both share the machine's cores either way. The default
// client is a thin ADS stream ("raw") rather than the proxy's xdsclient:
// xdsclient decodes every resource and keeps every proxy's serialized
// configuration (~2 MB each at 1000 services), which at 1000 proxies
// would be most of what is measured. The raw client does what an Envoy
// does on the wire (wildcard CDS and LDS, EDS and RDS by the names they
// reference, an ACK after each response) and decodes no more than those
// names. -cp.client xdsclient uses the real client.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/proxy/xdsclient"
	"github.com/amime-mesh/amime/internal/registry"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

var (
	scaleServices  = flag.Int("cp.services", 0, "control-plane scale benchmark: services (default 1000, 100 with -short)")
	scaleEndpoints = flag.Int("cp.endpoints", 0, "control-plane scale benchmark: endpoints per service (default 10, 5 with -short)")
	scaleProxies   = flag.Int("cp.proxies", 0, "control-plane scale benchmark: connected proxies (default 1000, 50 with -short)")
	scaleClient    = flag.String("cp.client", "raw", "control-plane scale benchmark: simulated proxy, raw (thin ADS stream) or xdsclient")
	scaleProc      = flag.Bool("cp.proc", false, "control-plane scale benchmark: run the simulated proxies in a child process, so that RSS and CPU are the control plane's alone")
	scaleMaxRSS    = flag.Int64("cp.maxrss", 6<<30, "control-plane scale benchmark: give up when the process RSS exceeds this many bytes")
	scaleTimeout   = flag.Duration("cp.timeout", 5*time.Minute, "control-plane scale benchmark: limit of each phase")
	scaleCPUProf   = flag.String("cp.cpuprofile", "", "control-plane scale benchmark: write a CPU profile of the two change phases to this file (diagnostics)")
	scaleHeapProf  = flag.Bool("cp.heapprofiles", false, "control-plane scale benchmark: write the live heap at the end of each phase to cp-heap-<phase>.prof (diagnostics)")
	scaleLog       = flag.Bool("cp.log", false, "control-plane scale benchmark: print the control plane's debug log (diagnostics)")
	scaleHeapAt    = flag.Int64("cp.heapprofile-at", 0, "control-plane scale benchmark: write a heap profile to cp-heap.prof when the RSS first exceeds this many MiB (diagnostics)")
)

// scaleConfig sizes one run.
type scaleConfig struct {
	Services, Endpoints, Proxies int
	Client                       string // "raw" or "xdsclient"
	Proc                         bool   // proxies in a child process
	MaxRSS                       int64
	Timeout                      time.Duration
}

func scaleConfigFromFlags() scaleConfig {
	c := scaleConfig{Services: 1000, Endpoints: 10, Proxies: 1000, Client: *scaleClient, Proc: *scaleProc, MaxRSS: *scaleMaxRSS, Timeout: *scaleTimeout}
	if testing.Short() {
		c.Services, c.Endpoints, c.Proxies = 100, 5, 50
	}
	if *scaleServices > 0 {
		c.Services = *scaleServices
	}
	if *scaleEndpoints > 0 {
		c.Endpoints = *scaleEndpoints
	}
	if *scaleProxies > 0 {
		c.Proxies = *scaleProxies
	}
	return c
}

func BenchmarkControlPlaneScale(b *testing.B) {
	cfg := scaleConfigFromFlags()
	var res *scaleResult
	for b.Loop() {
		var err error
		if res, err = runScale(cfg, b.Logf); err != nil {
			b.Fatal(err)
		}
	}
	// Printed rather than logged: benchmark logs are cut at ten lines.
	fmt.Print(res.table())
	b.ReportMetric(res.firstAll.Seconds(), "first-config-s")
	b.ReportMetric(ms(res.vs.p(50)), "vs-p50-ms")
	b.ReportMetric(ms(res.vs.p(99)), "vs-p99-ms")
	b.ReportMetric(ms(res.ep.p(50)), "ep-p50-ms")
	b.ReportMetric(ms(res.ep.p(99)), "ep-p99-ms")
	b.ReportMetric(float64(res.peakRSS)/(1<<20), "peak-rss-MiB")
	b.ReportMetric(res.cpu.Seconds(), "cpu-s")
}

// TestControlPlaneScaleSmall runs a small mesh with the proxy's own xDS
// client, and with the thin one in a child process: every proxy gets its
// configuration and follows both changes, and a change resends only the
// type it changes (one response per proxy).
func TestControlPlaneScaleSmall(t *testing.T) {
	for _, cfg := range []scaleConfig{
		{Services: 40, Endpoints: 3, Proxies: 20, Client: "xdsclient"},
		{Services: 30, Endpoints: 2, Proxies: 10, Client: "raw", Proc: true},
	} {
		t.Run(fmt.Sprintf("%s,proc=%v", cfg.Client, cfg.Proc), func(t *testing.T) {
			cfg.MaxRSS, cfg.Timeout = 2<<30, time.Minute
			res, err := runScale(cfg, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", res.table())
			want := map[string]map[string]float64{
				"VirtualService change": {"RDS": float64(cfg.Proxies)},
				"endpoint change":       {"EDS": float64(cfg.Proxies)},
			}
			for _, p := range res.phases {
				w, ok := want[p.name]
				if !ok {
					continue
				}
				for _, typ := range []string{"CDS", "EDS", "LDS", "RDS"} {
					if p.sends[typ] != w[typ] {
						t.Errorf("%s: %v %s responses, want %v", p.name, p.sends[typ], typ, w[typ])
					}
				}
			}
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// durations are per-proxy latencies of one phase.
type durations []time.Duration

func (d durations) p(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*q/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// phase is what the process spent during one part of the run.
type phase struct {
	name    string
	wall    time.Duration
	cpu     time.Duration
	sends   map[string]float64 // xDS responses sent, by type
	peakRSS int64              // VmHWM, reset at the phase's start
	rss     int64              // VmRSS at its end
	heap    uint64
	live    uint64 // heap after a collection at its end
}

type scaleResult struct {
	cfg      scaleConfig
	objects  int
	firstAll time.Duration // connect to the last proxy fully configured
	first    durations     // per proxy
	vs, ep   durations     // store write to receipt
	phases   []phase
	peakRSS  int64
	cpu      time.Duration
}

func (r *scaleResult) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "control plane scale: %d services × %d endpoints, %d proxies (%s clients), %d config objects, GOMAXPROCS %d\n",
		r.cfg.Services, r.cfg.Endpoints, r.cfg.Proxies, r.cfg.Client, r.objects, runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "%-22s %9s %9s %9s %9s\n", "latency per proxy", "p50", "p99", "max", "n")
	row := func(name string, d durations) {
		fmt.Fprintf(&b, "%-22s %9s %9s %9s %9d\n", name, round(d.p(50)), round(d.p(99)), round(d.p(100)), len(d))
	}
	row("first full config", r.first)
	row("VirtualService change", r.vs)
	row("endpoint change", r.ep)
	fmt.Fprintf(&b, "%-22s %9s %9s %10s %9s %9s %9s   %s\n", "phase", "wall", "CPU", "peak RSS", "RSS", "heap", "live", "xDS responses sent")
	for _, p := range r.phases {
		fmt.Fprintf(&b, "%-22s %9s %9s %9.0fM %8.0fM %8.0fM %8.0fM  ", p.name, round(p.wall), round(p.cpu),
			float64(p.peakRSS)/(1<<20), float64(p.rss)/(1<<20), float64(p.heap)/(1<<20), float64(p.live)/(1<<20))
		for _, t := range []string{"CDS", "EDS", "LDS", "RDS"} {
			fmt.Fprintf(&b, " %s %.0f", t, p.sends[t])
		}
		b.WriteByte('\n')
	}
	who := "control plane and simulated proxies (in-process)"
	if r.cfg.Proc {
		who = "the control plane's alone (proxies in a child process)"
	}
	fmt.Fprintf(&b, "RSS, heap and CPU: %s; phase wall and CPU include settling after the change\n", who)
	return b.String()
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}

// scaleMesh is the configuration of a run: services svc-NNNN in 10
// namespaces, each a ServiceEntry selecting its WorkloadEntries (the
// endpoints, labelled app and version), every tenth with a DestinationRule
// (subsets v1, v2) and a VirtualService (header route to v2, 90/10 split);
// the one of svc-0010 also routes by the caller's labels (sourceLabels app:
// svc-0000), so not every proxy of a namespace has the same view.
type scaleMesh struct {
	cfg     scaleConfig
	objects []*config.Object
}

const scaleNamespaces = 10

func scaleNamespace(i int) string { return "ns-" + strconv.Itoa(i%scaleNamespaces) }
func scaleName(i int) string      { return fmt.Sprintf("svc-%04d", i) }
func scaleHost(i int) string      { return scaleName(i) + "." + scaleNamespace(i) + ".svc.cluster.local" }

// scaleIP is the address of endpoint j of service i: 10.x.y.z with z ≥ 1,
// never 10.254.254.x (the endpoint change's marker).
func scaleIP(i, j int) string {
	n := i*254 + j
	return fmt.Sprintf("10.%d.%d.%d", n/(254*250)%250, n/254%250, n%254+1)
}

func newScaleMesh(cfg scaleConfig) *scaleMesh {
	m := &scaleMesh{cfg: cfg}
	add := func(kind string, i int, name string, spec proto.Message) {
		m.objects = append(m.objects, &config.Object{APIVersion: "networking.istio.io/v1", Kind: kind,
			Meta: config.Meta{Namespace: scaleNamespace(i), Name: name}, Spec: spec})
	}
	for i := range cfg.Services {
		add(config.ServiceEntry, i, scaleName(i), &networking.ServiceEntry{
			Hosts: []string{scaleHost(i)}, Resolution: networking.ServiceEntry_STATIC, Location: networking.ServiceEntry_MESH_INTERNAL,
			Ports:            []*networking.ServicePort{{Name: "http", Number: 8080, Protocol: "HTTP"}},
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": scaleName(i)}},
		})
		for j := range cfg.Endpoints {
			add(config.WorkloadEntry, i, fmt.Sprintf("%s-%d", scaleName(i), j), &networking.WorkloadEntry{
				Address: scaleIP(i, j),
				Labels:  map[string]string{"app": scaleName(i), "version": fmt.Sprintf("v%d", j%2+1), registry.TLSModeLabel: "istio"},
			})
		}
		if i%10 == 0 {
			add(config.DestinationRule, i, scaleName(i), &networking.DestinationRule{Host: scaleHost(i), Subsets: []*networking.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
			}})
			add(config.VirtualService, i, scaleName(i), scaleVirtualService(i, 90, ""))
		}
	}
	return m
}

// scaleVirtualService routes Safari to v2 and splits the rest; marker, when
// set, names the split route (it travels in RDS, so clients can spot the
// change).
func scaleVirtualService(i int, v1Weight int32, marker string) *networking.VirtualService {
	host := scaleHost(i)
	vs := &networking.VirtualService{Hosts: []string{host}}
	if i == 10 {
		vs.Http = append(vs.Http, &networking.HTTPRoute{
			Match: []*networking.HTTPMatchRequest{{SourceLabels: map[string]string{"app": scaleName(0)}}},
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host, Subset: "v2"}}},
		})
	}
	vs.Http = append(vs.Http,
		&networking.HTTPRoute{
			Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{
				"user-agent": {MatchType: &networking.StringMatch_Regex{Regex: ".*Safari.*"}},
			}}},
			Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: host, Subset: "v2"}}},
		},
		&networking.HTTPRoute{Name: marker, Route: []*networking.HTTPRouteDestination{
			{Destination: &networking.Destination{Host: host, Subset: "v1"}, Weight: v1Weight},
			{Destination: &networking.Destination{Host: host, Subset: "v2"}, Weight: 100 - v1Weight},
		}})
	return vs
}

// node describes proxy k: replica r of workload w (10 replicas per
// workload, workload w being service w's endpoints), an HTTP_PROXY-mode
// sidecar with one inbound HTTP port.
func (m *scaleMesh) node(k int) *corev3.Node {
	replicas := min(10, m.cfg.Endpoints)
	w, r := (k/replicas)%m.cfg.Services, k%replicas
	ns, ip := scaleNamespace(w), scaleIP(w, r)
	md, err := structpb.NewStruct(map[string]any{
		MetaNamespace:   ns,
		MetaLabels:      map[string]any{"app": scaleName(w), "version": fmt.Sprintf("v%d", r%2+1)},
		MetaInstanceIPs: ip,
		MetaHTTPProxy:   "127.0.0.1:15001",
	})
	if err != nil {
		panic(err)
	}
	md.Fields[MetaInbound] = InboundMetadata([]translate.InboundPort{{Name: "http", Protocol: registry.HTTP, Port: 8080}})
	return &corev3.Node{Id: fmt.Sprintf("sidecar~%s~%s-%d.%s~%s.svc.cluster.local", ip, scaleName(w), k, ns, ns), Metadata: md}
}

// marker is the change a phase waits for: the first response of typeURL
// whose resources contain want.
type marker struct {
	typeURL string
	want    []byte
}

// simProxy is one simulated proxy.
type simProxy struct {
	node   *corev3.Node
	ready  atomic.Int64            // unix nanos when the full configuration had arrived
	seenAt atomic.Int64            // unix nanos when the current marker arrived
	mark   *atomic.Pointer[marker] // nil: a stand-in for a proxy in the child process
	onSeen func()
	onDone func()
}

func (c *simProxy) check(typeURL string, values func(yield func([]byte) bool)) {
	m := c.mark.Load()
	if m == nil || m.typeURL != typeURL || c.seenAt.Load() != 0 {
		return
	}
	for v := range values {
		if bytes.Contains(v, m.want) {
			if c.seenAt.CompareAndSwap(0, time.Now().UnixNano()) {
				c.onSeen()
			}
			return
		}
	}
}

func (c *simProxy) setReady() {
	if c.ready.CompareAndSwap(0, time.Now().UnixNano()) {
		c.onDone()
	}
}

// runRaw is a thin SotW ADS client, as Envoy subscribes: CDS and LDS by
// wildcard, then EDS and RDS by the names clusters and listeners reference;
// every response is ACKed at once.
func (c *simProxy) runRaw(ctx context.Context, target string) error {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	type typeState struct {
		names []string        // subscribed (nil: wildcard)
		got   map[string]bool // received since subscribed
		seen  bool            // a response arrived
		ver   string
		nonce string
	}
	st := map[string]*typeState{}
	for _, t := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		st[t] = &typeState{got: map[string]bool{}}
	}
	first := true
	send := func(t string) error {
		s := st[t]
		req := &discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: s.ver, ResponseNonce: s.nonce, ResourceNames: s.names}
		if first {
			req.Node, first = c.node, false
		}
		return stream.Send(req)
	}
	subscribe := func(t string, names []string) error {
		s := st[t]
		slices.Sort(names)
		names = slices.Compact(names)
		if names == nil {
			names = []string{}
		}
		if slices.Equal(names, s.names) && s.names != nil {
			return nil
		}
		s.names = names
		maps := map[string]bool{}
		for n := range s.got {
			if slices.Contains(names, n) {
				maps[n] = true
			}
		}
		s.got = maps
		return send(t)
	}
	if err := send(resourcev3.ClusterType); err != nil {
		return err
	}
	if err := send(resourcev3.ListenerType); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		t := resp.GetTypeUrl()
		s := st[t]
		if s == nil {
			return fmt.Errorf("response of unexpected type %s", t)
		}
		c.check(t, func(yield func([]byte) bool) {
			for _, r := range resp.GetResources() {
				if !yield(r.GetValue()) {
					return
				}
			}
		})
		s.ver, s.nonce, s.seen = resp.GetVersionInfo(), resp.GetNonce(), true
		var refs []string
		for _, r := range resp.GetResources() {
			switch t {
			case resourcev3.ClusterType:
				if n, ok := edsName(r.GetValue()); ok {
					refs = append(refs, n)
				}
			case resourcev3.ListenerType:
				refs = append(refs, rdsNames(r)...)
			default:
				s.got[fieldOne(r.GetValue())] = true
			}
		}
		if err := send(t); err != nil { // ACK
			return err
		}
		switch t {
		case resourcev3.ClusterType:
			err = subscribe(resourcev3.EndpointType, refs)
		case resourcev3.ListenerType:
			err = subscribe(resourcev3.RouteType, refs)
		}
		if err != nil {
			return err
		}
		if c.ready.Load() == 0 && st[resourcev3.ClusterType].seen && st[resourcev3.ListenerType].seen &&
			complete(st[resourcev3.EndpointType].names, st[resourcev3.EndpointType].got) &&
			complete(st[resourcev3.RouteType].names, st[resourcev3.RouteType].got) {
			c.setReady()
		}
	}
}

func complete(names []string, got map[string]bool) bool {
	for _, n := range names {
		if !got[n] {
			return false
		}
	}
	return names != nil
}

// fieldOne reads field 1 (a string) of a serialized message: the name of a
// RouteConfiguration, the cluster_name of a ClusterLoadAssignment.
func fieldOne(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}

// edsName returns the EDS service name of a serialized EDS Cluster (type
// 2 = EDS; eds_cluster_config 3, its service_name 2), without decoding the
// rest.
func edsName(b []byte) (string, bool) {
	var name, service string
	eds := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, _ := protowire.ConsumeBytes(b)
			name = string(v)
		case num == 2 && typ == protowire.VarintType:
			v, _ := protowire.ConsumeVarint(b)
			eds = v == 3
		case num == 3 && typ == protowire.BytesType:
			v, _ := protowire.ConsumeBytes(b)
			service = fieldN(v, 2)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
	}
	if service == "" {
		service = name
	}
	return service, eds
}

func fieldN(b []byte, want protowire.Number) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == want && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}

// rdsNames lists the route configurations a listener reads over RDS.
func rdsNames(a *anypb.Any) []string {
	l := &listenerv3.Listener{}
	if err := a.UnmarshalTo(l); err != nil {
		return nil
	}
	var out []string
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			m := &hcmv3.HttpConnectionManager{}
			if tc := f.GetTypedConfig(); tc != nil && tc.MessageIs(m) && tc.UnmarshalTo(m) == nil {
				if n := m.GetRds().GetRouteConfigName(); n != "" {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// xdsHandler drives xdsclient as the proxy does: wildcard CDS and LDS, and
// EDS and RDS for what they name.
type xdsHandler struct {
	c  *simProxy
	xc *xdsclient.Client
	mu sync.Mutex
	// names subscribed and received, by type
	want, got map[string]map[string]bool
	seen      map[string]bool
}

func (h *xdsHandler) OnUpdate(typeURL string, res map[string]*anypb.Any) error {
	h.c.check(typeURL, func(yield func([]byte) bool) {
		for _, a := range res {
			if !yield(a.GetValue()) {
				return
			}
		}
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen[typeURL] = true
	var refs []string
	switch typeURL {
	case xdsclient.ClusterType:
		for _, a := range res {
			if n, ok := edsName(a.GetValue()); ok {
				refs = append(refs, n)
			}
		}
		h.watch(xdsclient.EndpointType, refs)
	case xdsclient.ListenerType:
		for _, a := range res {
			refs = append(refs, rdsNames(a)...)
		}
		h.watch(xdsclient.RouteType, refs)
	default:
		h.got[typeURL] = map[string]bool{}
		for n := range res {
			h.got[typeURL][n] = true
		}
	}
	done := h.seen[xdsclient.ClusterType] && h.seen[xdsclient.ListenerType]
	for _, t := range []string{xdsclient.EndpointType, xdsclient.RouteType} {
		done = done && h.want[t] != nil
		for n := range h.want[t] {
			done = done && h.got[t][n]
		}
	}
	if done {
		h.c.setReady()
	}
	return nil
}

func (h *xdsHandler) watch(t string, names []string) {
	set := map[string]bool{}
	for _, n := range names {
		set[n] = true
	}
	h.want[t] = set
	h.xc.Watch(t, names)
}

func (c *simProxy) runXDSClient(ctx context.Context, target string) error {
	h := &xdsHandler{c: c, want: map[string]map[string]bool{}, got: map[string]map[string]bool{}, seen: map[string]bool{}}
	xc, err := xdsclient.New(xdsclient.Config{Target: target, Node: c.node, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		DialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1 << 30))}}, h)
	if err != nil {
		return err
	}
	h.xc = xc
	xc.Wildcard(xdsclient.ClusterType)
	xc.Wildcard(xdsclient.ListenerType)
	return xc.Run(ctx)
}

// fleet runs the simulated proxies.
type fleet interface {
	// mark sets the change the proxies watch for; in effect on return.
	mark(*marker) error
	stop()
}

// localFleet runs the proxies in this process.
type localFleet struct {
	marker *atomic.Pointer[marker]
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startFleet(ctx context.Context, cfg scaleConfig, target string, clients []*simProxy, logf func(string, ...any)) *localFleet {
	ctx, cancel := context.WithCancel(ctx)
	f := &localFleet{marker: &atomic.Pointer[marker]{}, cancel: cancel}
	for _, c := range clients {
		c.mark = f.marker
		f.wg.Go(func() {
			var err error
			if cfg.Client == "xdsclient" {
				err = c.runXDSClient(ctx, target)
			} else {
				err = c.runRaw(ctx, target)
			}
			if err != nil && ctx.Err() == nil {
				logf("client %s: %v", c.node.GetId(), err)
			}
		})
	}
	return f
}

func (f *localFleet) mark(m *marker) error {
	f.marker.Store(m)
	return nil
}

func (f *localFleet) stop() { f.cancel(); f.wg.Wait() }

// procFleet runs the proxies in a child process (this test binary running
// TestScaleProxies), which reports each proxy's events on its stdout as
// "@scale ready|seen <proxy> <unix nanos>"; the stand-ins in this process
// record them.
type procFleet struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	marked chan struct{}
	done   chan struct{}
}

const scaleChildEnv = "AMIME_SCALE_PROXIES"

func startProcFleet(ctx context.Context, cfg scaleConfig, target string, clients []*simProxy) (*procFleet, error) {
	spec, err := json.Marshal(struct {
		Target string
		Cfg    scaleConfig
	}{target, cfg})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestScaleProxies$", "-test.timeout=0")
	cmd.Env = append(os.Environ(), scaleChildEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &procFleet{cmd: cmd, stdin: stdin, marked: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var what string
			var k int
			var at int64
			if n, _ := fmt.Sscanf(sc.Text(), "@scale %s %d %d", &what, &k, &at); n < 1 || k < 0 || k >= len(clients) {
				continue
			}
			switch c := clients[k]; what {
			case "ready":
				if c.ready.CompareAndSwap(0, at) {
					c.onDone()
				}
			case "seen":
				if c.seenAt.CompareAndSwap(0, at) {
					c.onSeen()
				}
			case "marked":
				f.marked <- struct{}{}
			}
		}
	}()
	return f, nil
}

func (f *procFleet) mark(m *marker) error {
	if _, err := fmt.Fprintf(f.stdin, "mark %s %x\n", m.typeURL, m.want); err != nil {
		return err
	}
	select {
	case <-f.marked:
		return nil
	case <-f.done:
		return errors.New("the proxies' process ended")
	case <-time.After(time.Minute):
		return errors.New("the proxies' process did not take the marker")
	}
}

func (f *procFleet) stop() {
	_ = f.stdin.Close() // the child exits at EOF
	<-f.done
	_ = f.cmd.Wait()
}

// TestScaleProxies is the child process of -cp.proc: it runs the proxies
// and reports their events; skipped otherwise.
func TestScaleProxies(t *testing.T) {
	spec := os.Getenv(scaleChildEnv)
	if spec == "" {
		t.Skip("the proxies of BenchmarkControlPlaneScale -cp.proc")
	}
	var in struct {
		Target string
		Cfg    scaleConfig
	}
	if err := json.Unmarshal([]byte(spec), &in); err != nil {
		t.Fatal(err)
	}
	var outMu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	report := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, "@scale "+format+"\n", args...)
		_ = out.Flush()
	}
	mesh := &scaleMesh{cfg: in.Cfg}
	clients := make([]*simProxy, in.Cfg.Proxies)
	for k := range clients {
		c := &simProxy{node: mesh.node(k)}
		c.onDone = func() { report("ready %d %d", k, c.ready.Load()) }
		c.onSeen = func() { report("seen %d %d", k, c.seenAt.Load()) }
		clients[k] = c
	}
	f := startFleet(context.Background(), in.Cfg, in.Target, clients, t.Logf)
	defer f.stop()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var typeURL, want string
		if n, _ := fmt.Sscanf(sc.Text(), "mark %s %s", &typeURL, &want); n != 2 {
			continue
		}
		b, err := hex.DecodeString(want)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			c.seenAt.Store(0)
		}
		_ = f.mark(&marker{typeURL: typeURL, want: b})
		report("marked")
	}
}

// procStatus reads a "VmRSS:    123 kB" line of /proc/self/status in bytes.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux ≥ 4.0).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// phaseMeter measures one phase.
type phaseMeter struct {
	name  string
	start time.Time
	cpu   time.Duration
	cp    *ControlPlane
	sends map[string]float64
}

func startPhase(cp *ControlPlane, name string) *phaseMeter {
	runtime.GC()
	resetPeakRSS()
	return &phaseMeter{name: name, start: time.Now(), cpu: cpuTime(), cp: cp, sends: sends(cp)}
}

// sends reads the server's count of responses by type.
func sends(cp *ControlPlane) map[string]float64 {
	out := map[string]float64{}
	mfs, _ := cp.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "pilot_xds_pushes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

func (m *phaseMeter) end() phase {
	p := phase{name: m.name, wall: time.Since(m.start), cpu: cpuTime() - m.cpu, peakRSS: procStatus("VmHWM"), rss: procStatus("VmRSS")}
	p.sends = sends(m.cp)
	for t, n := range m.sends {
		p.sends[t] -= n
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.heap = ms.HeapInuse
	runtime.GC()
	runtime.ReadMemStats(&ms)
	p.live = ms.HeapAlloc
	if *scaleHeapProf {
		if f, err := os.Create("cp-heap-" + strings.ReplaceAll(p.name, " ", "-") + ".prof"); err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	return p
}

// waitAll waits for n signals on ch, failing after timeout or when the
// process outgrows maxRSS.
func waitAll(ch <-chan struct{}, n int, timeout time.Duration, maxRSS int64, what string, pending func() string) error {
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for got := 0; got < n; {
		select {
		case <-ch:
			got++
		case <-tick.C:
			if rss := procStatus("VmRSS"); maxRSS > 0 && rss > maxRSS {
				return fmt.Errorf("%s: RSS %d MiB exceeds the limit of %d MiB after %d of %d proxies", what, rss>>20, maxRSS>>20, got, n)
			}
		case <-deadline:
			return fmt.Errorf("%s: %d of %d proxies after %v; e.g. %s", what, got, n, timeout, pending())
		}
	}
	return nil
}

// runScale runs the scenario once.
func runScale(cfg scaleConfig, logf func(string, ...any)) (*scaleResult, error) {
	res := &scaleResult{cfg: cfg}
	totalCPU := cpuTime()
	mesh := newScaleMesh(cfg)
	res.objects = len(mesh.objects)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *scaleLog {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cp, err := New(Options{XDSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Log: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() {
		if err := cp.Run(ctx); err != nil {
			logf("control plane: %v", err)
		}
	})

	// A hard stop: a control plane that outgrows the machine would take
	// every other process on it down. Polled often, as memory can grow by
	// gigabytes a second.
	var progress atomic.Value
	var nready, nseen atomic.Int64
	progress.Store("loading config")
	runStart := time.Now()
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rss := procStatus("VmRSS")
			if *scaleHeapAt > 0 && rss > *scaleHeapAt<<20 {
				*scaleHeapAt = 0
				if f, err := os.Create("cp-heap.prof"); err == nil {
					_ = pprof.WriteHeapProfile(f)
					_ = f.Close()
				}
			}
			if cfg.MaxRSS > 0 && rss > cfg.MaxRSS {
				fmt.Fprintf(os.Stderr, "control plane scale: RSS %d MiB exceeds -cp.maxrss %d MiB after %v (%s: %d proxies configured, %d changed); giving up\n",
					rss>>20, cfg.MaxRSS>>20, time.Since(runStart).Round(time.Millisecond), progress.Load(), nready.Load(), nseen.Load())
				os.Exit(2)
			}
		}
	})

	m := startPhase(cp, "load config")
	if _, err := cp.Store().ApplyAll(mesh.objects); err != nil {
		return nil, err
	}
	res.phases = append(res.phases, m.end())

	ready, seen := make(chan struct{}, cfg.Proxies), make(chan struct{}, cfg.Proxies)
	clients := make([]*simProxy, cfg.Proxies)
	for k := range clients {
		clients[k] = &simProxy{node: mesh.node(k),
			onDone: func() { nready.Add(1); ready <- struct{}{} }, onSeen: func() { nseen.Add(1); seen <- struct{}{} }}
	}
	pending := func(f func(*simProxy) bool) func() string {
		return func() string {
			for _, c := range clients {
				if f(c) {
					return c.node.GetId()
				}
			}
			return "none"
		}
	}

	m = startPhase(cp, "first full config")
	start := time.Now()
	progress.Store(fmt.Sprintf("connecting %d proxies", cfg.Proxies))
	var fl fleet
	if cfg.Proc {
		fl, err = startProcFleet(ctx, cfg, cp.XDSAddr(), clients)
	} else {
		fl = startFleet(ctx, cfg, cp.XDSAddr(), clients, logf)
	}
	if err != nil {
		return nil, err
	}
	defer fl.stop()
	if err := waitAll(ready, cfg.Proxies, cfg.Timeout, cfg.MaxRSS, "first full config", pending(func(c *simProxy) bool { return c.ready.Load() == 0 })); err != nil {
		return nil, err
	}
	res.firstAll = time.Since(start)
	progress.Store("changes")
	for _, c := range clients {
		res.first = append(res.first, time.Duration(c.ready.Load()-start.UnixNano()))
	}
	// Let the push that the proxies' registrations may have queued finish.
	settle(cp)
	res.phases = append(res.phases, m.end())

	if *scaleCPUProf != "" {
		f, err := os.Create(*scaleCPUProf)
		if err != nil {
			return nil, err
		}
		settle(cp)
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	change := func(name string, mk *marker, write func() error) (durations, error) {
		settle(cp)
		m := startPhase(cp, name)
		for _, c := range clients {
			c.seenAt.Store(0)
		}
		if err := fl.mark(mk); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := write(); err != nil {
			return nil, err
		}
		if err := waitAll(seen, cfg.Proxies, cfg.Timeout, cfg.MaxRSS, name, pending(func(c *simProxy) bool { return c.seenAt.Load() == 0 })); err != nil {
			return nil, err
		}
		var d durations
		for _, c := range clients {
			d = append(d, time.Duration(c.seenAt.Load()-t0.UnixNano()))
		}
		settle(cp)
		res.phases = append(res.phases, m.end())
		return d, nil
	}

	res.vs, err = change("VirtualService change", &marker{typeURL: resourcev3.RouteType, want: []byte("bench-vs-change")}, func() error {
		_, _, err := cp.Store().Apply(&config.Object{APIVersion: "networking.istio.io/v1", Kind: config.VirtualService,
			Meta: config.Meta{Namespace: scaleNamespace(0), Name: scaleName(0)}, Spec: scaleVirtualService(0, 80, "bench-vs-change")})
		return err
	})
	if err != nil {
		return nil, err
	}
	const newIP = "10.254.254.1"
	res.ep, err = change("endpoint change", &marker{typeURL: resourcev3.EndpointType, want: []byte(newIP)}, func() error {
		_, err := cp.Store().Create(&config.Object{APIVersion: "networking.istio.io/v1", Kind: config.WorkloadEntry,
			Meta: config.Meta{Namespace: scaleNamespace(0), Name: scaleName(0) + "-new"},
			Spec: &networking.WorkloadEntry{Address: newIP, Labels: map[string]string{"app": scaleName(0), "version": "v1", registry.TLSModeLabel: "istio"}}})
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, p := range res.phases {
		res.peakRSS = max(res.peakRSS, p.peakRSS)
	}
	res.cpu = cpuTime() - totalCPU
	return res, nil
}

// settle waits until every proxy has ACKed what it was sent and no push
// happened for a while (longer than the debounce), so that one phase's
// work does not spill into the next one's figures.
func settle(cp *ControlPlane) {
	state := func() (string, bool) {
		var b strings.Builder
		synced := true
		for _, s := range cp.xds.Status() {
			b.WriteString(s.Version)
			b.WriteByte(',')
			for _, st := range s.Types {
				synced = synced && st == "SYNCED"
			}
		}
		return b.String(), synced
	}
	deadline := time.Now().Add(time.Minute)
	last, _ := state()
	quiet := time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		cur, synced := state()
		if cur != last || !synced {
			last, quiet = cur, time.Now()
			continue
		}
		if time.Since(quiet) > 500*time.Millisecond {
			return
		}
	}
}
