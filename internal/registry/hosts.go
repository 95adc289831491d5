package registry

import "strings"

// IsWildcard reports a host pattern such as "*.example.com" or "*".
func IsWildcard(h string) bool { return strings.HasPrefix(h, "*") }

// HostCovers reports whether host pattern p matches host h (which may
// itself be a wildcard, matched when it is at least as specific as p), with
// Istio's rule: a wildcard covers longer names ending in its suffix.
func HostCovers(p, h string) bool {
	switch {
	case p == h || p == "*":
		return true
	case IsWildcard(p):
		suffix := p[1:]
		return len(h) > len(suffix) && strings.HasSuffix(h, suffix)
	}
	return false
}
