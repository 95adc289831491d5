package xdsclient

import (
	"bytes"
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resource types the client understands.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

	// resourceWrapperType is envoy.service.discovery.v3.Resource, which a
	// server may use in SotW responses to carry TTLs or heartbeats.
	resourceWrapperType = "type.googleapis.com/envoy.service.discovery.v3.Resource"

	// wildcardName is the explicit wildcard subscription name.
	wildcardName = "*"
)

// nameFunc decodes serialized resource bytes and returns the resource name.
type nameFunc func(b []byte) (string, error)

func namer[T proto.Message](newT func() T, name func(T) string) nameFunc {
	return func(b []byte) (string, error) {
		m := newT()
		if err := proto.Unmarshal(b, m); err != nil {
			return "", err
		}
		return name(m), nil
	}
}

// namers maps each supported type URL to its name decoder. Decoding the full
// message (not just peeking at field 1) also rejects malformed payloads early.
var namers = map[string]nameFunc{
	ListenerType: namer(func() *listenerv3.Listener { return new(listenerv3.Listener) },
		(*listenerv3.Listener).GetName),
	RouteType: namer(func() *routev3.RouteConfiguration { return new(routev3.RouteConfiguration) },
		(*routev3.RouteConfiguration).GetName),
	ClusterType: namer(func() *clusterv3.Cluster { return new(clusterv3.Cluster) },
		(*clusterv3.Cluster).GetName),
	EndpointType: namer(func() *endpointv3.ClusterLoadAssignment { return new(endpointv3.ClusterLoadAssignment) },
		(*endpointv3.ClusterLoadAssignment).GetClusterName),
	SecretType: namer(func() *tlsv3.Secret { return new(tlsv3.Secret) },
		(*tlsv3.Secret).GetName),
}

// knownType reports whether the client can decode resources of typeURL.
func knownType(typeURL string) bool {
	_, ok := namers[typeURL]
	return ok
}

// fullState reports whether a SotW response of typeURL carries the complete
// set (absent names are deleted), which the protocol mandates only for LDS and CDS.
func fullState(typeURL string) bool {
	return typeURL == ListenerType || typeURL == ClusterType
}

// entry is one decoded resource of a response.
type entry struct {
	res     *anypb.Any // unwrapped resource; nil for a TTL heartbeat
	version string     // per-resource version (delta, or a SotW Resource wrapper)
}

// decodeOne validates a resource against the response type and returns its name.
// wrapperName, when non-empty, is the name carried by a Resource wrapper.
func decodeOne(typeURL string, res *anypb.Any, wrapperName string) (string, error) {
	if res.GetTypeUrl() != typeURL {
		return "", fmt.Errorf("resource type %q does not match response type %q", res.GetTypeUrl(), typeURL)
	}
	name, err := namers[typeURL](res.GetValue())
	if err != nil {
		return "", fmt.Errorf("decoding %s: %w", typeURL, err)
	}
	if name == "" {
		return "", errors.New("resource has an empty name")
	}
	if wrapperName != "" && wrapperName != name {
		return "", fmt.Errorf("wrapper name %q differs from resource name %q", wrapperName, name)
	}
	return name, nil
}

// decodeSotW validates the resources of a SotW response and keys them by name.
func decodeSotW(typeURL string, resources []*anypb.Any) (map[string]entry, error) {
	if !knownType(typeURL) {
		return nil, fmt.Errorf("unknown type URL %q", typeURL)
	}
	out := make(map[string]entry, len(resources))
	for i, a := range resources {
		name, e, err := decodeSotWResource(typeURL, a)
		if err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("duplicate resource name %q", name)
		}
		out[name] = e
	}
	return out, nil
}

func decodeSotWResource(typeURL string, a *anypb.Any) (string, entry, error) {
	if a.GetTypeUrl() != resourceWrapperType {
		name, err := decodeOne(typeURL, a, "")
		return name, entry{res: a}, err
	}
	w := new(discoveryv3.Resource)
	if err := a.UnmarshalTo(w); err != nil {
		return "", entry{}, fmt.Errorf("decoding Resource wrapper: %w", err)
	}
	return decodeWrapped(typeURL, w)
}

// decodeWrapped handles a discovery Resource (delta resources, SotW wrappers).
func decodeWrapped(typeURL string, w *discoveryv3.Resource) (string, entry, error) {
	if w.GetResource() == nil {
		// A heartbeat only refreshes a TTL; it must still name the resource.
		if w.GetName() == "" {
			return "", entry{}, errors.New("heartbeat resource has an empty name")
		}
		return w.GetName(), entry{version: w.GetVersion()}, nil
	}
	name, err := decodeOne(typeURL, w.GetResource(), w.GetName())
	return name, entry{res: w.GetResource(), version: w.GetVersion()}, err
}

// decodeDelta validates the resources and removals of a delta response.
func decodeDelta(typeURL string, resources []*discoveryv3.Resource, removed []string) (map[string]entry, error) {
	if !knownType(typeURL) {
		return nil, fmt.Errorf("unknown type URL %q", typeURL)
	}
	out := make(map[string]entry, len(resources))
	for i, w := range resources {
		name, e, err := decodeWrapped(typeURL, w)
		if err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("duplicate resource name %q", name)
		}
		out[name] = e
	}
	for _, name := range removed {
		if _, both := out[name]; both {
			return nil, fmt.Errorf("resource %q is both updated and removed", name)
		}
	}
	return out, nil
}

// sameSet reports whether two resource sets are byte-for-byte identical, so
// that an unchanged resend (e.g. after a reconnect) does not wake the handler.
// A false "changed" only costs a redundant handler call.
func sameSet(a, b map[string]*anypb.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok || x.GetTypeUrl() != y.GetTypeUrl() || !bytes.Equal(x.GetValue(), y.GetValue()) {
			return false
		}
	}
	return true
}
