package controlplane

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/registry"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// Node metadata keys. The first ones are Istio's (pilot-agent sends them),
// so an Envoy bootstrapped the Istio way is understood; the AMIME_ ones
// describe what Istio learns from Kubernetes and amime's proxy says itself
// outside it.
const (
	MetaNamespace      = "NAMESPACE"
	MetaLabels         = "LABELS"
	MetaInstanceIPs    = "INSTANCE_IPS"
	MetaServiceAccount = "SERVICE_ACCOUNT"
	// MetaWorkloadName is the workload's name (a Deployment's, in
	// Kubernetes): the source_workload/destination_workload of metrics.
	MetaWorkloadName = "WORKLOAD_NAME"
	// MetaPrometheusAddr is where the proxy serves /stats/prometheus, for
	// the console's scraper.
	MetaPrometheusAddr = "AMIME_PROMETHEUS_ADDR"
	// MetaGenerator "grpc" marks a proxyless gRPC client (grpc-go's xds
	// resolver), as Istio's bootstrap for gRPC sets it.
	MetaGenerator = "GENERATOR"
	// MetaInbound lists the workload's ports: a list of structs with name,
	// protocol, port, listenPort, targetPort.
	MetaInbound = "AMIME_INBOUND"
	// MetaHTTPProxy is the ip:port of the outbound listener applications
	// use as HTTP_PROXY.
	MetaHTTPProxy = "AMIME_HTTP_PROXY"
	// MetaBindIP gets one outbound listener per service port.
	MetaBindIP = "AMIME_BIND_IP"
	// MetaTLSMode "istio" says the proxy holds a workload certificate
	// (served to it by its agent as SDS "default" and "ROOTCA"): its
	// inbound side speaks mTLS, and it originates mTLS to endpoints
	// labelled TLSModeLabel=istio.
	MetaTLSMode = "AMIME_TLS_MODE"
	// TLSModeIstio is the value of MetaTLSMode and TLSModeLabel.
	TLSModeIstio = "istio"
	// TLSModeLabel is Istio's workload label for "has a sidecar".
	TLSModeLabel = "security.istio.io/tlsMode"
)

// ProxyFromNode reads the proxy's description from its xDS node: the type
// from Istio's node id form (sidecar~… / router~…; amime's proxy uses its
// --mode, gateway meaning router) unless metadata GENERATOR is "grpc"
// (proxyless gRPC, whose id Istio also starts with sidecar~), the rest
// from metadata.
func ProxyFromNode(node *corev3.Node, mesh translate.Mesh) (translate.Proxy, error) {
	p := translate.Proxy{ID: node.GetId(), Namespace: "default", Mesh: mesh}
	md := node.GetMetadata().GetFields()
	switch kind, _, _ := strings.Cut(node.GetId(), "~"); {
	case md[MetaGenerator].GetStringValue() == "grpc":
		p.Type = translate.GRPC
	case kind == "router" || kind == "gateway":
		p.Type = translate.Router
	default:
		p.Type = translate.Sidecar
	}
	if v := md[MetaNamespace].GetStringValue(); v != "" {
		p.Namespace = v
	}
	if l := md[MetaLabels].GetStructValue(); l != nil {
		p.Labels = map[string]string{}
		for k, v := range l.GetFields() {
			p.Labels[k] = v.GetStringValue()
		}
	}
	for _, ip := range strings.Split(md[MetaInstanceIPs].GetStringValue(), ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			p.IPs = append(p.IPs, ip)
		}
	}
	p.ServiceAccount = md[MetaServiceAccount].GetStringValue()
	p.Outbound.HTTPProxy = md[MetaHTTPProxy].GetStringValue()
	p.Outbound.BindIP = md[MetaBindIP].GetStringValue()
	p.MTLS = md[MetaTLSMode].GetStringValue() == TLSModeIstio
	for i, v := range md[MetaInbound].GetListValue().GetValues() {
		f := v.GetStructValue().GetFields()
		ip := translate.InboundPort{
			Name:       f["name"].GetStringValue(),
			Protocol:   registry.ParseProtocol(f["protocol"].GetStringValue()),
			Port:       uint32(f["port"].GetNumberValue()),
			ListenPort: uint32(f["listenPort"].GetNumberValue()),
			TargetPort: uint32(f["targetPort"].GetNumberValue()),
		}
		if ip.Port == 0 || ip.Port > 65535 {
			return p, fmt.Errorf("node %s: metadata %s[%d].port: want 1..65535", node.GetId(), MetaInbound, i)
		}
		p.Inbound = append(p.Inbound, ip)
	}
	return p, nil
}

// InboundMetadata encodes inbound ports for MetaInbound.
func InboundMetadata(ports []translate.InboundPort) *structpb.Value {
	vals := make([]*structpb.Value, 0, len(ports))
	for _, p := range ports {
		vals = append(vals, structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"name":       structpb.NewStringValue(p.Name),
			"protocol":   structpb.NewStringValue(string(p.Protocol)),
			"port":       structpb.NewNumberValue(float64(p.Port)),
			"listenPort": structpb.NewNumberValue(float64(p.ListenPort)),
			"targetPort": structpb.NewNumberValue(float64(p.TargetPort)),
		}}))
	}
	return structpb.NewListValue(&structpb.ListValue{Values: vals})
}
