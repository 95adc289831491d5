package xdsclient

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// scriptServer is a real gRPC ADS server whose responses the test writes by
// hand, to produce what a well-behaved control plane never sends.
type scriptServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	addr      string
	sotwReqs  chan *discoveryv3.DiscoveryRequest
	deltaReqs chan *discoveryv3.DeltaDiscoveryRequest
	sotwOut   chan *discoveryv3.DiscoveryResponse
	deltaOut  chan *discoveryv3.DeltaDiscoveryResponse
}

func startScriptServer(t *testing.T) *scriptServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{
		addr:      lis.Addr().String(),
		sotwReqs:  make(chan *discoveryv3.DiscoveryRequest, 100),
		deltaReqs: make(chan *discoveryv3.DeltaDiscoveryRequest, 100),
		sotwOut:   make(chan *discoveryv3.DiscoveryResponse),
		deltaOut:  make(chan *discoveryv3.DeltaDiscoveryResponse),
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return s
}

// pump forwards requests to reqs and responses from out until the stream ends.
func pump[Req, Resp any](ctx interface{ Done() <-chan struct{} }, recv func() (Req, error), send func(Resp) error, reqs chan<- Req, out <-chan Resp) error {
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				errc <- err
				return
			}
			reqs <- req
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case resp := <-out:
			if err := send(resp); err != nil {
				return err
			}
		}
	}
}

func (s *scriptServer) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return pump(st.Context(), st.Recv, st.Send, s.sotwReqs, s.sotwOut)
}

func (s *scriptServer) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return pump(st.Context(), st.Recv, st.Send, s.deltaReqs, s.deltaOut)
}

