package config

import (
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// Name and host syntax shared by the validators. Two flavours of DNS label
// exist on purpose: Kubernetes object names and namespaces must be lowercase,
// while Istio accepts mixed case in hostnames, subset names and port names
// (it compares them case-insensitively), so rejecting uppercase there would
// refuse YAML that istiod accepts.

const maxDomainLen = 255

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

func isAlnumAnyCase(c byte) bool {
	return isAlnum(c) || c >= 'A' && c <= 'Z'
}

// isLabel reports whether s is a DNS-1123 label using the given alphabet.
func isLabel(s string, alnum func(byte) bool) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if !alnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// isK8sLabel: lowercase DNS-1123 label (Kubernetes namespaces, Gateway names).
func isK8sLabel(s string) bool { return isLabel(s, isAlnum) }

// isDNSLabel: DNS-1123 label, any case (Istio subset, port and gateway names).
func isDNSLabel(s string) bool { return isLabel(s, isAlnumAnyCase) }

// isK8sSubdomain: lowercase DNS-1123 subdomain (Kubernetes object names).
func isK8sSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isK8sLabel(l) {
			return false
		}
	}
	return true
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// checkIPOrCIDR returns a reason when s is neither an IP address nor a CIDR.
func checkIPOrCIDR(s string) string {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Sprintf("%q is not a valid CIDR block", s)
		}
		return ""
	}
	if !isIP(s) {
		return fmt.Sprintf("%q is not a valid IP address", s)
	}
	return ""
}

// checkLabels validates labels after the first (possibly wildcard) one:
// each a DNS-1123 label, the top-level one not all-numeric, a trailing dot
// allowed ("istio.io.").
func checkDomainLabels(full, rest string) string {
	parts := strings.Split(rest, ".")
	tld := parts[len(parts)-1]
	if _, err := strconv.Atoi(tld); err == nil {
		return fmt.Sprintf("domain name %q invalid (top level domain %q cannot be all-numeric)", full, tld)
	}
	for i, l := range parts {
		if i == len(parts)-1 && l == "" && i > 0 {
			return ""
		}
		if !isDNSLabel(l) {
			return fmt.Sprintf("domain name %q invalid (label %q invalid)", full, l)
		}
	}
	return ""
}

func checkDomainLength(d string) string {
	if d == "" {
		return "empty domain name not allowed"
	}
	if len(d) > maxDomainLen {
		return fmt.Sprintf("domain name %q too long (max %d)", d, maxDomainLen)
	}
	return ""
}

// checkFQDN returns a reason when d is not a (possibly short) DNS name.
func checkFQDN(d string) string {
	if r := checkDomainLength(d); r != "" {
		return r
	}
	return checkDomainLabels(d, d)
}

// isWildcardLabel accepts "*", a DNS label, or a label prefixed by "*" as
// istiod does ("*foo" is a partial wildcard: accepted in most places).
func isWildcardLabel(l string) bool {
	if l == "*" {
		return true
	}
	l = strings.TrimPrefix(l, "*")
	return isDNSLabel(l)
}

// checkWildcardDomain: a DNS name whose first label may be a wildcard.
func checkWildcardDomain(d string) string {
	if r := checkDomainLength(d); r != "" {
		return r
	}
	first, rest, hasRest := strings.Cut(d, ".")
	if !isWildcardLabel(first) {
		return fmt.Sprintf("domain name %q invalid (label %q invalid)", d, first)
	}
	if hasRest {
		return checkDomainLabels(d, rest)
	}
	return ""
}

func checkPartialWildcard(h string) string {
	if strings.Contains(h, "*") && h != "*" && !strings.HasPrefix(h, "*.") {
		return fmt.Sprintf("partial wildcard %q not allowed", h)
	}
	return ""
}

// checkHostPart validates the host half of a Sidecar egress or Gateway
// server host ("ns/<host>"): a FQDN (short names are ambiguous outside the
// namespace they are written in), "*", or "*.suffix". Gateways also accept
// IP addresses.
func checkHostPart(h string, gateway bool) []string {
	var out []string
	if h != "*" && !strings.Contains(h, ".") {
		out = append(out, fmt.Sprintf("short name %q not allowed: use a fully qualified name", h))
	}
	if r := checkWildcardDomain(h); r != "" && !(gateway && isIP(h)) {
		out = append(out, r)
	}
	if r := checkPartialWildcard(h); r != "" {
		out = append(out, r)
	}
	return out
}

// checkNamespacedHost validates "namespace/host" entries of Sidecar egress
// listeners (gateway=false) and Gateway servers (gateway=true).
func checkNamespacedHost(h string, gateway bool) []string {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		if gateway {
			return checkHostPart(h, true)
		}
		return []string{fmt.Sprintf("host %q must be of the form namespace/dnsName", h)}
	}
	var out []string
	if ns == "" || host == "" {
		return []string{fmt.Sprintf("host %q: namespace and dnsName cannot be empty", h)}
	}
	switch {
	case ns == "*" || ns == ".":
	case ns == "~" && !gateway:
	case !isK8sLabel(ns):
		out = append(out, fmt.Sprintf("host %q: invalid namespace %q (want *, ., ~ or a namespace name)", h, ns))
	}
	return append(out, checkHostPart(host, gateway)...)
}

// checkUnixPath validates the part after unix:// of an address.
func checkUnixPath(p string) string {
	if p == "" {
		return "unix address must not be empty"
	}
	if strings.HasPrefix(p, "@") { // abstract socket
		return ""
	}
	if !path.IsAbs(p) || strings.HasSuffix(p, "/") {
		return fmt.Sprintf("%q is not an absolute path to a file", p)
	}
	return ""
}

func checkPort(n uint32) string {
	if n < 1 || n > 65535 {
		return fmt.Sprintf("port number %d must be in the range 1..65535", n)
	}
	return ""
}

// Kubernetes qualified names, used for label and annotation keys.
func isQualifiedNamePart(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	ok := func(c byte) bool { return isAlnumAnyCase(c) }
	if !ok(s[0]) || !ok(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if !ok(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func checkQualifiedName(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name = prefix
		prefix = ""
	}
	if hasPrefix && !isK8sSubdomain(prefix) {
		return fmt.Sprintf("invalid key %q: prefix must be a DNS-1123 subdomain", k)
	}
	if !isQualifiedNamePart(name) {
		return fmt.Sprintf("invalid key %q: name part must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric", k)
	}
	return ""
}

func checkLabelValue(v string) string {
	if v == "" {
		return ""
	}
	if !isQualifiedNamePart(v) {
		return fmt.Sprintf("invalid value %q: must be at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric", v)
	}
	return ""
}

// protocols istiod recognises (case-insensitive), with their families.
var protocols = map[string]struct{ http, tls bool }{
	"HTTP":       {http: true},
	"HTTP2":      {http: true},
	"HTTP_PROXY": {http: true},
	"GRPC":       {http: true},
	"GRPC-WEB":   {http: true},
	"HTTPS":      {tls: true},
	"TLS":        {tls: true},
	"TCP":        {},
	"UDP":        {},
	"MONGO":      {},
	"MYSQL":      {},
	"REDIS":      {},
}

func lookupProtocol(p string) (http, tls, ok bool) {
	v, ok := protocols[strings.ToUpper(p)]
	return v.http, v.tls, ok
}

const protocolList = "HTTP, HTTPS, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB, TCP, TLS, UDP, MONGO, MYSQL, REDIS"
