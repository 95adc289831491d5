package translate

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/amime-mesh/amime/internal/registry"
)

// split translates p the way a control plane sharing views does.
func split(t *testing.T, in Input, p Proxy) *Resources {
	t.Helper()
	out, err := TranslateOutbound(in, p)
	if err != nil {
		t.Fatal(err)
	}
	own, err := TranslateInbound(in, out, p)
	if err != nil {
		t.Fatal(err)
	}
	return Merge(out, own)
}

// TestSplitEqualsTranslate: outbound + inbound is Translate, byte for byte,
// for every golden input and for variants of its proxy, and the proxies
// that share a ViewKey share the outbound part.
func TestSplitEqualsTranslate(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/input.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no test cases: %v", err)
	}
	for _, path := range dirs {
		t.Run(filepath.Base(filepath.Dir(path)), func(t *testing.T) {
			tc := loadCase(t, path)
			variants := []Proxy{tc.proxy}
			// Another replica: other address, ports and unrelated labels.
			other := tc.proxy
			other.ID, other.IPs = "replica", []string{"10.9.9.9"}
			other.Labels = map[string]string{"pod-template-hash": "abc"}
			for k, v := range tc.proxy.Labels {
				other.Labels[k] = v
			}
			other.Inbound = []InboundPort{{Name: "http", Protocol: registry.HTTP, Port: 9080}, {Name: "tcp", Protocol: registry.TCP, Port: 9090, TargetPort: 19090}}
			variants = append(variants, other)
			// An inbound port on the HTTP_PROXY listener's address: the
			// outbound listener keeps it, as in Translate.
			if tc.proxy.Outbound.HTTPProxy == "127.0.0.1:15001" {
				clash := tc.proxy
				clash.IPs = []string{"127.0.0.1"}
				clash.Inbound = []InboundPort{{Name: "http", Protocol: registry.HTTP, Port: 8080, ListenPort: 15001}}
				variants = append(variants, clash)
			}
			sels := ViewSelectors(tc.in)
			var shared []byte
			withShared := tc.in
			withShared.Shared = NewShared()
			for i, p := range variants {
				want, err := Translate(tc.in, p)
				if err != nil {
					t.Fatal(err)
				}
				// Sharing resources between translations changes nothing,
				// whether they are built (first round) or reused.
				for round := range 2 {
					got, err := Translate(withShared, p)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(render(t, got), render(t, want)) {
						t.Errorf("variant %d, round %d: with Shared:\n%s", i, round, diffLines(string(render(t, want)), string(render(t, got))))
					}
					if got := split(t, withShared, p); !bytes.Equal(render(t, got), render(t, want)) {
						t.Errorf("variant %d, round %d: split with Shared:\n%s", i, round, diffLines(string(render(t, want)), string(render(t, got))))
					}
				}
				if i == 2 && !slices.ContainsFunc(want.Warnings, func(w string) bool { return strings.Contains(w, "is already used by listener") }) {
					t.Errorf("clashing inbound port: no warning in %q", want.Warnings)
				}
				if got := split(t, tc.in, p); !bytes.Equal(render(t, got), render(t, want)) {
					t.Errorf("variant %d: split differs from Translate:\n%s", i, diffLines(string(render(t, want)), string(render(t, got))))
				}
				if ViewKey(p, sels) != ViewKey(tc.proxy, sels) {
					if p.Type != Router {
						t.Errorf("variant %d: view key %q, want %q", i, ViewKey(p, sels), ViewKey(tc.proxy, sels))
					}
					continue
				}
				out, err := TranslateOutbound(tc.in, p)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					shared = render(t, out)
				} else if !bytes.Equal(render(t, out), shared) {
					t.Errorf("variant %d: same view key, different outbound part", i)
				}
			}
		})
	}
}

func TestViewKeySelectors(t *testing.T) {
	tc := loadCase(t, "testdata/source-labels/input.yaml")
	sels := ViewSelectors(tc.in)
	if len(sels) != 1 || sels[0]["app"] != "customer" {
		t.Fatalf("selectors %v, want [{app: customer}]", sels)
	}
	customer, other := tc.proxy, tc.proxy
	other.Labels = map[string]string{"app": "reviews", "version": "v1"}
	if ViewKey(customer, sels) == ViewKey(other, sels) {
		t.Error("a proxy that sourceLabels match and one they do not share a view key")
	}
	v2 := customer
	v2.Labels = map[string]string{"app": "customer", "version": "v2"}
	if ViewKey(customer, sels) != ViewKey(v2, sels) {
		t.Error("labels no selector reads split the view")
	}
	ns := customer
	ns.Namespace = "other"
	if ViewKey(customer, sels) == ViewKey(ns, sels) {
		t.Error("namespaces share a view key")
	}
}

func TestTranslateInboundErrors(t *testing.T) {
	p := Proxy{ID: "bad", IPs: []string{"not-an-ip"}}
	_, want := Translate(Input{}, p)
	_, got := TranslateInbound(Input{}, &Resources{}, p)
	if want == nil || got == nil || got.Error() != want.Error() {
		t.Errorf("TranslateInbound error %v, want Translate's %v", got, want)
	}
}

func TestSharedReusesMessages(t *testing.T) {
	tc := loadCase(t, "testdata/canary-subsets-weights/input.yaml")
	in := tc.in
	in.Shared = NewShared()
	a, b := tc.proxy, tc.proxy
	b.Namespace = "elsewhere"
	ra, err := TranslateOutbound(in, a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := TranslateOutbound(in, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ra.Endpoints) == 0 || len(ra.Endpoints) != len(rb.Endpoints) || len(ra.Clusters) != len(rb.Clusters) {
		t.Fatalf("%d/%d assignments, %d/%d clusters", len(ra.Endpoints), len(rb.Endpoints), len(ra.Clusters), len(rb.Clusters))
	}
	for i := range ra.Endpoints {
		if ra.Endpoints[i] != rb.Endpoints[i] {
			t.Errorf("assignment %s built twice", ra.Endpoints[i].GetClusterName())
		}
	}
	for i := range ra.Clusters {
		if ra.Clusters[i] != rb.Clusters[i] {
			t.Errorf("cluster %s built twice", ra.Clusters[i].GetName())
		}
	}
	// A gRPC view gets its own: its clusters and assignments differ.
	g := tc.proxy
	g.Type = GRPC
	rg, err := TranslateOutbound(in, g)
	if err != nil {
		t.Fatal(err)
	}
	if len(rg.Endpoints) > 0 && rg.Endpoints[0] == ra.Endpoints[0] {
		t.Error("a gRPC view shares a sidecar's assignment")
	}
}
