// Package ca is amime's certificate authority: it issues SPIFFE X.509 SVIDs to workloads,
// either from a self-signed root it creates and persists, or from an operator-provided
// ("plug-in") CA using Istio's file names. It also holds the workload-side helpers
// (key and CSR generation, renewal time) and the mTLS peer verification used by the proxy.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// File names. The self-signed ones live under <data-dir>/ca; the plug-in ones are Istio's, so
// an operator's existing cacerts secret content can be reused unchanged.
const (
	RootCertFile     = "root-cert.pem"
	RootKeyFile      = "root-key.pem"
	PreviousRootFile = "previous-roots.pem"

	PluginCertFile  = "ca-cert.pem"
	PluginKeyFile   = "ca-key.pem"
	PluginRootFile  = "root-cert.pem"
	PluginChainFile = "cert-chain.pem"
)

// Defaults, as Istio's.
const (
	DefaultTrustDomain = "cluster.local"
	DefaultTTL         = 24 * time.Hour
	DefaultMaxTTL      = 90 * 24 * time.Hour
	DefaultRootTTL     = 10 * 365 * 24 * time.Hour
	// ClockSkew is how far NotBefore is backdated so that peers whose clocks lag a little
	// still accept a freshly issued certificate.
	ClockSkew = 5 * time.Minute
)

// retireAfterHeader is the PEM header recording when a previous root leaves the bundle, so an
// overlap survives restarts.
const retireAfterHeader = "Retire-After"

// Options configure a CA. The zero value gives Istio's defaults.
type Options struct {
	TrustDomain spiffeid.TrustDomain // default cluster.local
	DefaultTTL  time.Duration        // leaf lifetime when Sign gets 0; default 24h
	MaxTTL      time.Duration        // longer requests are shortened to this; default 90 days
	RootTTL     time.Duration        // self-signed root lifetime; default 10 years
	// RootOverlap is how long a root replaced by RotateRoot stays in the bundle. Zero keeps it
	// until RetireOld, for operators who want to decide when every workload has renewed.
	RootOverlap time.Duration
	Logger      *slog.Logger     // default slog.Default()
	Now         func() time.Time // for tests; default time.Now
}

