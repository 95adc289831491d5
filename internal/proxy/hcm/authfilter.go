package hcm

import (
	"net/netip"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amime-mesh/amime/internal/proxy/jwtauthn"
	"github.com/amime-mesh/amime/internal/proxy/rbac"
	"github.com/amime-mesh/amime/internal/proxy/route"
)

// jwtFilter is envoy.filters.http.jwt_authn. Keys come inline
// (local_jwks), as istiod sends them by default: a remote_jwks provider
// is refused when the filter is built (no Fetcher), so no filter owns
// goroutines a configuration swap would have to stop.
type jwtFilter struct {
	name string
	f    *jwtauthn.Filter
}

func newJWTFilter(name string, cfg *jwtauthn.Config) (*jwtFilter, error) {
	f, err := jwtauthn.New(cfg, jwtauthn.Options{})
	if err != nil {
		return nil, err
	}
	return &jwtFilter{name: name, f: f}, nil
}

func (j *jwtFilter) decode(st *stream, req *request, rw responder, rt *route.Route) (bool, bool) {
	var pr *jwtauthn.PerRoute
	if rt != nil {
		if c, ok := rt.PerFilterConfig(j.name).(*jwtauthn.PerRoute); ok {
			pr = c
		} else if c, ok := rt.PerFilterConfig(jwtauthn.Name).(*jwtauthn.PerRoute); ok {
			pr = c
		}
	}
	scheme := req.r.Scheme
	if v, ok := req.r.Headers.Get("x-forwarded-proto"); ok {
		scheme = v
	}
	jr := jwtauthn.Request{Method: req.r.Method, Scheme: scheme, Host: req.r.Authority, Path: req.r.Path, Headers: &req.r.Headers}
	res := j.f.Authenticate(st.ctx, &jr, pr)
	if res.PathChanged {
		req.r.Path = jr.Path
	}
	if !res.Passed() {
		st.resp.Reset()
		if res.WWWAuthenticate != "" {
			st.resp.Add("www-authenticate", res.WWWAuthenticate)
		}
		return true, st.localWith(rw, req, rt, res.Code, res.Body, res.Details, 0)
	}
	if md := res.Metadata(); md != nil {
		st.addMetadata(md)
	}
	return false, true
}

// rbacFilter is envoy.filters.http.rbac.
type rbacFilter struct {
	name string
	f    *rbac.Filter
}

func (r *rbacFilter) decode(st *stream, req *request, rw responder, rt *route.Route) (bool, bool) {
	f := r.f
	if rt != nil {
		// RBACPerRoute replaces the filter's rules for the route.
		if c, ok := rt.PerFilterConfig(r.name).(*rbac.Filter); ok {
			f = c
		} else if c, ok := rt.PerFilterConfig(rbac.HTTPName).(*rbac.Filter); ok {
			f = c
		}
	}
	a := &st.rbacAttrs
	a.Request = req.r
	a.DirectRemote = st.remoteAddr.Addr()
	// Without X-Forwarded-For trust the client is the peer (remote_ip).
	a.Remote = a.DirectRemote
	a.Destination = st.localAddrPort
	a.SNI, a.Peer = st.peer.rbacAttrs()
	a.Metadata = st.meta
	d := f.Decide(a)
	if d.Shadow || d.Log {
		filter, common := d.Metadata()
		md := map[string]*structpb.Struct{}
		if filter != nil {
			md[d.Namespace()] = filter
		}
		if common != nil {
			md[rbac.CommonNamespace] = common
		}
		st.addMetadata(md)
	}
	if d.Deny {
		return true, st.local(rw, req, rbac.DeniedStatus, rbac.DeniedBody, d.Details, 0)
	}
	return false, true
}

// addMetadata merges dynamic metadata (by filter namespace) into the
// request's.
func (st *stream) addMetadata(md map[string]*structpb.Struct) {
	if st.meta == nil {
		st.meta = md
		return
	}
	for k, v := range md {
		st.meta[k] = v
	}
}

// rbacAttrs are the TLS attributes RBAC reads: the SNI and the peer (nil
// for plaintext).
func (p *downstreamPeer) rbacAttrs() (string, *rbac.Peer) {
	if p == nil {
		return "", nil
	}
	return p.conn.SNI, p.rbac
}

func addrPort(s string) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s)
	return ap
}
