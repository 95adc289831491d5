package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const watchVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s}
spec:
  hosts: [%s]
  http:
  - route:
    - destination: {host: %s}
`

func vsYAML(name string) string {
	return strings.ReplaceAll(watchVS, "%s", name)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func keysOf(objs []*Object) string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Key().String())
	}
	return strings.Join(ks, ", ")
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), vsYAML("a")+"---\n"+vsYAML("b"))
	writeFile(t, filepath.Join(dir, "nested", "deeper", "c.yml"), vsYAML("c"))
	writeFile(t, filepath.Join(dir, "d.json"), `{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"d"},"spec":{"host":"d"}}`)
	writeFile(t, filepath.Join(dir, "README.md"), "not config")
	writeFile(t, filepath.Join(dir, ".git", "x.yaml"), "garbage: [")
	writeFile(t, filepath.Join(dir, "..2024_01_01", "a.yaml"), vsYAML("a")) // ConfigMap mount internals
	objs, err := LoadDir(dir, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(objs); got != "VirtualService default/a, VirtualService default/b, DestinationRule default/d, VirtualService default/c" {
		t.Fatalf("got %s", got)
	}

	writeFile(t, filepath.Join(dir, "nested", "dup.yaml"), vsYAML("b"))
	writeFile(t, filepath.Join(dir, "z.yaml"), vsYAML("z")+"---\n"+strings.Replace(vsYAML("yy"), "host: yy", "host: \"*\"", 1))
	_, err = LoadDir(dir, DecodeOptions{})
	want := "nested/dup.yaml: VirtualService default/b is also defined in a.yaml\n" +
		`z.yaml: document 2: VirtualService default/yy: spec.http[0].route[0].destination.host: wildcard host "*" is not a valid destination`
	if err == nil || err.Error() != want {
		t.Fatalf("want:\n%s\ngot:\n%v", want, err)
	}
}

func TestWatchDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), vsYAML("a"))
	type call struct {
		keys string
		err  string
	}
	calls := make(chan call, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- DirWatcher{Interval: 10 * time.Millisecond}.Watch(ctx, dir, func(objs []*Object, err error) {
			c := call{keys: keysOf(objs)}
			if err != nil {
				c.err = err.Error()
			}
			calls <- c
		})
	}()
	next := func(want call) {
		t.Helper()
		select {
		case got := <-calls:
			if got != want {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no call; want %+v", want)
		}
	}
	quiet := func() {
		t.Helper()
		select {
		case got := <-calls:
			t.Fatalf("unexpected call %+v", got)
		case <-time.After(60 * time.Millisecond):
		}
	}

	next(call{keys: "VirtualService default/a"})
	quiet() // unchanged: no calls

	writeFile(t, filepath.Join(dir, "sub", "b.yaml"), vsYAML("b"))
	next(call{keys: "VirtualService default/a, VirtualService default/b"})

	// A broken file: the last good set is kept and the error names the file
	// and the document, once.
	writeFile(t, filepath.Join(dir, "sub", "b.yaml"), vsYAML("b")+"---\n"+strings.Replace(vsYAML("c"), "hosts:", "hostz:", 1))
	next(call{keys: "VirtualService default/a, VirtualService default/b",
		err: `sub/b.yaml: document 2: VirtualService default/c: spec: unknown field "hostz"`})
	quiet()

	writeFile(t, filepath.Join(dir, "sub", "b.yaml"), vsYAML("b")+"---\n"+vsYAML("c"))
	next(call{keys: "VirtualService default/a, VirtualService default/b, VirtualService default/c"})

	os.Remove(filepath.Join(dir, "a.yaml"))
	next(call{keys: "VirtualService default/b, VirtualService default/c"})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

// A directory that does not exist yet (git-sync still cloning) is reported
// and picked up when it appears.
func TestWatchDirAppears(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	calls := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go DirWatcher{Interval: 10 * time.Millisecond}.Watch(ctx, dir, func(objs []*Object, err error) {
		if err != nil {
			calls <- "error"
			return
		}
		calls <- keysOf(objs)
	})
	if got := <-calls; got != "error" {
		t.Fatalf("got %s", got)
	}
	writeFile(t, filepath.Join(dir, "a.yaml"), vsYAML("a"))
	select {
	case got := <-calls:
		if got != "VirtualService default/a" {
			t.Fatalf("got %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("directory never picked up")
	}
}
