package registry

import (
	"reflect"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
)

func obj(kind, ns, name string, spec any, age int) *config.Object {
	o := &config.Object{Kind: kind, Meta: config.Meta{Namespace: ns, Name: name, CreationTimestamp: time.Unix(int64(1000+age), 0)}}
	switch s := spec.(type) {
	case *networking.ServiceEntry:
		o.Spec = s
	case *networking.WorkloadEntry:
		o.Spec = s
	}
	return o
}

func weKey(ns, name string) config.Key {
	return config.Key{Kind: config.WorkloadEntry, Namespace: ns, Name: name}
}

type ep struct {
	Addr    string
	Port    uint32
	Weight  uint32
	Healthy bool
	Sidecar bool
}

func summarize(eps []*Endpoint) []ep {
	var out []ep
	for _, e := range eps {
		out = append(out, ep{e.Address, e.Port, e.Weight, e.Healthy, e.Sidecar})
	}
	return out
}

func TestBuildEndpoints(t *testing.T) {
	recommendation := &networking.ServiceEntry{
		Hosts:      []string{"Recommendation.default.svc.cluster.local"},
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
		Ports: []*networking.ServicePort{
			{Name: "grpc", Number: 9090, Protocol: "grpc"},
			{Name: "http", Number: 8080, Protocol: "HTTP", TargetPort: 18080},
		},
		WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "recommendation"}},
	}
	wes := []*config.Object{
		obj(config.WorkloadEntry, "default", "rec-v1", &networking.WorkloadEntry{
			Address: "10.0.0.1", Labels: map[string]string{"app": "recommendation", "version": "v1", TLSModeLabel: "istio"},
			Ports: map[string]uint32{"http": 28080}, ServiceAccount: "rec",
		}, 0),
		obj(config.WorkloadEntry, "default", "rec-v2", &networking.WorkloadEntry{
			Address: "10.0.0.2", Labels: map[string]string{"app": "recommendation", "version": "v2"}, Weight: 3,
		}, 0),
		// Another namespace: not selected.
		obj(config.WorkloadEntry, "other", "rec-x", &networking.WorkloadEntry{
			Address: "10.0.0.3", Labels: map[string]string{"app": "recommendation"},
		}, 0),
		// Labels do not match.
		obj(config.WorkloadEntry, "default", "pref", &networking.WorkloadEntry{
			Address: "10.0.0.4", Labels: map[string]string{"app": "preference"},
		}, 0),
	}
	inline := &networking.ServiceEntry{
		Hosts:      []string{"db.example.com"},
		Resolution: networking.ServiceEntry_STATIC,
		Ports:      []*networking.ServicePort{{Name: "tcp", Number: 5432, Protocol: "TCP"}},
		Endpoints: []*networking.WorkloadEntry{
			{Address: "192.168.0.2"},
			{Address: "192.168.0.1", Ports: map[string]uint32{"tcp": 6432}, Weight: 2},
			{Address: "db-1.internal"}, // not an IP: refused for STATIC
		},
	}
	r := Build([]*config.Object{
		obj(config.ServiceEntry, "default", "recommendation", recommendation, 0),
		obj(config.ServiceEntry, "default", "db", inline, 0),
	}, wes, healthFunc(func(k config.Key) bool { return k != weKey("default", "rec-v2") }))

	svc := r.Service("recommendation.default.svc.cluster.local", "default")
	if svc == nil {
		t.Fatal("service not found (hostnames are lower-cased)")
	}
	if got := []uint32{svc.Ports[0].Number, svc.Ports[1].Number}; !reflect.DeepEqual(got, []uint32{8080, 9090}) {
		t.Errorf("ports not sorted: %v", got)
	}
	if svc.Ports[1].Protocol != GRPC || !svc.Ports[1].Protocol.IsHTTP2() {
		t.Errorf("protocol = %q", svc.Ports[1].Protocol)
	}
	tests := []struct {
		name   string
		svc    *Service
		port   uint32
		subset map[string]string
		want   []ep
	}{
		{"entry ports map overrides targetPort", svc, 8080, nil, []ep{{"10.0.0.1", 28080, 1, true, true}, {"10.0.0.2", 18080, 3, false, false}}},
		{"no targetPort: service port", svc, 9090, nil, []ep{{"10.0.0.1", 9090, 1, true, true}, {"10.0.0.2", 9090, 3, false, false}}},
		{"subset labels", svc, 8080, map[string]string{"version": "v2"}, []ep{{"10.0.0.2", 18080, 3, false, false}}},
		{"subset matches nothing", svc, 8080, map[string]string{"version": "v3"}, nil},
		{"inline endpoints sorted, weight default 1", r.Service("db.example.com", "default"), 5432, nil,
			[]ep{{"192.168.0.1", 6432, 2, true, false}, {"192.168.0.2", 5432, 1, true, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarize(tc.svc.Endpoints(tc.port, tc.subset)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if e := svc.Endpoints(8080, nil)[0]; e.WorkloadEntry == nil || *e.WorkloadEntry != weKey("default", "rec-v1") || e.ServiceAccount != "rec" {
		t.Errorf("endpoint provenance = %+v", e)
	}
	if len(r.Warnings()) != 1 {
		t.Errorf("warnings = %q, want the non-IP STATIC endpoint", r.Warnings())
	}
}

type healthFunc func(config.Key) bool

func (f healthFunc) Healthy(k config.Key) bool { return f(k) }

func TestVisibility(t *testing.T) {
	se := func(host string, exportTo ...string) *networking.ServiceEntry {
		return &networking.ServiceEntry{Hosts: []string{host}, ExportTo: exportTo, Ports: []*networking.ServicePort{{Name: "http", Number: 80, Protocol: "HTTP"}}}
	}
	r := Build([]*config.Object{
		obj(config.ServiceEntry, "a", "public", se("public.a.svc.cluster.local"), 0),
		obj(config.ServiceEntry, "a", "private", se("private.a.svc.cluster.local", "."), 0),
		obj(config.ServiceEntry, "a", "to-b", se("to-b.a.svc.cluster.local", "b"), 0),
		obj(config.ServiceEntry, "a", "hidden", se("hidden.a.svc.cluster.local", "~"), 0),
		// Same hostname in two namespaces: the proxy's own wins, else the oldest.
		obj(config.ServiceEntry, "b", "shared-b", se("shared.example.com"), 2),
		obj(config.ServiceEntry, "c", "shared-c", se("shared.example.com"), 1),
		// Same host twice in one namespace: the older entry wins.
		obj(config.ServiceEntry, "c", "shared-c-dup", se("shared.example.com"), 3),
	}, nil, nil)
	names := func(ns string) []string {
		var out []string
		for _, s := range r.VisibleServices(ns) {
			out = append(out, s.Namespace+"/"+s.Hostname)
		}
		return out
	}
	tests := []struct {
		ns   string
		want []string
	}{
		{"a", []string{"a/private.a.svc.cluster.local", "a/public.a.svc.cluster.local", "c/shared.example.com"}},
		{"b", []string{"a/public.a.svc.cluster.local", "b/shared.example.com", "a/to-b.a.svc.cluster.local"}},
		{"c", []string{"a/public.a.svc.cluster.local", "c/shared.example.com"}},
	}
	for _, tc := range tests {
		if got := names(tc.ns); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("visible from %s = %q, want %q", tc.ns, got, tc.want)
		}
	}
	if s := r.Lookup("shared.example.com", "b"); s == nil || s.Namespace != "b" {
		t.Errorf("Lookup from b = %+v", s)
	}
	if len(r.Warnings()) != 1 {
		t.Errorf("warnings = %q, want the duplicate host", r.Warnings())
	}
}

func TestLeases(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLeases(10*time.Second, 60*time.Second, func() time.Time { return now })
	a, b, static := weKey("default", "a"), weKey("default", "b"), weKey("default", "static")
	l.Heartbeat(a)
	now = now.Add(5 * time.Second)
	l.Heartbeat(b)
	steps := []struct {
		at                 time.Duration // since start
		healthyA, healthyB bool
		expired            []config.Key
		beatB, forget      bool
		next               time.Duration // after the step's actions
	}{
		{at: 9 * time.Second, healthyA: true, healthyB: true, next: 10 * time.Second},
		{at: 10 * time.Second, healthyA: false, healthyB: true, next: 15 * time.Second},
		{at: 30 * time.Second, healthyA: false, healthyB: false, beatB: true, next: 40 * time.Second},
		{at: 60 * time.Second, healthyA: false, healthyB: false, expired: []config.Key{a}, forget: true, next: 90 * time.Second},
	}
	for _, s := range steps {
		now = time.Unix(0, 0).Add(s.at)
		if got := l.Healthy(a); got != s.healthyA {
			t.Errorf("t=%v: a healthy = %v", s.at, got)
		}
		if got := l.Healthy(b); got != s.healthyB {
			t.Errorf("t=%v: b healthy = %v", s.at, got)
		}
		if !l.Healthy(static) {
			t.Errorf("t=%v: an untracked entry must stay healthy", s.at)
		}
		if got := l.Expired(); !reflect.DeepEqual(got, s.expired) {
			t.Errorf("t=%v: expired = %v, want %v", s.at, got, s.expired)
		}
		if s.beatB {
			l.Heartbeat(b)
		}
		if s.forget {
			for _, k := range l.Expired() {
				l.Forget(k)
			}
		}
		if next, ok := l.NextChange(); !ok || !next.Equal(time.Unix(0, 0).Add(s.next)) {
			t.Errorf("t=%v: next change = %v %v, want +%v", s.at, next, ok, s.next)
		}
	}
}

func TestParseProtocol(t *testing.T) {
	for in, want := range map[string]Protocol{"http": HTTP, "Http2": HTTP2, "gRPC": GRPC, "grpc-web": GRPCWeb, "tcp": TCP, "": Unsupported, "thrift": Unsupported} {
		if got := ParseProtocol(in); got != want {
			t.Errorf("ParseProtocol(%q) = %q, want %q", in, got, want)
		}
	}
}
