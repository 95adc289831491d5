package main

import (
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/apiclient"
	"github.com/amime-mesh/amime/internal/controlplane"
	"github.com/amime-mesh/amime/internal/register"
	"github.com/amime-mesh/amime/internal/registry"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// nodeMeta is what a proxy tells the control plane about its workload
// outside Kubernetes (where Istio would read it from the pod).
type nodeMeta struct {
	namespace      string
	labels         map[string]string
	instanceIPs    []string
	serviceAccount string
	inbound        []string
	httpProxy      string
	bindIP         string
	// mtls: the proxy holds a workload certificate (it has a join token).
	mtls bool
	// workloadName is the workload's name in telemetry (a Deployment's);
	// prometheusAddr is copied from --prometheus-addr.
	workloadName, prometheusAddr string
}

func (m *nodeMeta) register(f *pflag.FlagSet) {
	f.StringVarP(&m.namespace, "namespace", "n", "default", "the workload's namespace")
	f.StringToStringVar(&m.labels, "labels", nil, "the workload's labels, e.g. app=reviews,version=v1")
	f.StringSliceVar(&m.instanceIPs, "instance-ip", nil, "the workload's IP address(es); inbound listeners bind the first")
	f.StringVar(&m.serviceAccount, "service-account", "", "the workload's service account (its identity)")
	f.StringArrayVar(&m.inbound, "inbound", nil, "a port the workload serves: NAME:PROTOCOL:PORT[:LISTEN_PORT[:APP_PORT]] (repeatable), e.g. http:HTTP:8080:15081:9080")
	f.StringVar(&m.httpProxy, "http-proxy-addr", "", "ip:port of the outbound listener the application uses as HTTP_PROXY, e.g. 127.0.0.1:15001")
	f.StringVar(&m.workloadName, "workload", "", "the workload's name in metrics (a Deployment's name, e.g. reviews-v1); default: from the node id, else APP-VERSION")
	f.StringVar(&m.bindIP, "outbound-bind-ip", "", "IP for one outbound listener per service port, e.g. 127.0.0.2")
}

// parseInbound reads NAME:PROTOCOL:PORT[:LISTEN_PORT[:APP_PORT]].
func parseInbound(s string) (translate.InboundPort, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 3 || len(parts) > 5 {
		return translate.InboundPort{}, fmt.Errorf("--inbound %q: want NAME:PROTOCOL:PORT[:LISTEN_PORT[:APP_PORT]]", s)
	}
	nums := make([]uint32, 3)
	for i, p := range parts[2:] {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return translate.InboundPort{}, fmt.Errorf("--inbound %q: %q is not a port", s, p)
		}
		nums[i] = uint32(n)
	}
	return translate.InboundPort{Name: parts[0], Protocol: registry.ParseProtocol(parts[1]), Port: nums[0], ListenPort: nums[1], TargetPort: nums[2]}, nil
}

func (m *nodeMeta) apply(n *corev3.Node) error {
	if n.Metadata == nil {
		n.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	if n.Metadata.Fields == nil {
		n.Metadata.Fields = map[string]*structpb.Value{}
	}
	f := n.Metadata.Fields
	f[controlplane.MetaNamespace] = structpb.NewStringValue(m.namespace)
	if len(m.labels) > 0 {
		l := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, v := range m.labels {
			l.Fields[k] = structpb.NewStringValue(v)
		}
		f[controlplane.MetaLabels] = structpb.NewStructValue(l)
	}
	if len(m.instanceIPs) > 0 {
		f[controlplane.MetaInstanceIPs] = structpb.NewStringValue(strings.Join(m.instanceIPs, ","))
	}
	if m.serviceAccount != "" {
		f[controlplane.MetaServiceAccount] = structpb.NewStringValue(m.serviceAccount)
	}
	if m.httpProxy != "" {
		f[controlplane.MetaHTTPProxy] = structpb.NewStringValue(m.httpProxy)
	}
	if m.bindIP != "" {
		f[controlplane.MetaBindIP] = structpb.NewStringValue(m.bindIP)
	}
	if m.mtls {
		f[controlplane.MetaTLSMode] = structpb.NewStringValue(controlplane.TLSModeIstio)
	}
	if m.workloadName != "" {
		f[controlplane.MetaWorkloadName] = structpb.NewStringValue(m.workloadName)
	}
	if m.prometheusAddr != "" {
		f[controlplane.MetaPrometheusAddr] = structpb.NewStringValue(m.prometheusAddr)
	}
	if n.Cluster == "" {
		// Istio's node cluster, the service name spans are reported under:
		// canonical service "." namespace.
		name := firstNonEmpty(m.labels["service.istio.io/canonical-name"], m.labels["app.kubernetes.io/name"], m.labels["app"], m.workloadName)
		if name != "" {
			n.Cluster = name + "." + m.namespace
		}
	}
	if len(m.inbound) > 0 {
		var ports []translate.InboundPort
		for _, s := range m.inbound {
			p, err := parseInbound(s)
			if err != nil {
				return err
			}
			ports = append(ports, p)
		}
		f[controlplane.MetaInbound] = controlplane.InboundMetadata(ports)
	}
	return nil
}

// registration describes the WorkloadEntry --register keeps alive.
func (m *nodeMeta) registration(name string, c *apiclient.Client) (register.Options, error) {
	if len(m.inbound) == 0 {
		return register.Options{}, fmt.Errorf("--register needs at least one --inbound port")
	}
	if name == "" {
		host, _ := os.Hostname()
		parts := []string{}
		for _, k := range []string{"app", "version"} {
			if v := m.labels[k]; v != "" {
				parts = append(parts, v)
			}
		}
		parts = append(parts, host, strconv.Itoa(os.Getpid()))
		name = strings.ToLower(strings.Join(parts, "-"))
	}
	addr := "127.0.0.1"
	if len(m.instanceIPs) > 0 {
		addr = m.instanceIPs[0]
	}
	ports := map[string]uint32{}
	for _, s := range m.inbound {
		p, err := parseInbound(s)
		if err != nil {
			return register.Options{}, err
		}
		listen := p.ListenPort
		if listen == 0 {
			listen = p.Port
		}
		ports[p.Name] = listen
	}
	labels := m.labels
	if m.mtls {
		// Istio's injector labels pods with a sidecar this way; clients'
		// auto mTLS reads it from the endpoint.
		labels = maps.Clone(labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels[controlplane.TLSModeLabel] = controlplane.TLSModeIstio
	}
	return register.Options{Client: c, Namespace: m.namespace, Name: name, Address: addr, Labels: labels, Ports: ports, ServiceAccount: m.serviceAccount}, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
