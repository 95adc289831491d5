package tracing

import (
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/streaminfo"
)

const decoratorHeader = "x-envoy-decorator-operation"

// Request is what Begin needs to know about a request.
type Request struct {
	Headers *header.List
	// Sampling is the route's tracing override, nil for the connection
	// manager's.
	Sampling *Sampling
	// Tags are the route's custom tags: added to the connection manager's,
	// replacing those of the same name.
	Tags []CustomTag
	// Decorator is the route's decorator operation (HasDecorator false
	// when the route has none).
	Decorator    string
	HasDecorator bool
	Propagate    bool
	// Ingress: the listener's traffic direction is INBOUND or unset
	// (SERVER spans), otherwise OUTBOUND (CLIENT spans).
	Ingress   bool
	Authority string
	Start     time.Time
}

// Active is one request's tracing state. The connection manager keeps one
// per stream and reuses it, so an unsampled request allocates no span.
type Active struct {
	t       *Tracer
	cfg     *Config
	on      bool // a context is propagated
	sampled bool
	ingress bool
	shared  bool
	b3      bool // rewrite b3 single on inject
	out     Outgoing
	start   time.Time
	host    string
	// name overrides the default operation name (decorator, or the
	// decorator header); decorated is the decorator's operation to
	// propagate in a response header.
	name       string
	decorated  string
	propagate  bool
	downstream string // x-envoy-downstream-service-cluster
	proto      string // x-forwarded-proto as sent upstream
	origPath   string // x-envoy-original-path as sent upstream
	routeTags  []CustomTag
	tagVals    []string
}

// Reset clears the state; the connection manager calls it for every
// request. It keeps tagVals' storage.
func (a *Active) Reset() {
	vals := a.tagVals[:0]
	*a = Active{tagVals: vals}
}

// Sampled reports whether the request records a span.
func (a *Active) Sampled() bool { return a.sampled }

// Context returns the context sent upstream; ok is false when none is.
func (a *Active) Context() (Outgoing, bool) { return a.out, a.on }

// Begin decides whether the request is traced, reads its incoming context
// and applies the decorator header rules; call it once the route is known.
// t may be nil (no exporter: spans are only propagated).
func (a *Active) Begin(t *Tracer, c *Config, r *Request, rng *rand.Rand) {
	a.t, a.cfg, a.ingress, a.start, a.host = t, c, r.Ingress, r.Start, r.Authority
	a.routeTags = r.Tags
	h := r.Headers
	s := r.Sampling
	if s == nil {
		s = &c.Sampling
	}
	reason := Decide(h, s, rng)
	in := Extract(*h, c.Provider.Kind)
	if !in.Invalid {
		a.on = true
		a.b3 = in.B3Single
		switch in.Sampled {
		case FlagYes, FlagDebug:
			a.sampled = true
		case FlagNo:
			a.sampled = false
		default:
			a.sampled = reason != NotTraceable
		}
		a.out.Sampled = a.sampled
		if in.HasContext {
			a.out.TraceID = in.TraceID
		} else {
			a.out.TraceID = TraceID{Lo: nonZero(rng)}
			if c.Provider.Kind == OpenTelemetry || c.Provider.TraceID128 {
				a.out.TraceID.Hi, a.out.TraceID.Wide = rng.Uint64(), true
			}
		}
		if c.Provider.Kind == Zipkin && c.Provider.Shared && r.Ingress && in.HasContext {
			// Zipkin's shared span: the server side reuses the client's
			// span id and parent.
			a.shared = true
			a.out.SpanID, a.out.ParentID = in.SpanID, in.ParentID
		} else {
			a.out.SpanID = nonZero(rng)
			if in.HasContext {
				a.out.ParentID = in.SpanID
			}
		}
	}
	a.downstream, _ = h.Get("x-envoy-downstream-service-cluster")
	if r.HasDecorator {
		a.name = r.Decorator
		if r.Decorator != "" {
			a.decorated, a.propagate = r.Decorator, r.Propagate
		}
	}
	if !r.Ingress {
		// The server side of the next hop names its span after ours.
		if a.decorated != "" && a.propagate {
			h.Set(decoratorHeader, a.decorated)
		}
		return
	}
	if v, ok := h.Get(decoratorHeader); ok {
		if v != "" {
			a.name = v
			a.decorated = ""
		}
		h.Del(decoratorHeader)
	}
}

func nonZero(rng *rand.Rand) uint64 {
	for {
		if v := rng.Uint64(); v != 0 {
			return v
		}
	}
}

// Inject writes the propagation headers into the request as it goes
// upstream (after the route's header mutations, as Envoy's router), and
// takes the request's custom tag values for a sampled span.
func (a *Active) Inject(h *header.List) {
	if !a.on {
		return
	}
	a.out.Inject(h, a.b3)
	if !a.sampled {
		return
	}
	a.proto, _ = h.Get("x-forwarded-proto")
	a.origPath, _ = h.Get("x-envoy-original-path")
	a.tagVals = appendTagValues(a.tagVals, a.cfg.Tags, h)
	a.tagVals = appendTagValues(a.tagVals, a.routeTags, h)
}

func appendTagValues(vals []string, tags []CustomTag, h *header.List) []string {
	for _, ct := range tags {
		v := ct.Literal
		if ct.Header != "" {
			if hv, ok := h.Get(ct.Header); ok {
				v = hv
			}
		}
		vals = append(vals, v)
	}
	return vals
}

