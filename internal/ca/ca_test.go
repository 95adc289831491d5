package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSelfSignedRootCreatedOnceAndReloaded(t *testing.T) {
	dataDir := t.TempDir()
	log, _ := testLogger(t)
	first, err := LoadOrCreate(dataDir, Options{Logger: log})
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	root := first.Certificate()

	checks := []struct {
		name string
		ok   bool
	}{
		{"CA:true", root.IsCA && root.BasicConstraintsValid},
		{"key usage cert sign + CRL sign", root.KeyUsage == x509.KeyUsageCertSign|x509.KeyUsageCRLSign},
		{"subject O=amime", len(root.Subject.Organization) == 1 && root.Subject.Organization[0] == "amime"},
		{"subject CN=amime root", root.Subject.CommonName == "amime root"},
		{"ECDSA P-256", func() bool { k, ok := root.PublicKey.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P256() }()},
		{"10-year validity", root.NotAfter.Sub(root.NotBefore) >= DefaultRootTTL},
		{"self-signed", isSelfSigned(root)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("root: %s does not hold", c.name)
		}
	}

	modes := map[string]os.FileMode{RootKeyFile: 0o600, RootCertFile: 0o644}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(dataDir, "ca", name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", name, got, want)
		}
	}
	keyBefore, err := os.ReadFile(filepath.Join(dataDir, "ca", RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}

	second, err := LoadOrCreate(dataDir, Options{Logger: log})
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	if !second.Certificate().Equal(root) {
		t.Error("second start created a new root instead of reloading")
	}
	keyAfter, _ := os.ReadFile(filepath.Join(dataDir, "ca", RootKeyFile))
	if string(keyBefore) != string(keyAfter) {
		t.Error("root key file changed on reload")
	}
	if !keyMatches(second.signer, root) {
		t.Error("reloaded key does not match root")
	}
	// A leaf from the reloaded CA verifies against the first start's bundle.
	leaf := issueSVID(t, second, "spiffe://cluster.local/ns/default/sa/a")
	if err := verifyLeaf(certPEM(leaf.Leaf), first.Bundle()); err != nil {
		t.Errorf("leaf from reloaded CA does not verify against original bundle: %v", err)
	}
}

func TestSelfSignedHalfMissingRefused(t *testing.T) {
	for _, missing := range []string{RootKeyFile, RootCertFile} {
		t.Run(missing, func(t *testing.T) {
			dataDir := t.TempDir()
			log, _ := testLogger(t)
			if _, err := LoadOrCreate(dataDir, Options{Logger: log}); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dataDir, "ca", missing)); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreate(dataDir, Options{Logger: log})
			if err == nil || !strings.Contains(err.Error(), missing) {
				t.Fatalf("err = %v, want a refusal naming %s", err, missing)
			}
		})
	}
}

