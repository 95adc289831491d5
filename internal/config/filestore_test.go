package config

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFileStorePersists(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	for _, o := range []*Object{vsObject("default", "reviews", 90), drObject("default", "reviews"), vsObject("prod", "ratings", 100)} {
		if _, _, err := s.Apply(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(Key{VirtualService, "prod", "ratings"}, ""); err != nil {
		t.Fatal(err)
	}
	// One file per object, in a kubectl-readable layout.
	data, err := os.ReadFile(filepath.Join(dir, "config", "virtualservices", "default", "reviews.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "kind: VirtualService") || !strings.Contains(string(data), `resourceVersion: "1"`) {
		t.Fatalf("stored file:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "config", "virtualservices", "prod", "ratings.yaml")); !os.IsNotExist(err) {
		t.Fatalf("deleted object still on disk: %v", err)
	}
	before := s.Snapshot()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, dir)
	defer s.Close()
	after := s.Snapshot()
	if after.Len() != 2 || after.ResourceVersion() != "4" {
		t.Fatalf("reopened: %d objects, rv %s", after.Len(), after.ResourceVersion())
	}
	for _, kind := range []string{VirtualService, DestinationRule} {
		a, b := before.List(kind), after.List(kind)
		for i := range a {
			if !proto.Equal(a[i].Spec, b[i].Spec) || a[i].Meta.ResourceVersion != b[i].Meta.ResourceVersion ||
				a[i].Meta.Generation != b[i].Meta.Generation || !a[i].Meta.CreationTimestamp.Equal(b[i].Meta.CreationTimestamp) {
				t.Fatalf("%s differs after reopen", a[i].Key())
			}
		}
	}
	// The counter continues, even though the highest version was deleted.
	o, _, err := s.Apply(vsObject("default", "new", 100))
	if err != nil {
		t.Fatal(err)
	}
	if o.Meta.ResourceVersion != "5" {
		t.Fatalf("resourceVersion after reopen: %s", o.Meta.ResourceVersion)
	}
}

func TestFileStoreOpenFailures(t *testing.T) {
	good := func(t *testing.T) string {
		dir := t.TempDir()
		s := openT(t, dir)
		if _, _, err := s.Apply(vsObject("default", "reviews", 100)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		return dir
	}
	file := func(dir string) string {
		return filepath.Join(dir, "config", "virtualservices", "default", "reviews.yaml")
	}
	cases := []struct {
		name   string
		break_ func(dir string)
		want   func(dir string) string
	}{
		{"corrupted", func(dir string) { os.WriteFile(file(dir), []byte("apiVersion: [\n"), 0o644) },
			func(dir string) string {
				return "open file store: " + file(dir) + ": document 1: yaml: line 1: did not find expected node content"
			}},
		{"truncated to nothing", func(dir string) { os.WriteFile(file(dir), nil, 0o644) },
			func(dir string) string { return "open file store: " + file(dir) + ": want exactly one object, found 0" }},
		{"invalid", func(dir string) {
			b, _ := os.ReadFile(file(dir))
			os.WriteFile(file(dir), []byte(strings.Replace(string(b), "weight: 100", "weight: 150", 1)), 0o644)
		}, func(dir string) string {
			return "open file store: " + file(dir) + ": document 1: VirtualService default/reviews: spec.http[0].route[0].weight: weight 150 must be in the range 0..100"
		}},
		{"misplaced", func(dir string) {
			os.Rename(file(dir), filepath.Join(filepath.Dir(file(dir)), "other.yaml"))
		}, func(dir string) string {
			return "open file store: " + filepath.Join(filepath.Dir(file(dir)), "other.yaml") + ": holds VirtualService default/reviews, which belongs elsewhere"
		}},
		{"unknown kind dir", func(dir string) { os.MkdirAll(filepath.Join(dir, "config", "envoyfilters"), 0o755) },
			func(dir string) string {
				return "open file store: " + filepath.Join(dir, "config", "envoyfilters") + ": unexpected directory (not a kind amime stores)"
			}},
		{"counter", func(dir string) { os.WriteFile(filepath.Join(dir, "resourceVersion"), []byte("x"), 0o644) },
			func(dir string) string {
				return "open file store: " + filepath.Join(dir, "resourceVersion") + `: corrupted counter: strconv.ParseUint: parsing "x": invalid syntax`
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := good(t)
			tc.break_(dir)
			s, err := OpenFileStore(dir)
			if err == nil {
				s.Close()
				t.Fatal("open succeeded on a damaged store")
			}
			if want := tc.want(dir); err.Error() != want {
				t.Fatalf("want:\n%s\ngot:\n%s", want, err)
			}
		})
	}
}

func TestFileStoreRemovesTempFiles(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if _, _, err := s.Apply(vsObject("default", "reviews", 100)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	leftovers := []string{
		filepath.Join(dir, "config", "virtualservices", "default", ".tmp-reviews.yaml-123"),
		filepath.Join(dir, ".tmp-resourceVersion-456"),
	}
	for _, p := range leftovers {
		if err := os.WriteFile(p, []byte("half a fi"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = openT(t, dir)
	defer s.Close()
	for _, p := range leftovers {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s not removed", p)
		}
	}
	if s.Snapshot().Len() != 1 {
		t.Fatal("object lost")
	}
}

func TestFileStoreLock(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if _, err := OpenFileStore(dir); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second open: %v", err)
	}
	s.Close()
	s = openT(t, dir)
	s.Close()
}

// A failed disk write leaves memory and disk as they were.
func TestFileStoreWriteFailure(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	defer s.Close()
	if _, _, err := s.Apply(vsObject("default", "reviews", 100)); err != nil {
		t.Fatal(err)
	}
	fsb := s.backend.(*fileStore)
	fsb.failWrite = func(path string) error {
		if strings.Contains(path, "ratings") {
			return syscall.ENOSPC
		}
		return nil
	}
	events := make(chan Event, 10)
	_, sub := s.Subscribe(func(e Event) { events <- e })
	defer sub.Stop()
	_, err := s.ApplyAll([]*Object{vsObject("default", "reviews", 50), vsObject("default", "ratings", 100)})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", err)
	}
	want := "persist: write " + filepath.Join(dir, "config", "virtualservices", "default", "ratings.yaml") + ": no space left on device"
	if err.Error() != want {
		t.Fatalf("want %q, got %q", want, err)
	}
	if o, _ := s.Get(Key{VirtualService, "default", "reviews"}); o.Meta.ResourceVersion != "1" || s.ResourceVersion() != "1" {
		t.Fatal("memory changed by a failed write")
	}
	if _, ok := s.Get(Key{VirtualService, "default", "ratings"}); ok {
		t.Fatal("memory changed by a failed write")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "config", "virtualservices", "default"))
	if len(entries) != 1 || entries[0].Name() != "reviews.yaml" {
		t.Fatalf("disk changed by a failed write: %v", entries)
	}
	select {
	case e := <-events:
		t.Fatalf("event for a failed write: %v", e)
	case <-time.After(20 * time.Millisecond):
	}
	fsb.failWrite = nil
	if _, err := s.ApplyAll([]*Object{vsObject("default", "reviews", 50), vsObject("default", "ratings", 100)}); err != nil {
		t.Fatalf("after the disk recovers: %v", err)
	}
}

// A failure after part of a batch reached the disk stops further writes
// until the store is reopened, rather than let memory and disk drift.
func TestFileStorePartialCommit(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	fsb := s.backend.(*fileStore)
	fsb.failRename = func(path string) error {
		if strings.Contains(path, "ratings") {
			return syscall.EIO
		}
		return nil
	}
	_, err := s.ApplyAll([]*Object{vsObject("default", "aaa", 100), vsObject("default", "ratings", 100)})
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("want EIO, got %v", err)
	}
	fsb.failRename = nil
	if _, _, err := s.Apply(vsObject("default", "x", 100)); err == nil || !strings.Contains(err.Error(), "store needs reopening after a disk error") {
		t.Fatalf("write after a partial commit: %v", err)
	}
	s.Close()
	s = openT(t, dir)
	defer s.Close()
	if _, ok := s.Get(Key{VirtualService, "default", "aaa"}); !ok || s.Snapshot().Len() != 1 {
		t.Fatal("reopen should show what reached the disk")
	}
	if _, _, err := s.Apply(vsObject("default", "x", 100)); err != nil {
		t.Fatal(err)
	}
}

const crashEnv = "AMIME_CONFIG_CRASH_DIR"

// TestFileStoreCrashSafety re-executes the test binary as a child that
// applies and deletes objects in a loop, announcing each write before it
// starts and acknowledging it once the store returns; the child is
// SIGKILLed at a random moment. After reopening, every key must be exactly
// as its last acknowledged write left it; only the write in flight at the
// kill may have happened or not.
func TestFileStoreCrashSafety(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	state := map[Key]string{} // acknowledged resourceVersion; absent: deleted
	var maxRV uint64
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreCrashSafety$", "-test.v=false")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, "AMIME_CONFIG_CRASH_SEED="+strconv.Itoa(round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 4096)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		first, ok := <-lines // the child is writing: kill it mid-flight
		if !ok {
			t.Fatal("child exited before writing")
		}
		time.Sleep(time.Duration(20+r.Intn(200)) * time.Millisecond)
		cmd.Process.Kill()
		var inFlight *Key
		acks := 0
		handle := func(l string) {
			f := strings.Fields(l)
			switch {
			case len(f) == 4 && f[0] == "begin":
				inFlight = &Key{f[1], f[2], f[3]}
			case len(f) == 6 && f[0] == "ack":
				k := Key{f[2], f[3], f[4]}
				if f[1] == "put" {
					state[k] = f[5]
				} else {
					delete(state, k)
				}
				rv, _ := strconv.ParseUint(f[5], 10, 64)
				maxRV = max(maxRV, rv)
				inFlight = nil
				acks++
			default:
				t.Fatalf("child output %q", l)
			}
		}
		handle(first)
		for l := range lines {
			handle(l)
		}
		cmd.Wait()
		t.Logf("round %d: %d writes acknowledged before the kill, one in flight: %v", round, acks, inFlight != nil)

		s, err := OpenFileStore(dir)
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		snap := s.Snapshot()
		seen := map[Key]bool{}
		for _, kind := range []string{VirtualService, DestinationRule} {
			for _, o := range snap.List(kind) {
				k := o.Key()
				seen[k] = true
				if inFlight != nil && k == *inFlight {
					// Done or not: adopt what the disk says.
					state[k] = o.Meta.ResourceVersion
					continue
				}
				if want, ok := state[k]; !ok {
					t.Fatalf("%s is on disk but its last acknowledged write deleted it (or never created it)", k)
				} else if o.Meta.ResourceVersion != want {
					t.Fatalf("%s: resourceVersion %s, acknowledged %s", k, o.Meta.ResourceVersion, want)
				}
			}
		}
		for k := range state {
			if !seen[k] {
				if inFlight != nil && k == *inFlight {
					delete(state, k)
					continue
				}
				t.Fatalf("acknowledged %s lost", k)
			}
		}
		if cur, _ := strconv.ParseUint(s.ResourceVersion(), 10, 64); cur < maxRV {
			t.Fatalf("resourceVersion went back: %d < %d", cur, maxRV)
		}
		s.Close()
	}
}

func crashChild(dir string) {
	s, err := OpenFileStore(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	seed, _ := strconv.Atoi(os.Getenv("AMIME_CONFIG_CRASH_SEED"))
	r := rand.New(rand.NewSource(int64(seed)))
	w := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		w.Flush()
	}
	for i := 0; ; i++ {
		name := fmt.Sprintf("obj-%d", r.Intn(40))
		var o *Object
		if i%3 == 0 {
			o = drObject("crash", name)
			o.Spec.(*networking.DestinationRule).Subsets[0].Labels["gen"] = strconv.Itoa(i)
		} else {
			o = vsObject("crash", name, int32(r.Intn(101)))
		}
		k := o.Key()
		if cur, ok := s.Get(k); ok && r.Intn(5) == 0 {
			say("begin %s %s %s", k.Kind, k.Namespace, k.Name)
			if err := s.Delete(k, cur.Meta.ResourceVersion); err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
				os.Exit(2)
			}
			say("ack del %s %s %s %s", k.Kind, k.Namespace, k.Name, s.ResourceVersion())
			continue
		}
		say("begin %s %s %s", k.Kind, k.Namespace, k.Name)
		got, _, err := s.Apply(o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		say("ack put %s %s %s %s", got.Kind, got.Meta.Namespace, got.Meta.Name, got.Meta.ResourceVersion)
	}
}
