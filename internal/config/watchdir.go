package config

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// LoadDir decodes and validates every *.yaml, *.yml and *.json file under
// dir, recursively, in path order. Hidden files and directories (".git",
// Kubernetes ConfigMap mounts' "..data") are skipped. Errors name the file
// (relative to dir) and the document; an object defined twice is an error
// naming both files.
func LoadDir(dir string, opts DecodeOptions) ([]*Object, error) {
	files, err := readConfigFiles(dir)
	if err != nil {
		return nil, err
	}
	return decodeFiles(files, opts)
}

type configFile struct {
	rel  string
	data []byte
}

func readConfigFiles(dir string) ([]configFile, error) {
	var files []configFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		data, err := os.ReadFile(path) // follows symlinks, as ConfigMap mounts need
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files = append(files, configFile{rel: rel, data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	return files, nil
}

func decodeFiles(files []configFile, opts DecodeOptions) ([]*Object, error) {
	opts.Validate = true
	var objs []*Object
	var errs []error
	from := map[Key]string{}
	for _, f := range files {
		got, err := opts.Decode(f.data)
		if err != nil {
			errs = append(errs, prefixError(f.rel+": ", err))
			continue
		}
		for _, o := range got {
			if prev, dup := from[o.Key()]; dup {
				errs = append(errs, fmt.Errorf("%s: %s is also defined in %s", f.rel, o.Key(), prev))
				continue
			}
			from[o.Key()] = f.rel
			objs = append(objs, o)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return objs, nil
}

// DirWatcher polls a directory of Istio YAML (a GitOps checkout, a mounted
// ConfigMap). Polling keeps it dependency-free and works on every file
// system, including network and overlay mounts where inotify is unreliable.
type DirWatcher struct {
	// Interval between polls; 0 means one second.
	Interval time.Duration
	// Decode options; Validate is always on.
	Options DecodeOptions
}

// WatchDir watches dir with the default settings; see DirWatcher.Watch.
func WatchDir(ctx context.Context, dir string, onChange func([]*Object, error)) error {
	return DirWatcher{}.Watch(ctx, dir, onChange)
}

// Watch loads dir now and after every change until ctx is done, then
// returns nil. onChange receives the full set after each change. When the
// directory holds an invalid file, onChange receives the last good set
// (nil if there never was one) and the error, naming the file and the
// document: the caller keeps serving what it has. An unchanged directory
// causes no call, and the same error is reported once. After the first
// load, a change is applied only once two polls in a row see the same
// content, so a file caught mid-write (truncated, half copied) never
// withdraws the resources it holds.
func (w DirWatcher) Watch(ctx context.Context, dir string, onChange func([]*Object, error)) error {
	if onChange == nil {
		return errors.New("watch dir: onChange is nil")
	}
	interval := w.Interval
	if interval <= 0 {
		interval = time.Second
	}
	var (
		good      []*Object
		last      [sha256.Size]byte
		pending   [sha256.Size]byte // a change seen once, applied when seen again
		seen      bool
		lastError string
	)
	poll := func() {
		files, err := readConfigFiles(dir)
		if err != nil {
			if err.Error() != lastError {
				lastError = err.Error()
				seen = false
				onChange(good, err)
			}
			return
		}
		h := sha256.New()
		for _, f := range files {
			fmt.Fprintf(h, "%s\x00%d\x00", f.rel, len(f.data))
			h.Write(f.data)
		}
		var sum [sha256.Size]byte
		h.Sum(sum[:0])
		if seen && sum == last {
			return
		}
		if seen && sum != pending {
			pending = sum
			return
		}
		last, seen, lastError = sum, true, ""
		objs, err := decodeFiles(files, w.Options)
		if err != nil {
			onChange(good, err)
			return
		}
		good = objs
		onChange(objs, nil)
	}
	poll()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			poll()
		}
	}
}
