package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// On-disk layout of a file store:
//
//	<dir>/lock                                        flock'd while open
//	<dir>/resourceVersion                             counter, written on deletes
//	<dir>/config/<kind-plural>/<namespace>/<name>.yaml
//
// Every file is replaced atomically (temp file in the same directory,
// fsync, rename, fsync of the directory) before a write is acknowledged, so
// a crash loses nothing acknowledged and never leaves a torn file.

const (
	configDir   = "config"
	counterFile = "resourceVersion"
	lockFile    = "lock"
	tmpPrefix   = ".tmp-"
)

type fileStore struct {
	dir  string
	lock *os.File
	// dirs known to exist durably, so that fsyncs of parents happen once.
	dirs map[string]bool

	// Test hooks for injected disk failures.
	failWrite  func(path string) error
	failRename func(path string) error
}

// OpenFileStore opens (creating if needed) a store persisted under dir.
// Every stored object is loaded and validated: an unreadable, corrupted or
// invalid file makes OpenFileStore fail naming it, rather than serving a
// silently reduced configuration. Temporary files left by a crash are
// removed. Only one process may open dir at a time.
func OpenFileStore(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, configDir), 0o755); err != nil {
		return nil, fmt.Errorf("open file store: %w", err)
	}
	// Make the directories themselves durable (they may be new).
	for _, d := range []string{filepath.Join(dir, configDir), dir} {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("open file store: %w", err)
		}
	}
	syncDir(filepath.Dir(dir)) //nolint:errcheck // best effort: the parent may not be ours
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open file store: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open file store: %s is in use by another process: %w", dir, err)
	}
	fsb := &fileStore{dir: dir, lock: lock, dirs: map[string]bool{}}
	s := NewStore()
	objs, rv, err := fsb.load()
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open file store: %w", err)
	}
	for _, o := range objs {
		ks := s.writableKind(o.Kind)
		ks.objs[o.Key()] = o
	}
	s.rv = rv
	s.backend = fsb
	return s, nil
}

func (f *fileStore) close() error { return f.lock.Close() }

func (f *fileStore) path(kind, ns, name string) string {
	ki, _ := kindByName(kind)
	return filepath.Join(f.dir, configDir, ki.Plural, ns, name+".yaml")
}

// load reads every object and the resourceVersion counter.
func (f *fileStore) load() ([]*Object, uint64, error) {
	var rv uint64
	if b, err := os.ReadFile(filepath.Join(f.dir, counterFile)); err == nil {
		rv, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: corrupted counter: %w", filepath.Join(f.dir, counterFile), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, err
	}
	if err := f.removeTemps(f.dir); err != nil {
		return nil, 0, err
	}
	plurals := map[string]string{}
	for _, k := range kinds {
		plurals[k.Plural] = k.Kind
	}
	root := filepath.Join(f.dir, configDir)
	var objs []*Object
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return nil
		}
		parts := strings.Split(rel, string(filepath.Separator))
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			// An uncommitted write interrupted by a crash.
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("%s: removing leftover temporary file: %w", path, err)
			}
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case len(parts) == 1 && d.IsDir():
			if _, ok := plurals[parts[0]]; !ok {
				return fmt.Errorf("%s: unexpected directory (not a kind amime stores)", path)
			}
			return nil
		case len(parts) == 2 && d.IsDir():
			return nil
		case len(parts) == 3 && !d.IsDir():
			o, err := loadFile(path, plurals[parts[0]], parts[1], parts[2])
			if err != nil {
				return err
			}
			n, _ := strconv.ParseUint(o.Meta.ResourceVersion, 10, 64)
			rv = max(rv, n)
			objs = append(objs, o)
			return nil
		}
		return fmt.Errorf("%s: unexpected file", path)
	})
	if err != nil {
		return nil, 0, err
	}
	return objs, rv, nil
}

func (f *fileStore) removeTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("%s: removing leftover temporary file: %w", filepath.Join(dir, e.Name()), err)
			}
		}
	}
	return nil
}

