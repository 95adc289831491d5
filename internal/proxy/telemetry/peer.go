package telemetry

import (
	"encoding/base64"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's HTTP peer metadata exchange (istio.metadata_exchange): a sidecar
// sends its workload's node metadata to the peer, the client on the
// request and the server on the response, so both reporters know both
// sides: source_* on the server, destination_workload/app/version on the
// client.
const (
	// HeaderPeerMetadata is base64 of a serialized google.protobuf.Struct
	// holding the exchanged node metadata keys.
	HeaderPeerMetadata = "x-envoy-peer-metadata"
	// HeaderPeerMetadataID is the peer's node id.
	HeaderPeerMetadataID = "x-envoy-peer-metadata-id"
)

// exchangedKeys are the node metadata keys Istio's sidecars exchange.
var exchangedKeys = []string{"NAME", "NAMESPACE", "LABELS", "OWNER", "PLATFORM_METADATA", "WORKLOAD_NAME",
	"MESH_ID", "SERVICE_ACCOUNT", "CLUSTER_ID", "APP_CONTAINERS", "INSTANCE_IPS"}

// PeerMetadata is this proxy's side of the exchange: the header values it
// sends (computed once) and a cache of the peers it has heard of.
type PeerMetadata struct {
	value, id string

	// peers is copy-on-write: readers never lock; a new peer value
	// (a new workload) copies it.
	peers atomic.Pointer[map[string]*Workload]
	mu    sync.Mutex
}

// maxPeers bounds the cache: past it, unknown values are decoded each
// time, which costs but does not grow memory (the headers come from
// peers, possibly hostile).
const maxPeers = 4096

// NewPeerMetadata prepares the exchange for a proxy with node n.
func NewPeerMetadata(n *corev3.Node) *PeerMetadata {
	st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, k := range exchangedKeys {
		if v, ok := n.GetMetadata().GetFields()[k]; ok {
			st.Fields[k] = v
		}
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	p := &PeerMetadata{value: base64.StdEncoding.EncodeToString(b), id: n.GetId()}
	empty := map[string]*Workload{}
	p.peers.Store(&empty)
	return p
}

// Value and ID are the header values this proxy sends.
func (p *PeerMetadata) Value() string { return p.value }

// ID is the value of x-envoy-peer-metadata-id this proxy sends.
func (p *PeerMetadata) ID() string { return p.id }

// Peer decodes a received x-envoy-peer-metadata value; nil when it is
// malformed. value may point into a reused buffer: it is copied if kept.
func (p *PeerMetadata) Peer(value string) *Workload {
	if value == "" {
		return nil
	}
	if w, ok := (*p.peers.Load())[value]; ok {
		return w
	}
	w := decodePeer(value)
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := *p.peers.Load()
	if len(cur) >= maxPeers {
		return w
	}
	next := make(map[string]*Workload, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[strings.Clone(value)] = w
	p.peers.Store(&next)
	return w
}

func decodePeer(value string) *Workload {
	b, err := base64.StdEncoding.DecodeString(value)
	if err != nil {
		return nil
	}
	st := &structpb.Struct{}
	if err := proto.Unmarshal(b, st); err != nil {
		return nil
	}
	if st.GetFields()["NAMESPACE"].GetStringValue() == "" && st.GetFields()["WORKLOAD_NAME"].GetStringValue() == "" {
		return nil
	}
	w := WorkloadFromNode(&corev3.Node{Metadata: st})
	return &w
}
