package explain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// Options tune Explain.
type Options struct {
	// Now is the clock JWT exp/nbf are checked against (nil: time.Now).
	Now func() time.Time
}

// ErrSource is returned (wrapped) when Request.From names no connected
// proxy or several.
var ErrSource = errors.New("source proxy")

// maxHops bounds the walk: a proxy's endpoint pointing back at a proxy
// would otherwise loop.
const maxHops = 6

// request is the request as one hop sees it.
type request struct {
	m      matcher.Request
	port   uint32 // the destination port the application dials
	rawURL string
}

func (r *request) clone() *request {
	c := *r
	c.m.Headers = slices.Clone(r.m.Headers)
	return &c
}

// connInfo is what the receiving proxy learns from the connection.
type connInfo struct {
	src  netip.Addr
	dst  netip.AddrPort
	tls  bool
	cert bool   // the client presents its workload certificate
	id   string // the client's SPIFFE ID when cert
	sni  string
	// sans are the server identities the client accepts (any when empty).
	sans []string
	// retries of the previous hop decide how a connection failure ends.
	retryReset func(kind int) bool
}

type engine struct {
	proxies []*Proxy
	opts    Options
	ctx     context.Context
	trail   *Trail
}

// Explain walks req through the proxies. It fails only when the request
// description is unusable or its source is not one connected proxy;
// every decision of the mesh, including failures, is in the Trail.
func Explain(ctx context.Context, proxies []*Proxy, req Request, opts Options) (*Trail, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	src, err := FindSource(proxies, req.From)
	if err != nil {
		return nil, err
	}
	r, err := newRequest(req)
	if err != nil {
		return nil, err
	}
	e := &engine{proxies: proxies, opts: opts, ctx: ctx, trail: &Trail{Request: RequestEcho{
		Method: r.m.Method, URL: r.rawURL, Authority: r.m.Authority, Path: r.m.Path, From: src.ID, Workload: src.name(),
	}}}
	if len(r.m.Headers) > 0 {
		e.trail.Request.Headers = map[string]string{}
		for _, f := range r.m.Headers {
			e.trail.Request.Headers[f.Name] = f.Value
		}
	}
	e.source(src, r)
	e.trail.Outcomes = mergeOutcomes(e.trail.Outcomes)
	e.trail.Summary = fmt.Sprintf("%s %s from %s → %s", r.m.Method, r.rawURL, src.name(), summarize(e.trail.Outcomes))
	return e.trail, nil
}

func newRequest(in Request) (*request, error) {
	u, err := url.Parse(in.URL)
	if err != nil {
		return nil, fmt.Errorf("request URL %q: %w", in.URL, err)
	}
	if u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("request URL %q: want an absolute URL such as http://reviews:9080/path", in.URL)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("request URL %q: scheme %q is not http or https", in.URL, u.Scheme)
	}
	r := &request{rawURL: in.URL}
	r.m.Method = strings.ToUpper(in.Method)
	if r.m.Method == "" {
		r.m.Method = "GET"
	}
	for _, c := range r.m.Method {
		if c < 'A' || c > 'Z' {
			return nil, fmt.Errorf("method %q: not an HTTP method token", in.Method)
		}
	}
	r.m.Scheme = u.Scheme
	r.m.Authority = u.Host
	r.m.Path = u.RequestURI()
	switch p := u.Port(); {
	case p != "":
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("request URL %q: bad port %q", in.URL, p)
		}
		r.port = uint32(n)
	case u.Scheme == "https":
		r.port = 443
	default:
		r.port = 80
	}
	names := make([]string, 0, len(in.Headers))
	for k := range in.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		name := strings.ToLower(strings.TrimSpace(k))
		if name == "" || strings.HasPrefix(name, ":") {
			return nil, fmt.Errorf("header %q: not a header name", k)
		}
		for _, v := range in.Headers[k] {
			if name == "host" {
				r.m.Authority = v
				continue
			}
			r.m.Headers.Add(name, v)
		}
	}
	return r, nil
}