func loadFile(path, kind, ns, file string) (*Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	objs, err := DecodeOptions{DefaultNamespace: ns, Validate: true}.Decode(data)
	if err != nil {
		return nil, prefixError(path+": ", err)
	}
	if len(objs) != 1 {
		return nil, fmt.Errorf("%s: want exactly one object, found %d", path, len(objs))
	}
	o := objs[0]
	if o.Kind != kind || o.Meta.Namespace != ns || o.Meta.Name+".yaml" != file {
		return nil, fmt.Errorf("%s: holds %s, which belongs elsewhere", path, o.Key())
	}
	if n, err := strconv.ParseUint(o.Meta.ResourceVersion, 10, 64); err != nil || n == 0 {
		return nil, fmt.Errorf("%s: invalid resourceVersion %q", path, o.Meta.ResourceVersion)
	}
	return o, nil
}

// commit writes every file to a temporary name first; only when all are
// durable does it rename them into place, so that a failure while writing
// (disk full, I/O error, read-only file system) changes nothing. A failure
// while renaming may leave part of the batch in place: it is reported as
// partial.
func (f *fileStore) commit(puts, deletes []*Object, rv uint64) (bool, error) {
	type pending struct{ tmp, final string }
	var ps []pending
	cleanup := func() {
		for _, p := range ps {
			os.Remove(p.tmp)
		}
	}
	for _, o := range puts {
		final := f.path(o.Kind, o.Meta.Namespace, o.Meta.Name)
		if err := f.ensureDir(filepath.Dir(final)); err != nil {
			cleanup()
			return false, err
		}
		data, err := Encode(o, "yaml")
		if err != nil {
			cleanup()
			return false, err
		}
		tmp, err := f.writeTemp(final, data)
		if err != nil {
			cleanup()
			return false, err
		}
		ps = append(ps, pending{tmp, final})
	}
	if len(deletes) > 0 {
		// Deleting may remove the object holding the highest
		// resourceVersion; the counter keeps it from going back.
		final := filepath.Join(f.dir, counterFile)
		tmp, err := f.writeTemp(final, []byte(strconv.FormatUint(rv, 10)+"\n"))
		if err != nil {
			cleanup()
			return false, err
		}
		// The counter goes first: a crash before the deletions leaves
		// the objects in place with a higher counter, which is harmless.
		ps = append([]pending{{tmp, final}}, ps...)
	}
	dirty := map[string]bool{}
	for i, p := range ps {
		err := f.rename(p.tmp, p.final)
		if err != nil {
			for _, rest := range ps[i:] {
				os.Remove(rest.tmp)
			}
			return i > 0, fmt.Errorf("rename %s: %w", p.final, err)
		}
		dirty[filepath.Dir(p.final)] = true
	}
	for _, o := range deletes {
		path := f.path(o.Kind, o.Meta.Namespace, o.Meta.Name)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, fmt.Errorf("remove %s: %w", path, err)
		}
		dirty[filepath.Dir(path)] = true
	}
	for d := range dirty {
		if err := syncDir(d); err != nil {
			return true, err
		}
	}
	return false, nil
}

func (f *fileStore) rename(tmp, final string) error {
	if f.failRename != nil {
		if err := f.failRename(final); err != nil {
			return err
		}
	}
	return os.Rename(tmp, final)
}

// writeTemp writes data durably to a new temporary file beside final.
func (f *fileStore) writeTemp(final string, data []byte) (string, error) {
	if f.failWrite != nil {
		if err := f.failWrite(final); err != nil {
			return "", fmt.Errorf("write %s: %w", final, err)
		}
	}
	t, err := os.CreateTemp(filepath.Dir(final), tmpPrefix+filepath.Base(final)+"-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", final, err)
	}
	_, err = t.Write(data)
	if err == nil {
		err = t.Sync()
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(t.Name())
		return "", fmt.Errorf("write %s: %w", final, err)
	}
	return t.Name(), nil
}

// ensureDir creates d and makes its entry durable in its parents.
func (f *fileStore) ensureDir(d string) error {
	if f.dirs[d] {
		return nil
	}
	root := filepath.Join(f.dir, configDir)
	var created []string
	for p := d; p != root && p != "." && p != "/"; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		created = append(created, p)
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", d, err)
	}
	for _, p := range created {
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
	}
	f.dirs[d] = true
	return nil
}

func syncDir(d string) error {
	h, err := os.Open(d)
	if err != nil {
		return fmt.Errorf("sync %s: %w", d, err)
	}
	defer h.Close()
	if err := h.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", d, err)
	}
	return nil
}
