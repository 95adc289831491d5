// Package identity authenticates proxies to the control plane and serves
// their certificates: join tokens for workloads outside Kubernetes
// (`amime token create`), the gRPC authentication of the TLS xDS port
// (15012), and Istio's certificate service (istio.v1.auth.
// IstioCertificateService/CreateCertificate), which signs a proxy's CSR for
// the identity it authenticated as, never another.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Audience is the aud of join tokens: they are good only for this
// control plane's xDS and CA endpoints.
const Audience = "amime-xds"

// issuerName is the iss of join tokens.
const issuerName = "amime-control-plane"

// TokenKeyFile is where the signing key of join tokens lives under the
// data directory (mode 0600).
const TokenKeyFile = "identity/token-key.pem"

// DefaultTokenTTL is a join token's life when none is asked for: long
// enough for a VM's lifetime between re-provisionings, short enough that a
// leaked token expires.
const DefaultTokenTTL = 30 * 24 * time.Hour

// Tokens issues and verifies join tokens: ES256 JWTs whose subject is the
// workload's SPIFFE ID.
type Tokens struct {
	key   *ecdsa.PrivateKey
	kid   string
	td    spiffeid.TrustDomain
	now   func() time.Time
	signr jose.Signer
}

// LoadOrCreateTokens loads the token signing key from dataDir, creating
// it on first start.
func LoadOrCreateTokens(dataDir string, td spiffeid.TrustDomain) (*Tokens, error) {
	path := filepath.Join(dataDir, TokenKeyFile)
	key, err := readKey(path)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("token key: %w", err)
		}
		if err = writeKey(path, key); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	return NewTokens(key, td)
}

// NewTokens uses key to sign tokens for identities in td.
func NewTokens(key *ecdsa.PrivateKey, td spiffeid.TrustDomain) (*Tokens, error) {
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	sum := sha256.Sum256(pub)
	t := &Tokens{key: key, kid: hex.EncodeToString(sum[:8]), td: td, now: time.Now}
	t.signr, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", t.kid))
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	return t, nil
}

// Create issues a token for service account sa in namespace ns.
func (t *Tokens) Create(ns, sa string, ttl time.Duration) (string, spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(t.td, "ns", ns, "sa", sa)
	if err != nil {
		return "", spiffeid.ID{}, fmt.Errorf("token: identity ns=%q sa=%q: %w", ns, sa, err)
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	now := t.now()
	tok, err := jwt.Signed(t.signr).Claims(jwt.Claims{
		Issuer: issuerName, Subject: id.String(), Audience: jwt.Audience{Audience},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry: jwt.NewNumericDate(now.Add(ttl)),
	}).Serialize()
	if err != nil {
		return "", spiffeid.ID{}, fmt.Errorf("token: sign: %w", err)
	}
	return tok, id, nil
}

// Verify checks a token and returns the identity it was issued for.
func (t *Tokens) Verify(token string) (spiffeid.ID, error) {
	parsed, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("token: %w", err)
	}
	var c jwt.Claims
	if err := parsed.Claims(t.key.Public(), &c); err != nil {
		return spiffeid.ID{}, fmt.Errorf("token: %w", err)
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: issuerName, AnyAudience: jwt.Audience{Audience}, Time: t.now()}, time.Minute); err != nil {
		return spiffeid.ID{}, fmt.Errorf("token: %w", err)
	}
	id, err := spiffeid.FromString(c.Subject)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("token: subject: %w", err)
	}
	if id.TrustDomain() != t.td {
		return spiffeid.ID{}, fmt.Errorf("token: %s is not in trust domain %s", id, t.td)
	}
	return id, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("token key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token key %s: %T is not an ECDSA key", path, k)
	}
	return ek, nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("token key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("token key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	return nil
}