// FindSource picks the proxy req.From names: an exact id first, then the
// workload name (node metadata or the name in the node id), then the app
// label or, for "ingressgateway"/"gateway", the gateway. Several
// candidates at one level are an error naming them.
func FindSource(proxies []*Proxy, from string) (*Proxy, error) {
	if from == "" {
		return nil, fmt.Errorf("%w: --from is required (a proxy id, a workload name or ingressgateway)", ErrSource)
	}
	tiers := []func(p *Proxy) bool{
		func(p *Proxy) bool { return p.ID == from },
		func(p *Proxy) bool { return p.Workload == from || idName(p.ID) == from },
		func(p *Proxy) bool {
			if p.Labels["app"] == from || p.Labels["istio"] == from {
				return true
			}
			return p.Gateway && (from == "ingressgateway" || from == "gateway" || strings.Contains(p.ID, from))
		},
	}
	for _, match := range tiers {
		var found []*Proxy
		for _, p := range proxies {
			if match(p) {
				found = append(found, p)
			}
		}
		switch len(found) {
		case 0:
			continue
		case 1:
			return found[0], nil
		}
		ids := make([]string, len(found))
		for i, p := range found {
			ids[i] = p.ID
		}
		return nil, fmt.Errorf("%w: %q names %d connected proxies (%s): give one id", ErrSource, from, len(found), strings.Join(ids, ", "))
	}
	ids := make([]string, len(proxies))
	for i, p := range proxies {
		ids[i] = p.ID
	}
	return nil, fmt.Errorf("%w: no connected proxy is %q (connected: %s)", ErrSource, from, strings.Join(ids, ", "))
}

// idName is the workload part of an Istio-style node id
// "<type>~<ip>~<name>.<namespace>~…".
func idName(id string) string {
	parts := strings.Split(id, "~")
	if len(parts) < 3 {
		return ""
	}
	name, _, _ := strings.Cut(parts[2], ".")
	return name
}

func (p *Proxy) name() string {
	if p.Workload != "" {
		return p.Workload
	}
	if n := idName(p.ID); n != "" {
		return n
	}
	return p.ID
}

// addHop appends a hop and returns its index.
func (e *engine) addHop(h Hop) int {
	e.trail.Hops = append(e.trail.Hops, h)
	return len(e.trail.Hops) - 1
}

func (e *engine) step(hop int, s Step) {
	e.trail.Hops[hop].Steps = append(e.trail.Hops[hop].Steps, s)
}

// outcome records an end of the walk for percent of the requests.
func (e *engine) outcome(hop int, percent float64, o Outcome) {
	if percent <= 0 {
		return
	}
	o.Percent, o.Hop = percent, hop
	if hop > 0 && o.At == "" && o.Status != 0 {
		o.At = e.trail.Hops[hop].Workload
	}
	e.trail.Outcomes = append(e.trail.Outcomes, o)
}

func (e *engine) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	if !slices.Contains(e.trail.Notes, n) {
		e.trail.Notes = append(e.trail.Notes, n)
	}
}

// mergeOutcomes adds up the shares of equal outcomes, largest first.
func mergeOutcomes(in []Outcome) []Outcome {
	var out []Outcome
	for _, o := range in {
		i := slices.IndexFunc(out, func(x Outcome) bool {
			return x.Status == o.Status && x.Flags == o.Flags && x.Details == o.Details && x.Reason == o.Reason && x.By == o.By
		})
		if i < 0 {
			out = append(out, o)
			continue
		}
		out[i].Percent += o.Percent
		if o.At != "" && !slices.Contains(strings.Split(out[i].At, ", "), o.At) {
			out[i].At += ", " + o.At
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Percent > out[j].Percent })
	for i := range out {
		out[i].Percent = roundPercent(out[i].Percent)
	}
	return out
}

func roundPercent(p float64) float64 {
	return float64(int64(p*1000+0.5)) / 1000
}

// Text is the outcome in one line, e.g. "403 RBAC: denied by …".
func (o Outcome) Text() string {
	if o.Status == 0 {
		return o.Reason
	}
	var b strings.Builder
	b.WriteString(strconv.Itoa(o.Status))
	if o.Flags != "" {
		// Flags and details are what access logs show; without flags the
		// details are long (RBAC's policy name) and the reason says it.
		b.WriteString(" ")
		b.WriteString(o.Flags)
		if o.Details != "" {
			b.WriteString(" ")
			b.WriteString(o.Details)
		}
		b.WriteString(":")
	}
	b.WriteString(" ")
	b.WriteString(o.Reason)
	return b.String()
}

func summarize(out []Outcome) string {
	switch len(out) {
	case 0:
		return "no outcome"
	case 1:
		return out[0].Text()
	}
	parts := make([]string, len(out))
	for i, o := range out {
		parts[i] = formatPercent(o.Percent) + ": " + o.Text()
	}
	return strings.Join(parts, "; ")
}

func formatPercent(p float64) string {
	return strconv.FormatFloat(p, 'f', -1, 64) + "%"
}