func TestPluginCAWithIntermediate(t *testing.T) {
	dir := t.TempDir()
	p := writePlugin(t, dir, time.Time{})
	log, _ := testLogger(t)
	c, err := Open(t.TempDir(), dir, Options{Logger: log})
	if err != nil {
		t.Fatalf("Open plug-in: %v", err)
	}
	_, csr, err := NewKeyAndCSR("spiffe://cluster.local/ns/shop/sa/cart")
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := c.Sign(csr, mustID(t, "spiffe://cluster.local/ns/shop/sa/cart"), 0)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	chain := parseChain(t, chainPEM)
	// leaf, ca-cert, intermediate; the root travels in the bundle only.
	if len(chain) != 3 || !chain[1].Equal(p.caCert) || !chain[2].Equal(p.inter) {
		t.Fatalf("chain has %d certs, want leaf + ca-cert + intermediate", len(chain))
	}
	rootFile, err := os.ReadFile(filepath.Join(dir, PluginRootFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyLeaf(chainPEM, rootFile); err != nil {
		t.Errorf("leaf does not verify against root-cert.pem with the chain: %v", err)
	}
	if string(c.Bundle()) != string(certPEM(p.root)) {
		t.Error("bundle is not root-cert.pem")
	}
	if err := c.RotateRoot(); !errors.Is(err, ErrPluginCA) {
		t.Errorf("RotateRoot on plug-in CA: err = %v, want ErrPluginCA", err)
	}
}

func TestPluginCABadFilesRefused(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(t *testing.T, dir string, p pluginFiles)
		wantFile string
		wantText string
	}{
		{
			name: "key does not match cert",
			breakIt: func(t *testing.T, dir string, _ pluginFiles) {
				_, other := testCert(t, caTemplate("other"), nil, nil)
				writePEMFile(t, filepath.Join(dir, PluginKeyFile), keyPEM(t, other))
			},
			wantFile: PluginKeyFile, wantText: "does not match",
		},
		{
			name: "ca-cert is not a CA",
			breakIt: func(t *testing.T, dir string, p pluginFiles) {
				tmpl := caTemplate("not a ca")
				tmpl.IsCA = false
				tmpl.KeyUsage = x509.KeyUsageDigitalSignature
				// Re-sign by a throwaway root; checkCA must fail before chain verification.
				leaf, key := testCert(t, tmpl, nil, nil)
				writePEMFile(t, filepath.Join(dir, PluginCertFile), certPEM(leaf))
				writePEMFile(t, filepath.Join(dir, PluginKeyFile), keyPEM(t, key))
			},
			wantFile: PluginCertFile, wantText: "not a CA",
		},
		{
			name: "chain does not verify to root",
			breakIt: func(t *testing.T, dir string, _ pluginFiles) {
				other, _ := testCert(t, caTemplate("unrelated root"), nil, nil)
				writePEMFile(t, filepath.Join(dir, PluginRootFile), certPEM(other))
			},
			wantFile: PluginRootFile, wantText: "does not verify",
		},
		{
			name: "intermediate missing from cert-chain",
			breakIt: func(t *testing.T, dir string, p pluginFiles) {
				writePEMFile(t, filepath.Join(dir, PluginChainFile), certPEM(p.caCert, p.root))
			},
			wantFile: PluginChainFile, wantText: "does not verify",
		},
		{
			name: "root-cert missing",
			breakIt: func(t *testing.T, dir string, _ pluginFiles) {
				if err := os.Remove(filepath.Join(dir, PluginRootFile)); err != nil {
					t.Fatal(err)
				}
			},
			wantFile: PluginRootFile, wantText: "no such file",
		},
		{
			name: "ca-key garbage",
			breakIt: func(t *testing.T, dir string, _ pluginFiles) {
				writePEMFile(t, filepath.Join(dir, PluginKeyFile), []byte("not a key\n"))
			},
			wantFile: PluginKeyFile, wantText: "no PEM private key",
		},
		{
			name: "ca-cert garbage",
			breakIt: func(t *testing.T, dir string, _ pluginFiles) {
				writePEMFile(t, filepath.Join(dir, PluginCertFile), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
			},
			wantFile: PluginCertFile, wantText: "parse certificate",
		},
		{
			name: "ca-cert expired",
			breakIt: func(t *testing.T, dir string, p pluginFiles) {
				tmpl := caTemplate("expired")
				tmpl.NotBefore = time.Now().Add(-48 * time.Hour)
				tmpl.NotAfter = time.Now().Add(-24 * time.Hour)
				// Signed by a fresh root that replaces root-cert.pem, so only expiry is wrong.
				root, rootKey := testCert(t, caTemplate("root"), nil, nil)
				cert, key := testCert(t, tmpl, root, rootKey)
				writePEMFile(t, filepath.Join(dir, PluginCertFile), certPEM(cert))
				writePEMFile(t, filepath.Join(dir, PluginKeyFile), keyPEM(t, key))
				writePEMFile(t, filepath.Join(dir, PluginRootFile), certPEM(root))
				writePEMFile(t, filepath.Join(dir, PluginChainFile), certPEM(cert, root))
			},
			wantFile: PluginCertFile, wantText: "expired",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writePlugin(t, dir, time.Time{})
			tt.breakIt(t, dir, p)
			log, _ := testLogger(t)
			_, err := LoadPlugin(dir, Options{Logger: log})
			if err == nil {
				t.Fatal("LoadPlugin accepted broken files")
			}
			if !strings.Contains(err.Error(), tt.wantFile) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("err = %q, want it to name %s and say %q", err, tt.wantFile, tt.wantText)
			}
		})
	}
}
