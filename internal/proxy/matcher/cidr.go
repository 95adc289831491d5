package matcher

import (
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// NewCIDR compiles a CidrRange; p is its field path for errors. Envoy
// clamps a prefix_len beyond the address length and ignores the bits of
// address_prefix past the prefix; so does this.
func NewCIDR(c *corev3.CidrRange, p string) (netip.Prefix, error) {
	a, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errf(p+".address_prefix", "malformed IP address %q", c.GetAddressPrefix())
	}
	n := int(min(c.GetPrefixLen().GetValue(), uint32(a.BitLen())))
	return a.Prefix(n)
}

// InCIDR reports whether a is in prefix. An IPv4-mapped IPv6 address (how
// a dual-stack socket reports IPv4 peers) is compared as IPv4; an invalid
// address (not known) matches nothing.
func InCIDR(prefix netip.Prefix, a netip.Addr) bool {
	return a.IsValid() && prefix.Contains(a.Unmap())
}
