package ca

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ErrPluginCA is returned by rotation on a plug-in CA: its root belongs to the operator, who
// rotates it by replacing the files (root-cert.pem may hold old and new roots meanwhile).
var ErrPluginCA = errors.New("ca: the root of a plug-in CA is rotated by the operator, not by amime")

// RotateRoot replaces the self-signed root with a new one. New leaves are issued from the new
// root at once; the old root stays in the bundle for Options.RootOverlap (or until RetireOld)
// so leaves it issued keep verifying until their workloads renew.
func (c *CA) RotateRoot() error {
	if c.dir == "" {
		return ErrPluginCA
	}
	key, cert, err := newRoot(c.opts)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var until time.Time
	if c.opts.RootOverlap > 0 {
		until = c.opts.Now().Add(c.opts.RootOverlap)
	}
	old := append(c.liveOldLocked(), retiring{cert: c.cert, until: until})
	// The previous roots are written before the new root so that a crash never leaves the
	// old root unknown while leaves it issued are still in use.
	if err := c.writePrevious(old); err != nil {
		return err
	}
	if err := c.writeRoot(key, cert); err != nil {
		return err
	}
	c.old = old
	c.setRoot(key, cert)
	c.opts.Logger.Info("ca: rotated root", "not_after", cert.NotAfter, "previous_roots", len(old),
		"overlap", c.opts.RootOverlap)
	return nil
}

// RetireOld removes every previous root from the bundle, ending a rotation overlap. Leaves
// issued by those roots stop verifying once peers pick up the new bundle.
func (c *CA) RetireOld() error {
	if c.dir == "" {
		return ErrPluginCA
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.writePrevious(nil); err != nil {
		return err
	}
	if len(c.old) > 0 {
		c.opts.Logger.Info("ca: retired previous roots", "count", len(c.old))
	}
	c.old = nil
	return nil
}

func (c *CA) liveOldLocked() []retiring {
	now := c.opts.Now()
	var out []retiring
	for _, o := range c.old {
		if o.until.IsZero() || now.Before(o.until) {
			out = append(out, o)
		}
	}
	return out
}

func (c *CA) writePrevious(old []retiring) error {
	path := filepath.Join(c.dir, PreviousRootFile)
	if len(old) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ca: remove %s: %w", path, err)
		}
		return nil
	}
	var data []byte
	for _, o := range old {
		b := &pem.Block{Type: "CERTIFICATE", Bytes: o.cert.Raw}
		if !o.until.IsZero() {
			b.Headers = map[string]string{retireAfterHeader: o.until.UTC().Format(time.RFC3339)}
		}
		data = append(data, pem.EncodeToMemory(b)...)
	}
	if err := writeFileAtomic(path, data, 0o644); err != nil {
		return fmt.Errorf("ca: persist previous roots: %w", err)
	}
	return nil
}

// loadPrevious restores an overlap that was in progress when the control plane stopped.
func (c *CA) loadPrevious() error {
	path := filepath.Join(c.dir, PreviousRootFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	for i, b := range pemBlocks(data) {
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("ca: %s: certificate %d: %w", path, i+1, err)
		}
		var until time.Time
		if v, ok := b.Headers[retireAfterHeader]; ok {
			if until, err = time.Parse(time.RFC3339, v); err != nil {
				return fmt.Errorf("ca: %s: certificate %d: bad %s header: %w", path, i+1, retireAfterHeader, err)
			}
		}
		c.old = append(c.old, retiring{cert: cert, until: until})
	}
	return nil
}
