package controlplane

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/amime-mesh/amime/internal/config"
)

// debugHandler serves what `amime proxy-status` and `amime proxy-config`
// read: connected proxies with their sync state, and what the control
// plane holds for one proxy.
func (cp *ControlPlane) debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/proxy-status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, cp.xds.Status())
	})
	mux.HandleFunc("GET /debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("proxy")
		res, err := cp.xds.Resources(id)
		if err != nil {
			writeStatus(w, http.StatusNotFound, "NotFound", err.Error())
			return
		}
		out := map[string][]json.RawMessage{}
		only := strings.ToUpper(r.URL.Query().Get("type"))
		for typ, list := range res {
			if only != "" && only != typ {
				continue
			}
			for _, m := range list {
				b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m.(proto.Message))
				if err != nil {
					writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
					return
				}
				out[typ] = append(out[typ], b)
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /debug/warnings", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, cp.Warnings())
	})
	mux.HandleFunc("GET /debug/registry", func(w http.ResponseWriter, _ *http.Request) {
		in := cp.input()
		type ep struct {
			Address string            `json:"address"`
			Port    uint32            `json:"port"`
			Labels  map[string]string `json:"labels,omitempty"`
			Healthy bool              `json:"healthy"`
		}
		type svc struct {
			Hostname  string `json:"hostname"`
			Namespace string `json:"namespace"`
			Ports     []any  `json:"ports"`
			Endpoints []ep   `json:"endpoints"`
		}
		var out []svc
		for _, s := range in.Registry.Services() {
			v := svc{Hostname: s.Hostname, Namespace: s.Namespace}
			for _, p := range s.Ports {
				v.Ports = append(v.Ports, p)
				for _, e := range s.Endpoints(p.Number, nil) {
					v.Endpoints = append(v.Endpoints, ep{Address: e.Address, Port: e.Port, Labels: e.Labels, Healthy: e.Healthy})
				}
			}
			out = append(out, v)
		}
		writeJSON(w, http.StatusOK, map[string]any{"services": out, "warnings": in.Registry.Warnings()})
	})
	return mux
}

// heartbeat records that a self-registered workload is alive.
func (a *api) heartbeat(w http.ResponseWriter, r *http.Request) {
	k := config.Key{Kind: config.WorkloadEntry, Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
	if _, ok := a.store.Get(k); !ok {
		writeStatus(w, http.StatusNotFound, "NotFound", k.String()+" not found: register it first")
		return
	}
	wasHealthy := a.leases.Healthy(k)
	a.leases.Heartbeat(k)
	if !wasHealthy {
		a.push("health")
	}
	// The proxy cannot know --unhealthy-after: tell it how often to beat,
	// or a live workload would flap unhealthy (and be removed) between
	// heartbeats whenever the lease is shorter than its default interval.
	writeJSON(w, http.StatusOK, HeartbeatResponse{Interval: a.heartbeatInterval.String()})
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse struct {
	// Interval is the heartbeat period the lease needs (a Go duration).
	Interval string `json:"interval"`
}

// heartbeatInterval fits three heartbeats in one lease, so one lost or
// slow heartbeat does not make a live workload unhealthy.
func heartbeatInterval(unhealthyAfter time.Duration) time.Duration {
	return max((unhealthyAfter / 3).Round(time.Millisecond), 50*time.Millisecond)
}
