package hcm

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strings"
	"sync"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/amime-mesh/amime/internal/proxy/header"
	"github.com/amime-mesh/amime/internal/proxy/rbac"
	"github.com/amime-mesh/amime/internal/proxy/tlsctx"
)

// downstreamPeer is what a request knows of its connection's TLS peer.
// It is shared by the streams of an HTTP/2 connection: what is cached is
// made once, under xfccOnce, or before any stream starts.
type downstreamPeer struct {
	conn *tlsctx.Conn
	// rbac is the peer as RBAC matches it.
	rbac *rbac.Peer
	// xfcc is this hop's x-forwarded-client-cert element.
	xfccOnce sync.Once
	xfcc     string
}

// peerOf returns the TLS peer of a downstream connection, nil for
// plaintext.
func peerOf(nc net.Conn) *downstreamPeer {
	if tc, ok := nc.(*tlsctx.Conn); ok {
		return &downstreamPeer{conn: tc, rbac: rbac.NewPeer(tc.Peer)}
	}
	return nil
}

// mutual reports a verified client certificate (Envoy's "mTLS" for XFCC
// and for connection_security_policy).
func (p *downstreamPeer) mutual() bool { return p != nil && p.conn.Peer != nil }

// xfccElement is Envoy's element for the current hop: By (this proxy's
// URI SAN), Hash (of the peer certificate), then the fields
// set_current_client_cert_details asks for.
func (p *downstreamPeer) xfccElement(d *hcmv3.HttpConnectionManager_SetCurrentClientCertDetails) string {
	p.xfccOnce.Do(func() {
		var b strings.Builder
		if p.conn.LocalPrincipal != "" {
			b.WriteString("By=")
			b.WriteString(p.conn.LocalPrincipal)
			b.WriteByte(';')
		}
		sum := sha256.Sum256(p.conn.Peer.Raw)
		b.WriteString("Hash=")
		b.WriteString(hex.EncodeToString(sum[:]))
		if d.GetSubject().GetValue() {
			b.WriteString(`;Subject="`)
			b.WriteString(strings.ReplaceAll(p.conn.Peer.Subject.String(), `"`, `\"`))
			b.WriteByte('"')
		}
		if d.GetUri() {
			for _, u := range p.conn.Peer.URIs {
				b.WriteString(";URI=")
				b.WriteString(u.String())
			}
		}
		if d.GetDns() {
			for _, n := range p.conn.Peer.DNSNames {
				b.WriteString(";DNS=")
				b.WriteString(n)
			}
		}
		p.xfcc = b.String()
	})
	return p.xfcc
}

// applyXFCC edits x-forwarded-client-cert as forward_client_cert_details
// says. Envoy sanitizes the header of any plaintext (or one-way TLS)
// connection, except in ALWAYS_FORWARD_ONLY.
func (c *Config) applyXFCC(hdrs *header.List, p *downstreamPeer) {
	const name = "x-forwarded-client-cert"
	mode := c.ForwardClientCert
	if mode == hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY {
		return
	}
	if !p.mutual() || mode == hcmv3.HttpConnectionManager_SANITIZE {
		hdrs.Del(name)
		return
	}
	switch mode {
	case hcmv3.HttpConnectionManager_APPEND_FORWARD:
		el := p.xfccElement(c.SetCurrentClientCert)
		if v, ok := hdrs.Get(name); ok && v != "" {
			hdrs.Set(name, v+","+el)
		} else {
			hdrs.Set(name, el)
		}
	case hcmv3.HttpConnectionManager_SANITIZE_SET:
		hdrs.Set(name, p.xfccElement(c.SetCurrentClientCert))
	}
}