func next[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a request")
		panic("unreachable")
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func listener(name string) *anypb.Any { return mustAny(&listenerv3.Listener{Name: name}) }

func wrap(name string, a *anypb.Any) *discoveryv3.Resource {
	return &discoveryv3.Resource{Name: name, Version: "rv-" + name, Resource: a}
}

// TestInvalidResponsesNACKed: every malformed response is NACKed with
// INVALID_ARGUMENT, the response nonce and (SotW) the previous version, and
// the handler keeps its previous set without being called.
func TestInvalidResponsesNACKed(t *testing.T) {
	cluster := mustAny(makeCluster("C1"))
	tests := []struct {
		name    string
		typeURL string                  // response type; ListenerType if empty
		sotw    []*anypb.Any            // SotW resources
		delta   []*discoveryv3.Resource // delta resources
		removed []string                // delta removed_resources
		wantMsg string
	}{
		{
			name:    "resource type mismatch",
			sotw:    []*anypb.Any{cluster},
			delta:   []*discoveryv3.Resource{wrap("C1", cluster)},
			wantMsg: "does not match response type",
		},
		{
			name:    "duplicate names",
			sotw:    []*anypb.Any{listener("L2"), listener("L2")},
			delta:   []*discoveryv3.Resource{wrap("L2", listener("L2")), wrap("L2", listener("L2"))},
			wantMsg: `duplicate resource name "L2"`,
		},
		{
			name:    "unknown type URL",
			typeURL: "type.googleapis.com/example.Unknown",
			wantMsg: "unknown type",
		},
		{
			name:    "known but unsubscribed type",
			typeURL: SecretType,
			wantMsg: "unsubscribed type",
		},
		{
			name:    "undecodable resource",
			sotw:    []*anypb.Any{{TypeUrl: ListenerType, Value: []byte{0xff, 0xff, 0xff}}},
			delta:   []*discoveryv3.Resource{wrap("L2", &anypb.Any{TypeUrl: ListenerType, Value: []byte{0xff, 0xff, 0xff}})},
			wantMsg: "decoding",
		},
		{
			name:    "empty name",
			sotw:    []*anypb.Any{listener("")},
			delta:   []*discoveryv3.Resource{wrap("", listener(""))},
			wantMsg: "empty name",
		},
		{
			name:    "wrapped type mismatch",
			sotw:    []*anypb.Any{mustAny(wrap("C1", cluster))},
			delta:   []*discoveryv3.Resource{wrap("C1", cluster)},
			wantMsg: "does not match response type",
		},
		{
			name:    "wrapper name differs",
			sotw:    []*anypb.Any{mustAny(wrap("X", listener("L2")))},
			delta:   []*discoveryv3.Resource{wrap("X", listener("L2"))},
			wantMsg: "differs",
		},
		{
			name:    "updated and removed",
			sotw:    []*anypb.Any{listener("L2"), listener("L2")}, // SotW has no removals; reuse duplicates
			delta:   []*discoveryv3.Resource{wrap("L2", listener("L2"))},
			removed: []string{"L2"},
			wantMsg: "L2",
		},
	}
	for _, m := range modes {
		for _, tc := range tests {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				checkGoroutines(t)
				srv := startScriptServer(t)
				h := newRecHandler()
				c := newTestClient(t, srv.addr, m.delta, h)
				c.Wildcard(ListenerType)
				runClient(t, c)
				typeURL := tc.typeURL
				if typeURL == "" {
					typeURL = ListenerType
				}

				if m.delta {
					first := next(t, srv.deltaReqs)
					if first.GetNode().GetId() != testNodeID || first.GetTypeUrl() != ListenerType {
						t.Fatalf("first request = %v", first)
					}
					srv.deltaOut <- &discoveryv3.DeltaDiscoveryResponse{
						TypeUrl: ListenerType, SystemVersionInfo: "v1", Nonce: "n1",
						Resources: []*discoveryv3.Resource{wrap("L1", listener("L1"))},
					}
					if ack := next(t, srv.deltaReqs); ack.GetResponseNonce() != "n1" || ack.GetErrorDetail() != nil {
						t.Fatalf("want ACK of n1, got %v", ack)
					}
					srv.deltaOut <- &discoveryv3.DeltaDiscoveryResponse{
						TypeUrl: typeURL, SystemVersionInfo: "v2", Nonce: "n2", Resources: tc.delta, RemovedResources: tc.removed,
					}
					nack := next(t, srv.deltaReqs)
					checkNACK(t, nack.GetTypeUrl(), nack.GetResponseNonce(), nack.GetErrorDetail().GetCode(), nack.GetErrorDetail().GetMessage(), typeURL, tc.wantMsg)
				} else {
					first := next(t, srv.sotwReqs)
					if first.GetNode().GetId() != testNodeID || first.GetTypeUrl() != ListenerType {
						t.Fatalf("first request = %v", first)
					}
					srv.sotwOut <- &discoveryv3.DiscoveryResponse{
						TypeUrl: ListenerType, VersionInfo: "v1", Nonce: "n1", Resources: []*anypb.Any{listener("L1")},
					}
					if ack := next(t, srv.sotwReqs); ack.GetResponseNonce() != "n1" || ack.GetVersionInfo() != "v1" || ack.GetErrorDetail() != nil {
						t.Fatalf("want ACK of v1/n1, got %v", ack)
					}
					srv.sotwOut <- &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: "v2", Nonce: "n2", Resources: tc.sotw}
					nack := next(t, srv.sotwReqs)
					checkNACK(t, nack.GetTypeUrl(), nack.GetResponseNonce(), nack.GetErrorDetail().GetCode(), nack.GetErrorDetail().GetMessage(), typeURL, tc.wantMsg)
					if typeURL == ListenerType && nack.GetVersionInfo() != "v1" {
						t.Errorf("NACK version_info = %q, want previous v1", nack.GetVersionInfo())
					}
				}

				if got := h.history(); len(got) != 1 || !slices.Equal(got[0].names, []string{"L1"}) {
					t.Errorf("handler updates = %v, want only the accepted [L1]", got)
				}
				st := c.Status().Types[ListenerType]
				if st.Version != "v1" || st.Resources != 1 {
					t.Errorf("listener status = %+v, want v1 with 1 resource", st)
				}
				if typeURL == ListenerType && (!st.NACKed || !strings.Contains(st.LastNACK, tc.wantMsg)) {
					t.Errorf("listener status = %+v, want NACKed with %q", st, tc.wantMsg)
				}
			})
		}
	}
}

