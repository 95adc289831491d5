package hcm

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/tracing"
)

// Tracing glue: the tracing package decides and records, this file tells
// it about the request at the points Envoy's connection manager and router
// do (after route selection, after the route's header mutations, on the
// response head, at stream completion).

// beginTrace starts tracing a request once its route is known (rt may be
// nil: a 404 is traced too).
func (st *stream) beginTrace(tc *tracing.Config, req *request, rt *route.Route) {
	r := &st.traceReq
	*r = tracing.Request{
		Headers:   &req.r.Headers,
		Ingress:   st.h.env.TrafficDirection != corev3.TrafficDirection_OUTBOUND,
		Authority: req.r.Authority,
		Start:     st.info.Start,
	}
	if rt != nil {
		if d, ok := rt.Decorator(); ok {
			r.Decorator, r.HasDecorator, r.Propagate = d.Operation, true, d.Propagate
		}
		if t := rt.Tracing(); t != nil {
			r.Sampling, r.Tags = &t.Sampling, t.Tags
		}
	}
	st.trace.Begin(st.h.env.Tracer, tc, r, st.rng)
	// The trace reason is packed into x-request-id, as forwarded and logged.
	st.info.RequestID, _ = req.r.Headers.Get("x-request-id")
	r.Headers = nil
}

// finishTrace hands a sampled request's span to the tracer.
func (st *stream) finishTrace() {
	up := tracing.Upstream{Name: st.info.Cluster, ObservabilityName: st.info.Cluster}
	if up.Name != "" {
		if c := st.h.env.Clusters.Get(up.Name); c != nil && c.Config().GetAltStatName() != "" {
			up.ObservabilityName = c.Config().GetAltStatName()
		}
	}
	st.trace.Finish(&st.info, up)
}
