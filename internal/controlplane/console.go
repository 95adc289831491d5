package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/dashboard"
	"github.com/amime-mesh/amime/internal/proxy/telemetry"
)

// The console (internal/dashboard) reads the control plane through these
// sources: connected proxies with their sync state and where they serve
// metrics, what each was sent, the Istio configuration of a service, and
// the built-in trace collector.
func (cp *ControlPlane) consoleSources() dashboard.Sources {
	return dashboard.Sources{
		Proxies:       cp.consoleProxies,
		ConfigDump:    cp.consoleConfigDump,
		ServiceConfig: cp.consoleServiceConfig,
		Traces:        cp.traces,
	}
}

func (cp *ControlPlane) consoleProxies() []dashboard.Proxy {
	var out []dashboard.Proxy
	for _, st := range cp.xds.Status() {
		w := telemetry.WorkloadFromNode(st.Node)
		p := dashboard.Proxy{ID: st.ID, Namespace: w.Namespace, Workload: w.Name, App: w.App, Version: w.Version,
			Gateway: w.Gateway, ConnectedAt: st.ConnectedAt, Types: st.Types}
		if addr := st.Node.GetMetadata().GetFields()[MetaPrometheusAddr].GetStringValue(); addr != "" {
			p.StatsURL = "http://" + addr + "/stats/prometheus"
		}
		out = append(out, p)
	}
	return out
}

func (cp *ControlPlane) consoleConfigDump(_ context.Context, id string) ([]byte, error) {
	res, err := cp.xds.Resources(id)
	if err != nil {
		return nil, err
	}
	out := map[string][]json.RawMessage{}
	for typ, list := range res {
		for _, m := range list {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m.(proto.Message))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", typ, err)
			}
			out[typ] = append(out[typ], b)
		}
	}
	return json.Marshal(out)
}

// consoleServiceConfig lists the VirtualServices and DestinationRules that
// name host (its FQDN, or its short name in its namespace), and the
// translation warnings that mention it.
func (cp *ControlPlane) consoleServiceConfig(host string) ([]dashboard.ConfigObject, []string) {
	short, ns, _ := strings.Cut(host, ".")
	if i := strings.Index(ns, "."); i >= 0 {
		ns = ns[:i]
	}
	names := func(o *config.Object, h string) bool {
		h = strings.ToLower(h)
		return h == host || (o.Meta.Namespace == ns && (h == short || h == short+"."+ns))
	}
	var objs []dashboard.ConfigObject
	add := func(o *config.Object) {
		y, err := config.Encode(o, "yaml")
		if err != nil {
			y = []byte(err.Error())
		}
		objs = append(objs, dashboard.ConfigObject{Kind: o.Kind, Namespace: o.Meta.Namespace, Name: o.Meta.Name, YAML: string(y)})
	}
	for _, o := range cp.store.List(config.VirtualService, "") {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		if slices.ContainsFunc(vs.GetHosts(), func(h string) bool { return names(o, h) }) || routesTo(vs, func(h string) bool { return names(o, h) }) {
			add(o)
		}
	}
	for _, o := range cp.store.List(config.DestinationRule, "") {
		if dr, ok := o.Spec.(*networking.DestinationRule); ok && names(o, dr.GetHost()) {
			add(o)
		}
	}
	var warnings []string
	for _, w := range cp.Warnings() {
		if strings.Contains(w, host) || strings.Contains(w, " "+short+" ") || strings.Contains(w, `"`+short+`"`) {
			warnings = append(warnings, w)
		}
	}
	return objs, warnings
}

// routesTo reports whether a VirtualService sends traffic to a host.
func routesTo(vs *networking.VirtualService, is func(string) bool) bool {
	for _, h := range vs.GetHttp() {
		for _, r := range h.GetRoute() {
			if is(r.GetDestination().GetHost()) {
				return true
			}
		}
	}
	for _, t := range vs.GetTcp() {
		for _, r := range t.GetRoute() {
			if is(r.GetDestination().GetHost()) {
				return true
			}
		}
	}
	return false
}

// serveConsole runs the console on its listener until ctx ends.
func (cp *ControlPlane) serveConsole(ctx context.Context) {
	d := dashboard.New(cp.consoleSources(), dashboard.Options{Logger: cp.log.With("component", "console"), PrometheusURL: cp.opts.PrometheusURL})
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil {
			cp.log.Error("console", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(cp.consoleLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		cp.log.Error("console server", "err", err)
	}
	<-done
}

// ConsoleAddr is the console's bound address ("" when off).
func (cp *ControlPlane) ConsoleAddr() string {
	if cp.consoleLn == nil {
		return ""
	}
	return cp.consoleLn.Addr().String()
}
