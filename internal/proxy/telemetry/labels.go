package telemetry

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// unknown is what Istio reports for a label it cannot fill.
const unknown = "unknown"

// Node metadata keys, as Istio's pilot-agent sends them (amime's proxy
// sends the same ones).
const (
	metaNamespace      = "NAMESPACE"
	metaLabels         = "LABELS"
	metaWorkloadName   = "WORKLOAD_NAME"
	metaServiceAccount = "SERVICE_ACCOUNT"
)

// Workload is this proxy's own workload, as its node describes it: the
// source of outbound requests and the destination of inbound ones.
type Workload struct {
	Name              string
	Namespace         string
	App               string
	Version           string
	CanonicalService  string
	CanonicalRevision string
	// Principal is the workload's SPIFFE identity. It is only reported
	// once the connection is mutual TLS; plaintext requests report
	// "unknown" as Istio does.
	Principal string
	// Gateway proxies always report as the source.
	Gateway bool
}

// WorkloadFromNode reads the workload from the xDS node: metadata
// NAMESPACE, LABELS, WORKLOAD_NAME, SERVICE_ACCOUNT, and Istio's node id
// form type~ip~pod.namespace~domain.
func WorkloadFromNode(n *corev3.Node) Workload {
	md := n.GetMetadata().GetFields()
	labels := map[string]string{}
	for k, v := range md[metaLabels].GetStructValue().GetFields() {
		labels[k] = v.GetStringValue()
	}
	w := Workload{Namespace: md[metaNamespace].GetStringValue(), Name: md[metaWorkloadName].GetStringValue()}
	parts := strings.Split(n.GetId(), "~")
	w.Gateway = parts[0] == "router" || parts[0] == "gateway"
	var pod string
	if len(parts) == 4 {
		var ns string
		pod, ns, _ = strings.Cut(parts[2], ".")
		if w.Namespace == "" {
			w.Namespace = ns
		}
	}
	if w.Namespace == "" {
		w.Namespace = "default"
	}
	w.App = first(labels["app"], labels["app.kubernetes.io/name"])
	w.Version = first(labels["version"], labels["app.kubernetes.io/version"])
	if w.Name == "" {
		switch {
		case pod != "":
			w.Name = pod
		case w.App != "" && w.Version != "":
			// Outside Kubernetes there is no Deployment: app-version is what
			// a Deployment is conventionally called.
			w.Name = w.App + "-" + w.Version
		default:
			w.Name = w.App
		}
	}
	w.CanonicalService = first(labels["service.istio.io/canonical-name"], labels["app.kubernetes.io/name"], labels["app"], w.Name)
	w.CanonicalRevision = first(labels["service.istio.io/canonical-revision"], labels["app.kubernetes.io/version"], labels["version"], "latest")
	if sa := md[metaServiceAccount].GetStringValue(); sa != "" {
		w.Principal = "spiffe://cluster.local/ns/" + w.Namespace + "/sa/" + sa
	}
	w.Name = first(w.Name, unknown)
	w.App = first(w.App, unknown)
	w.Version = first(w.Version, unknown)
	w.CanonicalService = first(w.CanonicalService, unknown)
	return w
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// Label names, in Istio's order.
var labelNames = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// Indexes into a label value slice for the per-request labels.
const (
	lReporter = iota
	lSrcWorkload
	lSrcNamespace
	lSrcPrincipal
	lSrcApp
	lSrcVersion
	lSrcCanonicalService
	lSrcCanonicalRevision
	lDstWorkload
	lDstNamespace
	lDstPrincipal
	lDstApp
	lDstVersion
	lDstService
	lDstServiceName
	lDstServiceNamespace
	lDstCanonicalService
	lDstCanonicalRevision
	lProtocol
	lResponseCode
	lGRPCStatus
	lResponseFlags
	lSecurityPolicy
	numLabels
)

// clusterLabels derives the labels a cluster name determines: everything
// but protocol, response code, gRPC status and flags. Istio cluster names
// are "outbound|PORT|SUBSET|HOST" and "inbound|PORT||" (older:
// "inbound|PORT|NAME|HOST"); anything else (a bootstrap's own clusters,
// PassthroughCluster, BlackHoleCluster) is outbound to an unknown service,
// named after the cluster as Istio names the passthrough and blackhole
// services.
func clusterLabels(self Workload, clusterName string) [numLabels]string {
	var v [numLabels]string
	for i := range v {
		v[i] = unknown
	}
	parts := strings.Split(clusterName, "|")
	inbound := len(parts) == 4 && parts[0] == "inbound" && !self.Gateway
	// Neither side's principal is known on plaintext, and the peer's
	// workload waits for the peer-metadata exchange.
	if inbound {
		v[lReporter] = "destination"
		v[lSecurityPolicy] = "none"
		v[lDstWorkload] = self.Name
		v[lDstNamespace] = self.Namespace
		v[lDstApp] = self.App
		v[lDstVersion] = self.Version
		v[lDstCanonicalService] = self.CanonicalService
		v[lDstCanonicalRevision] = self.CanonicalRevision
		host := parts[3]
		if host == "" {
			// The inbound cluster no longer names the service; the workload's
			// canonical service is what Istio falls back to.
			host = self.CanonicalService + "." + self.Namespace + ".svc.cluster.local"
		}
		v[lDstService] = host
		v[lDstServiceName], v[lDstServiceNamespace] = serviceNameNamespace(host)
		return v
	}
	v[lReporter] = "source"
	v[lSrcWorkload] = self.Name
	v[lSrcNamespace] = self.Namespace
	v[lSrcApp] = self.App
	v[lSrcVersion] = self.Version
	v[lSrcCanonicalService] = self.CanonicalService
	v[lSrcCanonicalRevision] = self.CanonicalRevision
	switch {
	case len(parts) == 4 && parts[0] == "outbound" && parts[3] != "":
		v[lDstService] = parts[3]
		v[lDstServiceName], v[lDstServiceNamespace] = serviceNameNamespace(parts[3])
	case clusterName != "":
		v[lDstService] = clusterName
		v[lDstServiceName] = clusterName
	}
	return v
}

// serviceNameNamespace splits a Kubernetes service host
// NAME.NAMESPACE.svc.DOMAIN; other hosts (ServiceEntry) are their own name
// in an unknown namespace.
func serviceNameNamespace(host string) (string, string) {
	if i := strings.Index(host, ".svc."); i > 0 {
		name, ns, ok := strings.Cut(host[:i], ".")
		if ok && ns != "" && !strings.Contains(ns, ".") {
			return name, ns
		}
	}
	return host, unknown
}
