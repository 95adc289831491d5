package hcm

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amime-mesh/amime/internal/proxy/fault"
	"github.com/amime-mesh/amime/internal/proxy/fieldcheck"
	"github.com/amime-mesh/amime/internal/proxy/jwtauthn"
	"github.com/amime-mesh/amime/internal/proxy/rbac"
	"github.com/amime-mesh/amime/internal/proxy/route"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

// httpFilter is a decoder filter of the HCM's chain: it runs, in
// configuration order, on a request once it is routed and before the
// router forwards it. rt is nil when no route matched (filters still run
// then, as in Envoy, where the router answers NR after them).
type httpFilter interface {
	// decode returns answered when the filter replied itself; ok then
	// reports whether the connection can carry another request.
	decode(st *stream, req *request, rw responder, rt *route.Route) (answered, ok bool)
}

// filterKind is one HTTP filter type amime implements besides the router.
type filterKind struct {
	// build compiles the filter's typed_config; name is its name in
	// http_filters, the key of its typed_per_filter_config.
	build func(name string, cfg *anypb.Any) (httpFilter, error)
	// perRoute parses its typed_per_filter_config entries.
	perRoute route.FilterConfigParser
	rules    fieldcheck.Rules
}

// filterKinds lists the supported filter types by type URL. It is built on
// each call: a constant table, not shared mutable state.
func filterKinds() map[string]filterKind {
	return map[string]filterKind{
		fault.TypeURL: {
			build: func(name string, cfg *anypb.Any) (httpFilter, error) {
				c, err := fault.Parse(cfg)
				if err != nil {
					return nil, err
				}
				return &faultFilter{name: name, cfg: c}, nil
			},
			perRoute: func(cfg *anypb.Any) (any, error) {
				if cfg.GetTypeUrl() != fault.TypeURL {
					return nil, fmt.Errorf("type %q is not the fault filter's (%s)", cfg.GetTypeUrl(), fault.TypeURL)
				}
				return fault.Parse(cfg)
			},
			rules: fault.Rules(),
		},
		rbac.HTTPTypeURL: {
			build: func(name string, cfg *anypb.Any) (httpFilter, error) {
				f, err := rbac.Parse(cfg)
				if err != nil {
					return nil, err
				}
				return &rbacFilter{name: name, f: f}, nil
			},
			perRoute: rbac.ParsePerRoute,
			rules:    rbac.Rules(),
		},
		jwtauthn.TypeURL: {
			build: func(name string, cfg *anypb.Any) (httpFilter, error) {
				c, err := jwtauthn.Parse(cfg)
				if err != nil {
					return nil, err
				}
				return newJWTFilter(name, c)
			},
			perRoute: jwtauthn.ParsePerRoute,
			rules:    jwtauthn.Rules(),
		},
		typedStructURL:     peerExchangeKind(),
		udpaTypedStructURL: peerExchangeKind(),
	}
}

// RouteOptions are the route compile options for route configurations
// served by RDS: the per-route configuration parsers of every supported
// filter, under its well-known name (RDS tables are compiled before the
// connection managers that use them are known).
func RouteOptions() route.Options {
	return routeOptions(nil)
}

// routeOptions adds, for inline routes, the names the HCM gives its filters.
func routeOptions(names map[string]string) route.Options {
	kinds := filterKinds()
	o := route.Options{FilterConfigParsers: map[string]route.FilterConfigParser{
		fault.Name:    kinds[fault.TypeURL].perRoute,
		rbac.HTTPName: kinds[rbac.HTTPTypeURL].perRoute,
		jwtauthn.Name: kinds[jwtauthn.TypeURL].perRoute,
	}}
	for name, typeURL := range names {
		o.FilterConfigParsers[name] = kinds[typeURL].perRoute
	}
	return o
}

// faultFilter is envoy.filters.http.fault.
type faultFilter struct {
	name string
	cfg  *fault.Config
}

func (f *faultFilter) decode(st *stream, req *request, rw responder, rt *route.Route) (bool, bool) {
	cfg := f.cfg
	if rt != nil {
		// The most specific per-route configuration replaces the filter's
		// whole, as Envoy's fault filter does.
		if c, ok := rt.PerFilterConfig(f.name).(*fault.Config); ok {
			cfg = c
		} else if c, ok := rt.PerFilterConfig(fault.Name).(*fault.Config); ok {
			cfg = c
		}
	}
	d := cfg.Decide(st.rng)
	if d.Delay > 0 {
		st.info.Flags |= streaminfo.DelayInjected
		t := time.NewTimer(d.Delay)
		select {
		case <-t.C:
		case <-st.ctx.Done():
			t.Stop()
			st.info.Flags |= streaminfo.DownstreamConnectionTermination
			return true, false
		}
	}
	if d.HTTPStatus == 0 {
		return false, true
	}
	st.info.Flags |= streaminfo.FaultInjected
	if d.GRPCStatus >= 0 {
		st.resp.Reset()
		if req.grpc {
			// Trailers-only gRPC reply carrying the configured status.
			st.resp.Add("content-type", "application/grpc")
			st.resp.Add("grpc-status", smallOrFormat(int64(d.GRPCStatus)))
			st.resp.Add("grpc-message", "fault filter abort")
			return true, st.localWith(rw, req, nil, 200, "", "fault_filter_abort", 0)
		}
		return true, st.localWith(rw, req, nil, 200, "fault filter abort", "fault_filter_abort", 0)
	}
	return true, st.local(rw, req, d.HTTPStatus, "fault filter abort", "fault_filter_abort", 0)
}
