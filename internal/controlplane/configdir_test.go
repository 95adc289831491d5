package controlplane

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amime-mesh/amime/internal/config"
)

func TestConfigDirSync(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("reviews.yaml", reviewsVS)
	logs := &syncBuffer{}
	cp, err := New(Options{XDSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", ConfigDir: dir, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() { cancel(); <-done }()

	key := config.Key{Kind: config.VirtualService, Namespace: "default", Name: "reviews"}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eventually("file synced", func() bool { _, ok := cp.Store().Get(key); return ok })

	// An object applied through the API is not the directory's to delete.
	objs, _ := config.Decode([]byte(reviewsVS))
	objs[0].Meta.Name = "api-owned"
	if _, err := cp.Store().ApplyAll(objs); err != nil {
		t.Fatal(err)
	}
	// An invalid file keeps the last good set.
	write("broken.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken}\nspec: {hosts: []}\n")
	eventually("the invalid file reported", func() bool { return strings.Contains(logs.String(), "broken.yaml") })
	if _, ok := cp.Store().Get(key); !ok {
		t.Fatal("an invalid file emptied the synced set")
	}
	os.Remove(filepath.Join(dir, "broken.yaml"))
	os.Remove(filepath.Join(dir, "reviews.yaml"))
	eventually("deleted file removed", func() bool { _, ok := cp.Store().Get(key); return !ok })
	if _, ok := cp.Store().Get(config.Key{Kind: config.VirtualService, Namespace: "default", Name: "api-owned"}); !ok {
		t.Fatal("syncing the directory deleted an object applied through the API")
	}
}

// syncBuffer collects logs written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
