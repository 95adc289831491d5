package controlplane

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/amime-mesh/amime/internal/explain"
	"github.com/amime-mesh/amime/internal/xds/translate"
)

// explain answers POST /apis/amime.io/v1/explain: the trail of a request
// description (explain.Request) through the proxies, from what the
// control plane serves them now.
func (a *api) explain(w http.ResponseWriter, r *http.Request) {
	if a.proxies == nil {
		writeStatus(w, http.StatusServiceUnavailable, "ServiceUnavailable", "explain needs the xDS server")
		return
	}
	var req explain.Request
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", "explain request: "+err.Error())
		return
	}
	trail, err := explain.Explain(r.Context(), a.proxies(), req, explain.Options{})
	switch {
	case errors.Is(err, explain.ErrSource):
		writeStatus(w, http.StatusNotFound, "NotFound", err.Error())
	case err != nil:
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
	default:
		writeJSON(w, http.StatusOK, trail)
	}
}

// explainProxies describes every connected proxy with what it was last
// served, for explain.
func (cp *ControlPlane) explainProxies() []*explain.Proxy {
	var out []*explain.Proxy
	for _, st := range cp.xds.Status() {
		res, err := cp.xds.Resources(st.ID)
		if err != nil {
			continue // connected, nothing served yet
		}
		p := &explain.Proxy{ID: st.ID, Sync: st.Types, Resources: explain.ResourcesByType(res)}
		kind, _, _ := strings.Cut(st.ID, "~")
		p.Gateway = kind == "router" || kind == "gateway"
		if st.Node != nil {
			if tp, err := ProxyFromNode(st.Node, cp.opts.Mesh); err == nil {
				p.Gateway = tp.Type == translate.Router
				p.Namespace, p.Labels, p.IPs = tp.Namespace, tp.Labels, tp.IPs
				if tp.MTLS {
					// The identity of its namespace and service account,
					// which its join token binds its certificate to.
					p.Identity = tp.SpiffeID()
				}
			}
			p.Workload = st.Node.GetMetadata().GetFields()[MetaWorkloadName].GetStringValue()
		}
		out = append(out, p)
	}
	return out
}
