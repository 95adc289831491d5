package hcm

import (
	"fmt"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/route"
)

// Istio's peer metadata filter (istio.metadata_exchange, type
// io.istio.http.peer_metadata.Config, carried in a TypedStruct as istiod
// sends it to proxies without its compiled type): a sidecar learns the
// workload on the other side of each request from x-envoy-peer-metadata
// and tells its own, so both telemetry reports carry both workloads.
const (
	peerMetadataType   = "type.googleapis.com/io.istio.http.peer_metadata.Config"
	typedStructURL     = "type.googleapis.com/xds.type.v3.TypedStruct"
	udpaTypedStructURL = "type.googleapis.com/udpa.type.v1.TypedStruct"

	hdrPeerMetadata   = "x-envoy-peer-metadata"
	hdrPeerMetadataID = "x-envoy-peer-metadata-id"
)

// peerExchange is the compiled filter: which directions discover the
// peer's metadata and which propagate ours. Only the istio_headers
// method exists here (Istio's for sidecars).
type peerExchange struct {
	downstreamDiscovery, downstreamPropagation bool
	upstreamDiscovery, upstreamPropagation     bool
}

func peerExchangeKind() filterKind {
	return filterKind{
		build: func(_ string, cfg *anypb.Any) (httpFilter, error) { return parsePeerExchange(cfg) },
		perRoute: func(cfg *anypb.Any) (any, error) {
			return nil, fmt.Errorf("the peer metadata filter has no per-route configuration")
		},
		rules: fieldcheck.Rules{
			"xds.type.v3.TypedStruct":  {"type_url", "value"},
			"udpa.type.v1.TypedStruct": {"type_url", "value"},
		},
	}
}

func parsePeerExchange(cfg *anypb.Any) (*peerExchange, error) {
	var typeURL string
	var value *structpb.Struct
	switch cfg.GetTypeUrl() {
	case typedStructURL:
		ts := &xdstypev3.TypedStruct{}
		if err := cfg.UnmarshalTo(ts); err != nil {
			return nil, err
		}
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	case udpaTypedStructURL:
		ts := &udpatypev1.TypedStruct{}
		if err := cfg.UnmarshalTo(ts); err != nil {
			return nil, err
		}
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	}
	if typeURL != peerMetadataType {
		return nil, fmt.Errorf("typed_config.type_url: %q is not supported by amime in a TypedStruct (%s is)", typeURL, peerMetadataType)
	}
	px := &peerExchange{}
	for name, v := range value.GetFields() {
		var dst *bool
		switch name {
		case "downstream_discovery":
			dst = &px.downstreamDiscovery
		case "downstream_propagation":
			dst = &px.downstreamPropagation
		case "upstream_discovery":
			dst = &px.upstreamDiscovery
		case "upstream_propagation":
			dst = &px.upstreamPropagation
		case "shared_with_upstream", "additional_labels":
			continue // ambient/waypoint settings: nothing to share in a sidecar
		default:
			return nil, fmt.Errorf("typed_config.value.%s: not supported by amime", name)
		}
		for i, m := range v.GetListValue().GetValues() {
			for method := range m.GetStructValue().GetFields() {
				if method != "istio_headers" {
					return nil, fmt.Errorf("typed_config.value.%s[%d]: discovery method %q is not supported by amime (istio_headers is)", name, i, method)
				}
				*dst = true
			}
		}
	}
	return px, nil
}

// decode runs on the request: the downstream peer's metadata is read and
// removed (the application does not see it), ours is sent upstream.
func (px *peerExchange) decode(st *stream, req *request, _ responder, _ *route.Route) (bool, bool) {
	hdrs := &req.r.Headers
	if px.downstreamDiscovery {
		st.info.PeerMetadata = hdrs.Value(hdrPeerMetadata)
		hdrs.Del(hdrPeerMetadata)
		hdrs.Del(hdrPeerMetadataID)
	}
	if px.upstreamPropagation && st.h.env.PeerMetadataValue != "" {
		hdrs.Set(hdrPeerMetadataID, st.h.env.PeerMetadataID)
		hdrs.Set(hdrPeerMetadata, st.h.env.PeerMetadataValue)
	}
	st.peerX = px
	return false, true
}

// response runs on the upstream's response head: the upstream peer's
// metadata is read and removed, ours is sent downstream.
func (px *peerExchange) response(st *stream, h *header.List) {
	if px.upstreamDiscovery {
		if v := h.Value(hdrPeerMetadata); v != "" {
			st.info.PeerMetadata = v
		}
		h.Del(hdrPeerMetadata)
		h.Del(hdrPeerMetadataID)
	}
	if px.downstreamPropagation && st.h.env.PeerMetadataValue != "" {
		h.Set(hdrPeerMetadataID, st.h.env.PeerMetadataID)
		h.Set(hdrPeerMetadata, st.h.env.PeerMetadataValue)
	}
}
