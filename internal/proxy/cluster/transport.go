package cluster

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
)

// Options are what clusters need from the proxy.
type Options struct {
	// Secrets resolve SDS secrets of TLS transport sockets (nil: the proxy
	// has no workload identity).
	Secrets tlsctx.Secrets
}

// transportMatchKey is the endpoint metadata namespace
// transport_socket_matches look at.
const transportMatchKey = "envoy.transport_socket_match"

// transport is a cluster's compiled transport_socket and
// transport_socket_matches: nil clients mean plaintext.
type transport struct {
	def     *tlsctx.Client
	matches []transportMatch
}

type transportMatch struct {
	match  map[string]*structpb.Value
	client *tlsctx.Client
}

func compileSocket(ts *corev3.TransportSocket, secrets tlsctx.Secrets) (*tlsctx.Client, error) {
	if tlsctx.IsRawBuffer(ts) {
		return nil, nil
	}
	if ts.GetTypedConfig().GetTypeUrl() != tlsctx.UpstreamTypeURL {
		return nil, fmt.Errorf("typed_config: type %q is not supported by amime", ts.GetTypedConfig().GetTypeUrl())
	}
	return tlsctx.CompileUpstream(ts.GetTypedConfig(), secrets)
}

func compileTransport(cfg *clusterv3.Cluster, secrets tlsctx.Secrets) (*transport, error) {
	t := &transport{}
	var err error
	if t.def, err = compileSocket(cfg.GetTransportSocket(), secrets); err != nil {
		return nil, fmt.Errorf("transport_socket.%w", err)
	}
	for i, m := range cfg.GetTransportSocketMatches() {
		c, err := compileSocket(m.GetTransportSocket(), secrets)
		if err != nil {
			return nil, fmt.Errorf("transport_socket_matches[%d].transport_socket.%w", i, err)
		}
		t.matches = append(t.matches, transportMatch{match: m.GetMatch().GetFields(), client: c})
	}
	return t, nil
}

// forEndpoint picks the transport of an endpoint as Envoy does: the first
// match whose every key/value the endpoint's
// envoy.transport_socket_match metadata holds, else transport_socket.
func (t *transport) forEndpoint(md *corev3.Metadata) *tlsctx.Client {
	if t == nil {
		return nil
	}
	if len(t.matches) > 0 {
		have := md.GetFilterMetadata()[transportMatchKey].GetFields()
		for _, m := range t.matches {
			if subset(m.match, have) {
				return m.client
			}
		}
	}
	return t.def
}

func subset(want, have map[string]*structpb.Value) bool {
	for k, v := range want {
		if !proto.Equal(v, have[k]) {
			return false
		}
	}
	return true
}
