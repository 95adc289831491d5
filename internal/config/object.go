// Package config holds Istio configuration as amime stores it: objects of
// the networking.istio.io and security.istio.io kinds, each a
// Kubernetes-shaped envelope (apiVersion, kind, metadata) around the
// unchanged istio.io/api spec message.
package config

import (
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// Meta is the part of Kubernetes' ObjectMeta amime keeps.
type Meta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp time.Time         `json:"creationTimestamp,omitempty"`
}

// Object is one Istio resource.
type Object struct {
	// APIVersion is group/version as the user wrote it (e.g.
	// networking.istio.io/v1beta1); the spec type is the same for every
	// version of a kind.
	APIVersion string
	Kind       string
	Meta       Meta
	// Spec is the istio.io/api message for Kind, e.g.
	// *networking.VirtualService.
	Spec proto.Message
}

// Key identifies an object within the store.
type Key struct {
	Kind      string
	Namespace string
	Name      string
}

// Key returns the object's key.
func (o *Object) Key() Key {
	return Key{Kind: o.Kind, Namespace: o.Meta.Namespace, Name: o.Meta.Name}
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Kind + " " + k.Name
	}
	return k.Kind + " " + k.Namespace + "/" + k.Name
}

// KindInfo describes a kind amime serves.
type KindInfo struct {
	Kind     string
	Group    string
	Plural   string   // the REST resource name, e.g. virtualservices
	Versions []string // accepted versions, newest last
	New      func() proto.Message
}

// Groups.
const (
	NetworkingGroup = "networking.istio.io"
	SecurityGroup   = "security.istio.io"
	TelemetryGroup  = "telemetry.istio.io"
)

// Kind names.
const (
	VirtualService        = "VirtualService"
	DestinationRule       = "DestinationRule"
	Gateway               = "Gateway"
	ServiceEntry          = "ServiceEntry"
	WorkloadEntry         = "WorkloadEntry"
	WorkloadGroup         = "WorkloadGroup"
	Sidecar               = "Sidecar"
	PeerAuthentication    = "PeerAuthentication"
	RequestAuthentication = "RequestAuthentication"
	AuthorizationPolicy   = "AuthorizationPolicy"
	Telemetry             = "Telemetry"
)

var networkingVersions = []string{"v1alpha3", "v1beta1", "v1"}

// kinds is read-only after package initialization.
var kinds = []KindInfo{
	{VirtualService, NetworkingGroup, "virtualservices", networkingVersions, func() proto.Message { return &networking.VirtualService{} }},
	{DestinationRule, NetworkingGroup, "destinationrules", networkingVersions, func() proto.Message { return &networking.DestinationRule{} }},
	{Gateway, NetworkingGroup, "gateways", networkingVersions, func() proto.Message { return &networking.Gateway{} }},
	{ServiceEntry, NetworkingGroup, "serviceentries", networkingVersions, func() proto.Message { return &networking.ServiceEntry{} }},
	{WorkloadEntry, NetworkingGroup, "workloadentries", networkingVersions, func() proto.Message { return &networking.WorkloadEntry{} }},
	{WorkloadGroup, NetworkingGroup, "workloadgroups", networkingVersions, func() proto.Message { return &networking.WorkloadGroup{} }},
	{Sidecar, NetworkingGroup, "sidecars", networkingVersions, func() proto.Message { return &networking.Sidecar{} }},
	{PeerAuthentication, SecurityGroup, "peerauthentications", []string{"v1beta1", "v1"}, func() proto.Message { return &security.PeerAuthentication{} }},
	{RequestAuthentication, SecurityGroup, "requestauthentications", []string{"v1beta1", "v1"}, func() proto.Message { return &security.RequestAuthentication{} }},
	{AuthorizationPolicy, SecurityGroup, "authorizationpolicies", []string{"v1beta1", "v1"}, func() proto.Message { return &security.AuthorizationPolicy{} }},
	{Telemetry, TelemetryGroup, "telemetries", []string{"v1alpha1", "v1"}, func() proto.Message { return &telemetry.Telemetry{} }},
}

// Kinds returns every kind amime serves.
func Kinds() []KindInfo { return kinds }

// LookupKind finds a kind by its name, plural or short name, case-insensitively
// (as kubectl does: "vs", "virtualservice", "virtualservices").
func LookupKind(name string) (KindInfo, bool) {
	for _, k := range kinds {
		if equalFold(name, k.Kind) || equalFold(name, k.Plural) || equalFold(name, shortName(k.Kind)) {
			return k, true
		}
	}
	return KindInfo{}, false
}

func shortName(kind string) string {
	switch kind {
	case VirtualService:
		return "vs"
	case DestinationRule:
		return "dr"
	case Gateway:
		return "gw"
	case ServiceEntry:
		return "se"
	case WorkloadEntry:
		return "we"
	case WorkloadGroup:
		return "wg"
	case PeerAuthentication:
		return "pa"
	case RequestAuthentication:
		return "ra"
	case AuthorizationPolicy:
		return "ap"
	case Telemetry:
		return "telemetry"
	}
	return ""
}

func equalFold(a, b string) bool {
	if len(a) != len(b) || b == "" {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// DeepCopy returns a copy of o that shares nothing with it. Objects handed
// out by a Store are shared and read-only: copy before changing one.
func (o *Object) DeepCopy() *Object {
	if o == nil {
		return nil
	}
	c := *o
	c.Meta.Labels = cloneMap(o.Meta.Labels)
	c.Meta.Annotations = cloneMap(o.Meta.Annotations)
	if o.Spec != nil {
		c.Spec = proto.Clone(o.Spec)
	}
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