func (o Options) withDefaults() Options {
	if o.TrustDomain.IsZero() {
		o.TrustDomain = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = DefaultTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.RootTTL <= 0 {
		o.RootTTL = DefaultRootTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// retiring is a root kept in the bundle after rotation; a zero until means "until RetireOld".
type retiring struct {
	cert  *x509.Certificate
	until time.Time
}

// CA issues SVIDs. It is safe for concurrent use.
type CA struct {
	opts Options
	dir  string // <data-dir>/ca for a self-signed CA; "" for a plug-in CA, which cannot rotate

	mu     sync.RWMutex
	signer crypto.Signer
	cert   *x509.Certificate   // the issuing certificate
	chain  []*x509.Certificate // sent after the leaf: the issuing cert, then intermediates
	roots  []*x509.Certificate // current trust anchors
	old    []retiring          // previous roots still trusted during a rotation overlap
}

// Open returns the plug-in CA in caDir when caDir is set (the --ca-dir flag), otherwise the
// self-signed CA persisted under dataDir.
func Open(dataDir, caDir string, opts Options) (*CA, error) {
	if caDir != "" {
		return LoadPlugin(caDir, opts)
	}
	return LoadOrCreate(dataDir, opts)
}

// LoadOrCreate loads the self-signed root from <dataDir>/ca, creating it on first start.
func LoadOrCreate(dataDir string, opts Options) (*CA, error) {
	opts = opts.withDefaults()
	dir := filepath.Join(dataDir, "ca")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: create %s: %w", dir, err)
	}
	c := &CA{opts: opts, dir: dir}
	certPath, keyPath := filepath.Join(dir, RootCertFile), filepath.Join(dir, RootKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		key, cert, err := newRoot(opts)
		if err != nil {
			return nil, err
		}
		if err := c.writeRoot(key, cert); err != nil {
			return nil, err
		}
		opts.Logger.Info("ca: created self-signed root", "dir", dir, "trust_domain", opts.TrustDomain.String(),
			"not_after", cert.NotAfter)
		c.setRoot(key, cert)
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("ca: %s: %w", certPath, certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("ca: %s: %w", keyPath, keyErr)
	case certErr != nil || keyErr != nil:
		// Never regenerate over half a CA: issued leaves would silently stop verifying.
		missing := certPath
		if keyErr != nil {
			missing = keyPath
		}
		return nil, fmt.Errorf("ca: %s is missing while its pair exists; restore it or remove both to create a new root", missing)
	default:
		key, cert, err := loadRoot(certPath, keyPath, opts.Now())
		if err != nil {
			return nil, err
		}
		if fi, err := os.Stat(keyPath); err == nil && fi.Mode().Perm()&0o077 != 0 {
			opts.Logger.Warn("ca: root key is readable by group or others", "file", keyPath, "mode", fi.Mode().Perm())
		}
		c.setRoot(key, cert)
		if err := c.loadPrevious(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func loadRoot(certPath, keyPath string, now time.Time) (crypto.Signer, *x509.Certificate, error) {
	certs, err := readCerts(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	cert := certs[0]
	key, err := readKey(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: %w", err)
	}
	if !keyMatches(key, cert) {
		return nil, nil, fmt.Errorf("ca: %s does not match the certificate in %s", keyPath, certPath)
	}
	if err := checkCA(cert); err != nil {
		return nil, nil, fmt.Errorf("ca: %s: %w", certPath, err)
	}
	if now.After(cert.NotAfter) {
		return nil, nil, fmt.Errorf("ca: %s: root expired at %s", certPath, cert.NotAfter.Format(time.RFC3339))
	}
	return key, cert, nil
}

func (c *CA) setRoot(key crypto.Signer, cert *x509.Certificate) {
	c.signer, c.cert = key, cert
	c.chain = []*x509.Certificate{cert}
	c.roots = []*x509.Certificate{cert}
}

// newRoot creates a self-signed root as the design fixes it: P-256, O=amime, CN=amime root.
func newRoot(opts Options) (crypto.Signer, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := opts.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"amime"}, CommonName: "amime root"},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(opts.RootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: parse root certificate: %w", err)
	}
	return key, cert, nil
}

// writeRoot persists a root. The key goes first: a crash in between leaves a key without its
// certificate, which LoadOrCreate refuses loudly instead of trusting a mismatched pair.
func (c *CA) writeRoot(key crypto.Signer, cert *x509.Certificate) error {
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(c.dir, RootKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("ca: persist root key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(c.dir, RootCertFile), encodeCerts([]*x509.Certificate{cert}), 0o644); err != nil {
		return fmt.Errorf("ca: persist root certificate: %w", err)
	}
	return nil
}

// LoadPlugin loads an operator-provided CA from dir using Istio's plug-in file names:
// ca-cert.pem issues, ca-key.pem is its key, cert-chain.pem holds the intermediates up to the
// root (optional when ca-cert.pem is signed by the root directly) and root-cert.pem is the
// trust bundle (it may hold several roots, for the operator's own rotation).
func LoadPlugin(dir string, opts Options) (*CA, error) {
	opts = opts.withDefaults()
	certPath := filepath.Join(dir, PluginCertFile)
	keyPath := filepath.Join(dir, PluginKeyFile)
	rootPath := filepath.Join(dir, PluginRootFile)
	chainPath := filepath.Join(dir, PluginChainFile)

	certs, err := readCerts(certPath)
	if err != nil {
		return nil, fmt.Errorf("ca: plug-in CA: %w", err)
	}
	cert := certs[0]
	key, err := readKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca: plug-in CA: %w", err)
	}
	if !keyMatches(key, cert) {
		return nil, fmt.Errorf("ca: plug-in CA: %s does not match the certificate in %s", keyPath, certPath)
	}
	if err := checkCA(cert); err != nil {
		return nil, fmt.Errorf("ca: plug-in CA: %s: %w", certPath, err)
	}
	roots, err := readCerts(rootPath)
	if err != nil {
		return nil, fmt.Errorf("ca: plug-in CA: %w", err)
	}
	var chainFile []*x509.Certificate
	if _, err := os.Stat(chainPath); err == nil {
		if chainFile, err = readCerts(chainPath); err != nil {
			return nil, fmt.Errorf("ca: plug-in CA: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("ca: plug-in CA: %s: %w", chainPath, err)
	}

	// Istio's cert-chain.pem conventionally repeats ca-cert.pem and ends with the root; the
	// chain sent to workloads needs neither twice, and roots come from the bundle.
	chain := []*x509.Certificate{cert}
	for _, ch := range chainFile {
		if ch.Equal(cert) || isSelfSigned(ch) {
			continue
		}
		chain = append(chain, ch)
	}
	for _, ch := range chain[1:] {
		if err := checkCA(ch); err != nil {
			return nil, fmt.Errorf("ca: plug-in CA: %s: %q: %w", chainPath, ch.Subject.String(), err)
		}
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, ch := range chain[1:] {
		inter.AddCert(ch)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   opts.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("ca: plug-in CA: %s does not verify to %s through %s: %w", certPath, rootPath, chainPath, err)
	}
	opts.Logger.Info("ca: loaded plug-in CA", "dir", dir, "subject", cert.Subject.String(),
		"intermediates", len(chain)-1, "roots", len(roots), "not_after", cert.NotAfter)
	return &CA{opts: opts, signer: key, cert: cert, chain: chain, roots: roots}, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil && string(c.RawIssuer) == string(c.RawSubject)
}

// TrustDomain is the trust domain the CA issues identities in.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.opts.TrustDomain }

// Bundle returns the PEM trust bundle workloads should trust: the current roots plus, during
// a rotation overlap, the previous ones.
func (c *CA) Bundle() []byte { return encodeCerts(c.bundleCerts()) }

// X509Bundle returns the trust bundle as go-spiffe's type, for in-process verifiers.
func (c *CA) X509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.opts.TrustDomain, c.bundleCerts())
}

func (c *CA) bundleCerts() []*x509.Certificate {
	now := c.opts.Now()
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := append([]*x509.Certificate(nil), c.roots...)
	for _, o := range c.old {
		if o.until.IsZero() || now.Before(o.until) {
			out = append(out, o.cert)
		}
	}
	return out
}

// Certificate returns the certificate that currently issues leaves.
func (c *CA) Certificate() *x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, as CA/B guidance asks, so serials are unpredictable and unique.
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("ca: generate serial: %w", err)
	}
	if s.Sign() == 0 {
		s.SetInt64(1) // zero serials are rejected by some verifiers
	}
	return s, nil
}

// pemBlocks is a small helper for previous-roots.pem, whose blocks carry headers.
func pemBlocks(data []byte) []*pem.Block {
	var out []*pem.Block
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		out = append(out, b)
	}
}
