package route

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/matcher"
)

// pathRewrite is RouteAction prefix_rewrite / regex_rewrite.
type pathRewrite struct {
	prefix string // "" means unset, as in Envoy
	re     *regexp.Regexp
	tmpl   string // substitution as a Go template
}

func (pr *pathRewrite) apply(path string, m *routeMatch) (string, bool) {
	switch {
	case pr.prefix != "":
		return pr.prefix + path[m.matchedLen(path):], true
	case pr.re != nil:
		just := matcher.PathOnly(path)
		return pr.re.ReplaceAllString(just, pr.tmpl) + path[len(just):], true
	}
	return path, false
}

// substitution converts an RE2 rewrite string (\0-\9 name groups, \\ is a
// backslash) into a regexp.Expand template, rejecting what RE2's
// CheckRewriteString rejects so a bad rewrite fails at Compile rather than
// on each request.
func substitution(s string, re *regexp.Regexp) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c != '\\':
			b.WriteByte(c)
		case i+1 == len(s):
			return "", fmt.Errorf(`invalid rewrite pattern %q: '\' not allowed at end`, s)
		case s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		case '0' <= s[i+1] && s[i+1] <= '9':
			n := int(s[i+1] - '0')
			if n > re.NumSubexp() {
				return "", fmt.Errorf("invalid rewrite pattern %q: requests %d matches, but the regexp only has %d parenthesized subexpressions", s, n, re.NumSubexp())
			}
			fmt.Fprintf(&b, "${%d}", n)
			i++
		default:
			return "", fmt.Errorf(`invalid rewrite pattern %q: '\' must be followed by a digit or '\'`, s)
		}
	}
	return b.String(), nil
}

// redirect is a compiled RedirectAction.
type redirect struct {
	scheme       string // scheme_redirect, or "https" for https_redirect
	host         string
	port         string // ":N" or ""
	path         string // path_redirect
	pathHasQuery bool
	prefix       string // prefix_rewrite
	re           *regexp.Regexp
	tmpl         string
	stripQuery   bool
	code         int
	// ssl is require_tls's redirect: https with the Host and :path as
	// received (Envoy's createSslRedirectPath).
	ssl bool
}

// Location returns the Location header for a Redirect route, computed like
// Envoy's Http::Utility::newUri:
//
//   - scheme: scheme_redirect / https_redirect, else the request's scheme;
//   - host: host_redirect, else the request's Host, whose port is dropped
//     when port_redirect is set, or when the scheme changes and the port is
//     the default one of the request's protocol (":80" for http, ":443" for
//     https; the protocol is x-forwarded-proto, else Request.Scheme). A
//     default port is otherwise kept as received, as in Envoy;
//   - path: path_redirect (keeping the request's query unless path_redirect
//     has one), or the request's :path after prefix_rewrite / regex_rewrite;
//     strip_query drops the query unless path_redirect carries one.
//
// For a DirectResponse route with status 201 or 3xx it returns the request's
// own URL, which Envoy also sends as Location; otherwise "".
func (r *Route) Location(req *Request) string {
	e := r.e
	switch e.kind {
	case Redirect:
		rd := e.redirect
		if rd.ssl {
			return "https://" + req.Authority + req.Path
		}
		path := req.Path
		switch {
		case rd.re != nil:
			just := matcher.PathOnly(path)
			// Envoy treats an empty substitution result as "no rewrite".
			if s := rd.re.ReplaceAllString(just, rd.tmpl); s != "" {
				path = s + path[len(just):]
			}
		case rd.prefix != "":
			path = rd.prefix + path[e.match.matchedLen(path):]
		}
		return newURI(rd, req, path)
	case DirectResponse:
		if e.status == 201 || (e.status >= 300 && e.status < 400) {
			return newURI(nil, req, req.Path)
		}
	}
	return ""
}

func newURI(rd *redirect, req *Request, path string) string {
	scheme := req.Scheme
	var port string
	if rd != nil {
		if rd.scheme != "" {
			scheme = rd.scheme
		}
		port = rd.port
	}
	var host string
	if rd != nil && rd.host != "" {
		host = rd.host
	} else {
		host = requestHost(req, scheme, port)
	}
	if rd != nil && rd.path != "" {
		switch i := strings.IndexByte(path, '?'); {
		case rd.pathHasQuery || i < 0:
			path = rd.path
		default:
			path = rd.path + path[i:]
		}
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if rd != nil && !rd.pathHasQuery && rd.stripQuery {
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
	}
	return scheme + "://" + host + port + path
}

// requestHost is Envoy's processRequestHost.
func requestHost(req *Request, newScheme, newPort string) string {
	host := req.Authority
	if host == "" {
		return host
	}
	var end int
	if host[0] == '[' {
		if end = strings.LastIndex(host, "]:"); end >= 0 {
			end++
		}
	} else {
		end = strings.LastIndexByte(host, ':')
	}
	if end < 0 {
		return host
	}
	port := host[end:]
	proto, ok := req.Headers.Get("x-forwarded-proto")
	if !ok {
		proto = req.Scheme
	}
	remove := newPort != ""
	if newScheme != proto {
		remove = remove ||
			header.EqualFold(proto, "https") && port == ":443" ||
			header.EqualFold(proto, "http") && port == ":80"
	}
	if remove {
		return host[:end]
	}
	return host
}
