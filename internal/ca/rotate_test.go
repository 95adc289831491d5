package ca

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable Options.Now, shared between a CA and its test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func issueChain(t *testing.T, c *CA, id string) []byte {
	t.Helper()
	_, csr, err := NewKeyAndCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.Sign(csr, mustID(t, id), 0)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

func TestRootRotationOverlap(t *testing.T) {
	const id = "spiffe://cluster.local/ns/a/sa/b"
	type step struct {
		name            string
		do              func(t *testing.T, c *CA, clock *fakeClock, dataDir string) *CA
		oldOK, newOK    bool
		wantBundleRoots int
	}
	retire := func(t *testing.T, c *CA, _ *fakeClock, _ string) *CA {
		if err := c.RetireOld(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	restart := func(t *testing.T, c *CA, clock *fakeClock, dataDir string) *CA {
		log, _ := testLogger(t)
		c2, err := LoadOrCreate(dataDir, Options{Logger: log, Now: clock.Now, RootOverlap: c.opts.RootOverlap})
		if err != nil {
			t.Fatal(err)
		}
		return c2
	}
	tests := []struct {
		name    string
		overlap time.Duration
		steps   []step
	}{
		{
			name: "until RetireOld, surviving a restart",
			steps: []step{
				{name: "restart during overlap", do: restart, oldOK: true, newOK: true, wantBundleRoots: 2},
				{name: "retire", do: retire, oldOK: false, newOK: true, wantBundleRoots: 1},
				{name: "restart after retiring", do: restart, oldOK: false, newOK: true, wantBundleRoots: 1},
			},
		},
		{
			name:    "configured overlap",
			overlap: time.Hour,
			steps: []step{
				{name: "within overlap", do: func(t *testing.T, c *CA, clock *fakeClock, _ string) *CA {
					clock.Advance(30 * time.Minute)
					return c
				}, oldOK: true, newOK: true, wantBundleRoots: 2},
				{name: "restart within overlap", do: restart, oldOK: true, newOK: true, wantBundleRoots: 2},
				{name: "after overlap", do: func(t *testing.T, c *CA, clock *fakeClock, _ string) *CA {
					clock.Advance(31 * time.Minute)
					return c
				}, oldOK: false, newOK: true, wantBundleRoots: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Now()}
			dataDir := t.TempDir()
			log, _ := testLogger(t)
			c, err := LoadOrCreate(dataDir, Options{Logger: log, Now: clock.Now, RootOverlap: tt.overlap})
			if err != nil {
				t.Fatal(err)
			}
			oldRoot := c.Certificate()
			oldLeaf := issueChain(t, c, id)
			if err := c.RotateRoot(); err != nil {
				t.Fatalf("RotateRoot: %v", err)
			}
			newRoot := c.Certificate()
			if newRoot.Equal(oldRoot) {
				t.Fatal("RotateRoot kept the old root as issuer")
			}
			newLeaf := issueChain(t, c, id)
			if l := parseChain(t, newLeaf)[0]; l.CheckSignatureFrom(newRoot) != nil {
				t.Error("leaf after rotation is not issued by the new root")
			}
			if got := len(parseChain(t, c.Bundle())); got != 2 {
				t.Fatalf("bundle right after rotation has %d roots, want 2", got)
			}
			for _, s := range tt.steps {
				c = s.do(t, c, clock, dataDir)
				bundle := c.Bundle()
				if got := len(parseChain(t, bundle)); got != s.wantBundleRoots {
					t.Errorf("%s: bundle has %d roots, want %d", s.name, got, s.wantBundleRoots)
				}
				check := func(which string, leaf []byte, want bool) {
					err := verifyLeafAt(leaf, bundle, clock.Now())
					if (err == nil) != want {
						t.Errorf("%s: %s leaf verifies = %v (%v), want %v", s.name, which, err == nil, err, want)
					}
				}
				check("old-root", oldLeaf, s.oldOK)
				check("new-root", newLeaf, s.newOK)
			}
		})
	}
}

func verifyLeafAt(chainPEM, bundlePEM []byte, now time.Time) error {
	chain, err := parseCerts(chainPEM)
	if err != nil {
		return err
	}
	roots, err := parseCerts(bundlePEM)
	if err != nil {
		return err
	}
	_, err = chain[0].Verify(x509.VerifyOptions{
		Roots:         pool(roots...),
		Intermediates: pool(chain[1:]...),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		CurrentTime:   now,
	})
	return err
}

func TestRotationFilesStayPrivate(t *testing.T) {
	dataDir := t.TempDir()
	log, _ := testLogger(t)
	c, err := LoadOrCreate(dataDir, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RotateRoot(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dataDir, "ca", RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("rotated key mode = %o, want 600", fi.Mode().Perm())
	}
	// No temp files are left behind by the atomic writes.
	entries, err := os.ReadDir(filepath.Join(dataDir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case RootCertFile, RootKeyFile, PreviousRootFile:
		default:
			t.Errorf("unexpected file %s in CA dir", e.Name())
		}
	}
}

// Signing while the root rotates must always produce a leaf that verifies against the bundle
// (old roots stay until RetireOld): issuer, key and chain are swapped together.
func TestSignDuringRotation(t *testing.T) {
	c := newTestCA(t, Options{})
	const id = "spiffe://cluster.local/ns/a/sa/b"
	_, csr, err := NewKeyAndCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	leaves := make(chan []byte, 40)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				chain, err := c.Sign(csr, mustID(t, id), 0)
				if err != nil {
					t.Error(err)
					return
				}
				leaves <- chain
			}
		}()
	}
	for range 3 {
		if err := c.RotateRoot(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(leaves)
	bundle := c.Bundle()
	for chain := range leaves {
		if err := verifyLeaf(chain, bundle); err != nil {
			t.Fatalf("leaf issued during rotation does not verify: %v", err)
		}
	}
}