// Response applies the decorator header rules to a response head: the
// server side tells the client side its operation, the client side takes
// it as its span name and removes it.
func (a *Active) Response(h *header.List) {
	if a.cfg == nil {
		return
	}
	if a.ingress {
		if a.decorated != "" && a.propagate {
			h.Set(decoratorHeader, a.decorated)
		}
		return
	}
	if v, ok := h.Get(decoratorHeader); ok {
		if v != "" {
			a.name = v
		}
		h.Del(decoratorHeader)
	}
}

// Upstream describes the cluster the request went to, for the span's tags.
type Upstream struct {
	Name              string // upstream_cluster.name
	ObservabilityName string // upstream_cluster: alt_stat_name, else the name
}

// Finish ends a sampled request's span (at stream completion) and hands it
// to the exporter. info must be complete (Duration set).
func (a *Active) Finish(info *streaminfo.Info, up Upstream) {
	if !a.sampled || a.cfg == nil {
		return
	}
	a.sampled = false // at most once
	sp := &Span{
		TraceID: a.out.TraceID, SpanID: a.out.SpanID, ParentID: a.out.ParentID,
		Server: a.ingress, Shared: a.shared, Name: a.name, Host: a.host,
		Start: a.start, Duration: info.Duration,
		Method: info.Method, Scheme: a.proto, Authority: info.Authority, Path: info.Path,
		Protocol: info.Protocol, RequestID: info.RequestID, UserAgent: info.UserAgent,
		DownstreamCluster: a.downstream, UpstreamCluster: up.ObservabilityName, UpstreamClusterName: up.Name,
		UpstreamAddress: info.UpstreamHost, Status: info.ResponseCode, Flags: info.Flags,
		RequestSize: info.BytesReceived, ResponseSize: info.BytesSent, MaxPath: a.cfg.MaxPathTagLen,
	}
	if a.origPath != "" {
		sp.Path = a.origPath
	}
	sp.Peer = info.Downstream
	if n := len(a.cfg.Tags) + len(a.routeTags); n > 0 && len(a.tagVals) == n {
		sp.Custom = make([]Tag, 0, n)
		for i, ct := range a.cfg.Tags {
			if a.tagVals[i] != "" && !hasTag(a.routeTags, ct.Tag) {
				sp.Custom = append(sp.Custom, Tag{ct.Tag, a.tagVals[i]})
			}
		}
		for i, ct := range a.routeTags {
			if v := a.tagVals[len(a.cfg.Tags)+i]; v != "" {
				sp.Custom = append(sp.Custom, Tag{ct.Tag, v})
			}
		}
	}
	a.t.enqueue(a.cfg, sp)
}

func hasTag(tags []CustomTag, name string) bool {
	for _, t := range tags {
		if t.Tag == name {
			return true
		}
	}
	return false
}

// Tag is one span tag.
type Tag struct{ Key, Value string }

// Span is a finished span as the request path records it; the exporter
// turns it into tags and the wire format off the request path.
type Span struct {
	TraceID             TraceID
	SpanID, ParentID    uint64
	Server, Shared      bool
	Name, Host          string
	Start               time.Time
	Duration            time.Duration
	Method, Scheme      string
	Authority, Path     string
	Protocol            string
	RequestID           string
	UserAgent           string
	DownstreamCluster   string
	UpstreamCluster     string
	UpstreamClusterName string
	UpstreamAddress     string
	Peer                string // downstream remote address, ip:port
	Status              int
	Flags               streaminfo.Flags
	RequestSize         int64
	ResponseSize        int64
	MaxPath             int
	Custom              []Tag
}

// OperationName is the span's name: the decorator's (or the decorator
// header's), else "ingress", or "egress <authority>" (Envoy's defaults).
func (s *Span) OperationName() string {
	switch {
	case s.Name != "":
		return s.Name
	case s.Server:
		return "ingress"
	}
	return "egress " + s.Host
}

// Error reports Envoy's error tag: no response code, or a 5xx.
func (s *Span) Error() bool { return s.Status == 0 || s.Status >= 500 }

// Tags returns Envoy's span tags (node_id and zone come from the tracer)
// followed by the custom tags.
func (s *Span) Tags(nodeID, zone string) []Tag {
	dash := func(v string) string {
		if v == "" {
			return "-"
		}
		return v
	}
	path := s.Path
	if s.MaxPath >= 0 && len(path) > s.MaxPath {
		path = path[:s.MaxPath]
	}
	scheme := s.Scheme
	if scheme == "" {
		scheme = "http"
	}
	peer := s.Peer
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	tags := make([]Tag, 0, 20+len(s.Custom))
	tags = append(tags,
		Tag{"node_id", nodeID},
		Tag{"zone", zone},
		Tag{"guid:x-request-id", s.RequestID},
		Tag{"http.url", scheme + "://" + s.Authority + path},
		Tag{"http.method", s.Method},
		Tag{"downstream_cluster", dash(s.DownstreamCluster)},
		Tag{"user_agent", dash(s.UserAgent)},
		Tag{"http.protocol", s.Protocol},
		Tag{"peer.address", peer},
		Tag{"request_size", strconv.FormatInt(s.RequestSize, 10)},
		Tag{"response_size", strconv.FormatInt(s.ResponseSize, 10)},
		Tag{"component", "proxy"},
	)
	if s.UpstreamClusterName != "" {
		tags = append(tags, Tag{"upstream_cluster", s.UpstreamCluster}, Tag{"upstream_cluster.name", s.UpstreamClusterName})
	}
	if s.UpstreamAddress != "" {
		tags = append(tags, Tag{"upstream_address", s.UpstreamAddress})
	}
	tags = append(tags,
		Tag{"http.status_code", strconv.Itoa(s.Status)},
		Tag{"response_flags", s.Flags.String()},
	)
	if s.Error() {
		tags = append(tags, Tag{"error", "true"})
	}
	return append(tags, s.Custom...)
}