func checkNACK(t *testing.T, typeURL, nonce string, code int32, msg, wantType, wantMsg string) {
	t.Helper()
	if typeURL != wantType || nonce != "n2" || code != int32(codes.InvalidArgument) || !strings.Contains(msg, wantMsg) {
		t.Errorf("NACK = type %q nonce %q code %d msg %q; want type %q nonce n2 InvalidArgument containing %q",
			typeURL, nonce, code, msg, wantType, wantMsg)
	}
}

// TestSotWAcceptedShapes covers responses that are valid but unusual:
// Resource wrappers, TTL heartbeats and resources nobody asked for.
func TestSotWAcceptedShapes(t *testing.T) {
	tests := []struct {
		name      string
		typeURL   string
		watch     []string // nil: wildcard
		responses [][]*anypb.Any
		want      []string
		check     func(t *testing.T, h *recHandler)
	}{
		{
			name:      "resource wrapper unwrapped",
			typeURL:   ListenerType,
			responses: [][]*anypb.Any{{mustAny(wrap("L1", listener("L1")))}},
			want:      []string{"L1"},
			check: func(t *testing.T, h *recHandler) {
				if tu := h.get(ListenerType, "L1").GetTypeUrl(); tu != ListenerType {
					t.Errorf("handler got type %q, want the unwrapped %q", tu, ListenerType)
				}
			},
		},
		{
			name:    "heartbeat keeps resource",
			typeURL: ListenerType,
			responses: [][]*anypb.Any{
				{listener("L1"), listener("L2")},
				{mustAny(&discoveryv3.Resource{Name: "L1"}), listener("L2")},
			},
			want: []string{"L1", "L2"},
		},
		{
			name:      "unrequested names ignored",
			typeURL:   RouteType,
			watch:     []string{"R1"},
			responses: [][]*anypb.Any{{mustAny(makeRoute("R1", "C1")), mustAny(makeRoute("R9", "C9"))}},
			want:      []string{"R1"},
		},
		{
			name:    "RDS merged by name",
			typeURL: RouteType,
			watch:   []string{"R1", "R2"},
			responses: [][]*anypb.Any{
				{mustAny(makeRoute("R1", "C1"))},
				{mustAny(makeRoute("R2", "C2"))},
				{},
			},
			want: []string{"R1", "R2"},
		},
		{
			name:    "LDS replaced",
			typeURL: ListenerType,
			responses: [][]*anypb.Any{
				{listener("L1"), listener("L2")},
				{listener("L2")},
			},
			want: []string{"L2"},
		},
		{
			name:    "LDS empty response clears",
			typeURL: ListenerType,
			responses: [][]*anypb.Any{
				{listener("L1")},
				{},
			},
			want: []string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			srv := startScriptServer(t)
			h := newRecHandler()
			c := newTestClient(t, srv.addr, false, h)
			if tc.watch == nil {
				c.Wildcard(tc.typeURL)
			} else {
				c.Watch(tc.typeURL, tc.watch)
			}
			runClient(t, c)
			req := next(t, srv.sotwReqs)
			if !slices.Equal(req.GetResourceNames(), tc.watch) {
				t.Fatalf("request names = %v, want %v", req.GetResourceNames(), tc.watch)
			}
			for i, res := range tc.responses {
				nonce := string(rune('a' + i))
				srv.sotwOut <- &discoveryv3.DiscoveryResponse{TypeUrl: tc.typeURL, VersionInfo: nonce, Nonce: nonce, Resources: res}
				if ack := next(t, srv.sotwReqs); ack.GetErrorDetail() != nil || ack.GetResponseNonce() != nonce || ack.GetVersionInfo() != nonce {
					t.Fatalf("response %d: want ACK, got %v", i, ack)
				}
			}
			if got := h.names(tc.typeURL); !slices.Equal(got, tc.want) {
				t.Errorf("handler set = %v, want %v", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, h)
			}
		})
	}
}
