package proxy

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"time"
)

// Envoy's admin /certs shape (envoy.admin.v3.Certificates), for the
// workload certificate and the trust bundle the agent holds.
type certDetails struct {
	Path            string           `json:"path"`
	SerialNumber    string           `json:"serial_number"`
	SubjectAltNames []map[string]any `json:"subject_alt_names"`
	DaysUntilExpiry int              `json:"days_until_expiration"`
	ValidFrom       string           `json:"valid_from"`
	ExpirationTime  string           `json:"expiration_time"`
}

type certificates struct {
	Certificates []certEntry `json:"certificates"`
}

type certEntry struct {
	CACert    []certDetails `json:"ca_cert"`
	CertChain []certDetails `json:"cert_chain"`
}

func details(path string, c *x509.Certificate, now time.Time) certDetails {
	d := certDetails{Path: path, SerialNumber: c.SerialNumber.Text(16), SubjectAltNames: []map[string]any{},
		DaysUntilExpiry: int(c.NotAfter.Sub(now).Hours() / 24),
		ValidFrom:       c.NotBefore.UTC().Format(time.RFC3339), ExpirationTime: c.NotAfter.UTC().Format(time.RFC3339)}
	for _, u := range c.URIs {
		d.SubjectAltNames = append(d.SubjectAltNames, map[string]any{"uri": u.String()})
	}
	for _, n := range c.DNSNames {
		d.SubjectAltNames = append(d.SubjectAltNames, map[string]any{"dns": n})
	}
	return d
}

// handleCerts lists the workload certificate ("default") and the roots of
// the trust bundle ("ROOTCA"), as Envoy's /certs lists its TLS contexts'.
func (p *Proxy) handleCerts(w http.ResponseWriter, _ *http.Request) {
	out := certificates{Certificates: []certEntry{}}
	if a := p.opts.Agent; a != nil && a.Leaf() != nil {
		now := time.Now()
		var entry certEntry
		entry.CertChain = []certDetails{details("<sds:default>", a.Leaf(), now)}
		rest := a.Bundle()
		for {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
				entry.CACert = append(entry.CACert, details("<sds:ROOTCA>", c, now))
			}
		}
		out.Certificates = append(out.Certificates, entry)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
