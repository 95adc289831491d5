package up

// meshConfig is `amime up`'s Istio MeshConfig, written once to
// <data-dir>/mesh.yaml (edit it and restart to change it): access logs in
// JSON on every proxy's stdout, and every request is traced (a laptop mesh has little traffic, and seeing a trace is the
// point) to the control plane's built-in collector, registered below as
// the ServiceEntry amime-system/trace-collector.
const meshConfig = `# amime up's mesh configuration (Istio's MeshConfig). Edit and restart amime up.
# Every proxy logs each request to its log (under <data-dir>/logs), as Istio's demo profile does.
accessLogFile: /dev/stdout
accessLogEncoding: JSON
extensionProviders:
- name: amime-collector
  opentelemetry:
    service: trace-collector.amime-system.svc.cluster.local
    port: %d
    http: {path: /v1/traces, timeout: 5s}
defaultProviders:
  tracing: [amime-collector]
defaultConfig:
  tracing: {sampling: 100}
`

// collectorConfig registers the control plane's API, where its trace
// collector listens, as the service the tracing provider names.
const collectorConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: trace-collector, namespace: amime-system}
spec:
  hosts: [trace-collector.amime-system.svc.cluster.local]
  location: MESH_EXTERNAL
  ports: [{number: %d, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: %s}]
`

// defaultConfig is what `amime up` applies on a first start (an existing
// object of the same name is left alone, so the user's changes survive
// restarts): the tutorial's three services, and an ingress gateway on
// 127.0.0.1:8080 sending everything to customer.
const defaultConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: customer, namespace: default}
spec:
  hosts: [customer.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: customer}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: preference, namespace: default}
spec:
  hosts: [preference.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: preference}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: recommendation, namespace: default}
spec:
  hosts: [recommendation.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: recommendation}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingressgateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: customer-ingress, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/ingressgateway]
  http:
  - route:
    - destination: {host: customer.default.svc.cluster.local, port: {number: 8080}}
`
