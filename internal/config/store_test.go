package config

import (
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

func vsObject(ns, name string, weightV1 int32) *Object {
	route := []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: name, Subset: "v1"}, Weight: weightV1}}
	if weightV1 != 100 {
		route = append(route, &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: name, Subset: "v2"}, Weight: 100 - weightV1})
	}
	return &Object{
		APIVersion: "networking.istio.io/v1",
		Kind:       VirtualService,
		Meta:       Meta{Name: name, Namespace: ns},
		Spec: &networking.VirtualService{
			Hosts: []string{name},
			Http:  []*networking.HTTPRoute{{Route: route}},
		},
	}
}

func drObject(ns, name string) *Object {
	return &Object{
		Kind: DestinationRule,
		Meta: Meta{Name: name, Namespace: ns},
		Spec: &networking.DestinationRule{Host: name, Subsets: []*networking.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		}},
	}
}

func TestStoreApplySemantics(t *testing.T) {
	s := NewStore()
	s.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }
	in := vsObject("default", "reviews", 100)
	got, created, err := s.Apply(in)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if got.Meta.ResourceVersion != "1" || got.Meta.Generation != 1 || !got.Meta.CreationTimestamp.Equal(s.now()) {
		t.Fatalf("meta after create: %+v", got.Meta)
	}
	if got == in || got.Spec == in.Spec {
		t.Fatal("the store must keep its own copy")
	}
	// The caller's object stays the caller's.
	in.Spec.(*networking.VirtualService).Hosts[0] = "mutated"
	if got.Spec.(*networking.VirtualService).Hosts[0] != "reviews" {
		t.Fatal("mutating the applied object changed the stored one")
	}

	// Same content: no-op, resourceVersion kept.
	again, created, err := s.Apply(vsObject("default", "reviews", 100))
	if err != nil || created || again != got {
		t.Fatalf("re-apply: created=%v err=%v same=%v", created, err, again == got)
	}

	// New spec: new resourceVersion and generation.
	v2, _, err := s.Apply(vsObject("default", "reviews", 90))
	if err != nil {
		t.Fatal(err)
	}
	if v2.Meta.ResourceVersion != "2" || v2.Meta.Generation != 2 || !v2.Meta.CreationTimestamp.Equal(got.Meta.CreationTimestamp) {
		t.Fatalf("meta after update: %+v", v2.Meta)
	}
	if got.Spec.(*networking.VirtualService).Http[0].Route[0].Weight != 100 {
		t.Fatal("an object handed out earlier was modified")
	}

	// Labels only: new resourceVersion, same generation (as Kubernetes).
	lab := vsObject("default", "reviews", 90)
	lab.Meta.Labels = map[string]string{"team": "a"}
	v3, _, err := s.Apply(lab)
	if err != nil {
		t.Fatal(err)
	}
	if v3.Meta.ResourceVersion != "3" || v3.Meta.Generation != 2 || v3.Meta.Labels["team"] != "a" {
		t.Fatalf("meta after label change: %+v", v3.Meta)
	}

	// Optimistic concurrency.
	stale := vsObject("default", "reviews", 80)
	stale.Meta.ResourceVersion = "2"
	_, _, err = s.Apply(stale)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("want ErrConflict, got %v", err)
	}
	want := `VirtualService default/reviews: conflict: the object has been modified (resourceVersion "2", current "3"); get the latest version and try again`
	if err.Error() != want {
		t.Fatalf("conflict message:\n%s\nwant:\n%s", err, want)
	}
	stale.Meta.ResourceVersion = "3"
	if _, _, err := s.Apply(stale); err != nil {
		t.Fatalf("apply with the current resourceVersion: %v", err)
	}
	ghost := vsObject("default", "ghost", 100)
	ghost.Meta.ResourceVersion = "1"
	if _, _, err := s.Apply(ghost); !errors.Is(err, ErrConflict) {
		t.Fatalf("resourceVersion on a missing object: want ErrConflict, got %v", err)
	}

	// Invalid objects never reach the store.
	bad := vsObject("default", "reviews", 50)
	bad.Spec.(*networking.VirtualService).Http[0].Route[1].Weight = 40
	_, _, err = s.Apply(bad)
	var ve *ValidationError
	if !errors.As(err, &ve) || err.Error() != "VirtualService default/reviews: spec.http[0].route[1].weight: weights must sum to 100, got 90" {
		t.Fatalf("want validation error, got %v", err)
	}
	if cur, _ := s.Get(bad.Key()); cur.Meta.ResourceVersion != "4" {
		t.Fatalf("store changed by an invalid apply: %+v", cur.Meta)
	}
	if s.ResourceVersion() != "4" {
		t.Fatalf("store resourceVersion %s", s.ResourceVersion())
	}
}

func TestStoreCreateUpdateDelete(t *testing.T) {
	s := NewStore()
	if _, err := s.Create(drObject("default", "reviews")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(drObject("default", "reviews")); !errors.Is(err, ErrAlreadyExists) || err.Error() != "DestinationRule default/reviews: already exists" {
		t.Fatalf("create twice: %v", err)
	}
	if _, err := s.Update(drObject("default", "ratings")); !errors.Is(err, ErrNotFound) || err.Error() != "DestinationRule default/ratings: not found" {
		t.Fatalf("update missing: %v", err)
	}
	up := drObject("default", "reviews")
	up.Spec.(*networking.DestinationRule).Subsets = up.Spec.(*networking.DestinationRule).Subsets[:1]
	u, err := s.Update(up)
	if err != nil || u.Meta.ResourceVersion != "2" || u.APIVersion != "networking.istio.io/v1" {
		t.Fatalf("update: %v %+v", err, u)
	}
	k := Key{Kind: DestinationRule, Namespace: "default", Name: "reviews"}
	if err := s.Delete(k, "1"); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete with stale version: %v", err)
	}
	if err := s.Delete(k, "2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(k); ok {
		t.Fatal("still there after delete")
	}
	if s.ResourceVersion() != "3" {
		t.Fatalf("a delete bumps the global resourceVersion, got %s", s.ResourceVersion())
	}
	if err := s.Delete(k, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	if _, err := s.Create(drObject("default", "reviews")); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.Get(k); o.Meta.ResourceVersion != "4" || o.Meta.Generation != 1 {
		t.Fatalf("recreated: %+v", o.Meta)
	}
}

func TestStoreListOrdering(t *testing.T) {
	s := NewStore()
	for _, k := range []struct{ ns, name string }{{"b", "z"}, {"a", "y"}, {"b", "a"}, {"a", "b"}} {
		if _, _, err := s.Apply(vsObject(k.ns, k.name, 100)); err != nil {
			t.Fatal(err)
		}
	}
	names := func(objs []*Object) string {
		var out string
		for _, o := range objs {
			out += o.Meta.Namespace + "/" + o.Meta.Name + " "
		}
		return out
	}
	if got := names(s.List(VirtualService, "")); got != "a/b a/y b/a b/z " {
		t.Fatalf("List all: %s", got)
	}
	if got := names(s.List(VirtualService, "b")); got != "b/a b/z " {
		t.Fatalf("List b: %s", got)
	}
	if got := s.List(DestinationRule, ""); len(got) != 0 {
		t.Fatalf("List of an empty kind: %v", got)
	}
	snap := s.Snapshot()
	if got := names(snap.List(VirtualService)); got != "a/b a/y b/a b/z " {
		t.Fatalf("Snapshot.List: %s", got)
	}
	if got := names(snap.ListNamespace(VirtualService, "a")); got != "a/b a/y " {
		t.Fatalf("Snapshot.ListNamespace: %s", got)
	}
}

func TestStoreApplyAllIsAtomic(t *testing.T) {
	s := NewStore()
	if _, _, err := s.Apply(vsObject("default", "existing", 100)); err != nil {
		t.Fatal(err)
	}
	bad := vsObject("default", "bad", 50)
	bad.Spec.(*networking.VirtualService).Http[0].Route[1].Weight = 40
	bad2 := drObject("default", "bad-dr")
	bad2.Spec.(*networking.DestinationRule).Host = ""
	_, err := s.ApplyAll([]*Object{vsObject("default", "a", 100), bad, drObject("default", "b"), bad2})
	want := "VirtualService default/bad: spec.http[0].route[1].weight: weights must sum to 100, got 90\n" +
		"DestinationRule default/bad-dr: spec.host: is required"
	if err == nil || err.Error() != want {
		t.Fatalf("want:\n%s\ngot:\n%v", want, err)
	}
	if s.Snapshot().Len() != 1 || s.ResourceVersion() != "1" {
		t.Fatal("a failed batch changed the store")
	}

	// A conflict anywhere in the batch also aborts it.
	stale := vsObject("default", "existing", 90)
	stale.Meta.ResourceVersion = "7"
	if _, err := s.ApplyAll([]*Object{vsObject("default", "a", 100), stale}); !errors.Is(err, ErrConflict) {
		t.Fatalf("want conflict, got %v", err)
	}
	if s.Snapshot().Len() != 1 {
		t.Fatal("a conflicting batch changed the store")
	}

	res, err := s.DryRun([]*Object{vsObject("default", "a", 100), vsObject("default", "existing", 100), vsObject("default", "existing", 90)})
	if err != nil {
		t.Fatal(err)
	}
	ops := fmt.Sprint(res[0].Op, res[1].Op, res[2].Op)
	if ops != "createdunchangedconfigured" || res[0].Object.Meta.ResourceVersion != "" {
		t.Fatalf("dry run: %s %+v", ops, res[0].Object.Meta)
	}
	if s.Snapshot().Len() != 1 || s.ResourceVersion() != "1" {
		t.Fatal("dry run changed the store")
	}

	res, err = s.ApplyAll([]*Object{vsObject("default", "a", 100), drObject("default", "b"), vsObject("default", "existing", 100)})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(res[0].Op, res[1].Op, res[2].Op) != "createdcreatedunchanged" || s.ResourceVersion() != "3" {
		t.Fatalf("apply all: %v rv=%s", res, s.ResourceVersion())
	}
}

func TestStoreReplaceAll(t *testing.T) {
	s := NewStore()
	mine := func(o *Object) bool { return o.Meta.Labels["source"] == "git" }
	tag := func(o *Object) *Object { o.Meta.Labels = map[string]string{"source": "git"}; return o }
	if _, err := s.ApplyAll([]*Object{tag(vsObject("default", "a", 100)), tag(vsObject("default", "b", 100)), vsObject("default", "local", 100)}); err != nil {
		t.Fatal(err)
	}
	stale := tag(vsObject("default", "a", 90))
	stale.Meta.ResourceVersion = "999" // ignored: the source of truth wins
	res, err := s.ReplaceAll([]*Object{stale, tag(drObject("default", "c"))}, mine)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		got = append(got, string(r.Op)+" "+r.Object.Key().String())
	}
	want := "[configured VirtualService default/a created DestinationRule default/c deleted VirtualService default/b]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v\nwant %s", got, want)
	}
	if _, ok := s.Get(Key{VirtualService, "default", "local"}); !ok {
		t.Fatal("ReplaceAll deleted an object it does not own")
	}
}

func TestSnapshotIsImmutable(t *testing.T) {
	s := NewStore()
	for i := 0; i < 10; i++ {
		if _, _, err := s.Apply(vsObject("default", fmt.Sprintf("vs-%d", i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	snap := s.Snapshot()
	if s.Snapshot() != snap {
		t.Fatal("an unchanged store should hand out the same snapshot")
	}
	before := snap.List(VirtualService)
	if _, _, err := s.Apply(vsObject("default", "vs-0", 50)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(Key{VirtualService, "default", "vs-1"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Apply(drObject("default", "new")); err != nil {
		t.Fatal(err)
	}
	after := snap.List(VirtualService)
	if len(after) != 10 || snap.Len() != 10 || snap.ResourceVersion() != "10" {
		t.Fatalf("snapshot changed: %d objects, rv %s", len(after), snap.ResourceVersion())
	}
	for i := range before {
		if before[i] != after[i] {
			t.Fatal("snapshot objects changed")
		}
	}
	if o, _ := snap.Get(Key{VirtualService, "default", "vs-0"}); o.Meta.ResourceVersion != "1" {
		t.Fatalf("snapshot sees a later write: %+v", o.Meta)
	}
	if _, ok := snap.Get(Key{DestinationRule, "default", "new"}); ok {
		t.Fatal("snapshot sees a later create")
	}
	now := s.Snapshot()
	if now.Len() != 10 || now.ResourceVersion() != "13" {
		t.Fatalf("new snapshot: %d objects rv %s", now.Len(), now.ResourceVersion())
	}
	// The caller owns the returned slice.
	l := now.List(VirtualService)
	l[0] = nil
	if now.List(VirtualService)[0] == nil {
		t.Fatal("List exposed the snapshot's own slice")
	}
}

func TestSubscribe(t *testing.T) {
	s := NewStore()
	if _, _, err := s.Apply(vsObject("default", "before", 100)); err != nil {
		t.Fatal(err)
	}
	events := make(chan Event, 100)
	snap, sub := s.Subscribe(func(e Event) {
		events <- e
		// Callbacks may use the store.
		s.Get(e.Object.Key())
	})
	if snap.Len() != 1 {
		t.Fatalf("initial snapshot has %d objects", snap.Len())
	}
	s.Apply(vsObject("default", "a", 100))
	s.Apply(vsObject("default", "a", 50))
	s.Apply(vsObject("default", "a", 50)) // unchanged: no event
	s.Delete(Key{VirtualService, "default", "a"}, "")
	var got []string
	for i := 0; i < 3; i++ {
		select {
		case e := <-events:
			got = append(got, e.Type.String()+" "+e.Object.Meta.Name+" "+e.Object.Meta.ResourceVersion)
			if e.Type != Added && e.Old == nil {
				t.Errorf("%s event without the old object", e.Type)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out; got %v", got)
		}
	}
	if fmt.Sprint(got) != "[Added a 2 Modified a 3 Deleted a 4]" {
		t.Fatalf("events: %v", got)
	}
	sub.Stop()
	<-sub.Done()
	s.Apply(vsObject("default", "b", 100))
	select {
	case e := <-events:
		t.Fatalf("event after Stop: %v", e)
	case <-time.After(50 * time.Millisecond):
	}
	// Stop from inside the callback does not deadlock.
	var sub2 *Subscription
	stopped := make(chan struct{})
	_, sub2 = s.Subscribe(func(Event) { sub2.Stop(); close(stopped) })
	s.Apply(vsObject("default", "c", 100))
	<-stopped
	<-sub2.Done()
}

// Writers, readers and a subscriber race; run with -race. The subscriber
// replays events on its initial snapshot and must end with the store's
// final state, with strictly increasing resourceVersions.
func TestStoreConcurrency(t *testing.T) {
	s := NewStore()
	var mu sync.Mutex
	state := map[Key]string{}
	var lastRV uint64
	var order error
	snap, sub := s.Subscribe(func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		rv, _ := strconv.ParseUint(e.Object.Meta.ResourceVersion, 10, 64)
		if rv <= lastRV && order == nil {
			order = fmt.Errorf("resourceVersion %d after %d", rv, lastRV)
		}
		lastRV = rv
		if e.Type == Deleted {
			delete(state, e.Object.Key())
		} else {
			state[e.Object.Key()] = e.Object.Meta.ResourceVersion
		}
	})
	defer sub.Stop()
	if snap.Len() != 0 {
		t.Fatal("not empty")
	}

	const writers, ops = 6, 200
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < ops; i++ {
				name := fmt.Sprintf("vs-%d", r.Intn(20)) // shared keys across writers
				switch r.Intn(4) {
				case 0:
					s.Delete(Key{VirtualService, "default", name}, "")
				case 1:
					cur, ok := s.Get(Key{VirtualService, "default", name})
					if ok {
						o := cur.DeepCopy()
						o.Spec.(*networking.VirtualService).Http[0].Route[0].Weight = 100
						o.Spec.(*networking.VirtualService).Http[0].Route = o.Spec.(*networking.VirtualService).Http[0].Route[:1]
						_, _, err := s.Apply(o) // may conflict: that is the point
						if err != nil && !errors.Is(err, ErrConflict) {
							t.Error(err)
						}
					}
				default:
					if _, _, err := s.Apply(vsObject("default", name, int32(r.Intn(101)))); err != nil {
						t.Error(err)
					}
				}
			}
		}(w)
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for rd := 0; rd < 3; rd++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sn := s.Snapshot()
				list := sn.List(VirtualService)
				for i := 1; i < len(list); i++ {
					if list[i-1].Meta.Name >= list[i].Meta.Name {
						t.Error("unsorted snapshot")
					}
				}
				for _, o := range list {
					_ = proto.Size(o.Spec)
				}
				s.List(VirtualService, "default")
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	final := s.Snapshot()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		done := strconv.FormatUint(lastRV, 10) == final.ResourceVersion() || final.ResourceVersion() == "0"
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscriber did not catch up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if order != nil {
		t.Fatal(order)
	}
	want := map[Key]string{}
	for _, o := range final.List(VirtualService) {
		want[o.Key()] = o.Meta.ResourceVersion
	}
	if fmt.Sprint(want) != fmt.Sprint(state) {
		t.Fatalf("replayed state differs:\n%v\n%v", state, want)
	}
}

func TestStoreClose(t *testing.T) {
	s := NewStore()
	_, sub := s.Subscribe(func(Event) {})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-sub.Done()
	if _, _, err := s.Apply(vsObject("default", "a", 100)); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
}

func benchStore(b *testing.B, n int) *Store {
	s := NewStore()
	objs := make([]*Object, n)
	for i := range objs {
		objs[i] = vsObject(fmt.Sprintf("ns-%d", i%10), fmt.Sprintf("vs-%d", i), 100)
	}
	if _, err := s.ApplyAll(objs); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkApply: one changed VirtualService into a store of 1000, with a
// snapshot taken between writes (the translator's pattern), so every write
// pays the copy-on-write.
func BenchmarkApply(b *testing.B) {
	for _, withSnapshot := range []bool{false, true} {
		b.Run(fmt.Sprintf("snapshots=%v", withSnapshot), func(b *testing.B) {
			s := benchStore(b, 1000)
			objs := []*Object{vsObject("ns-0", "vs-0", 10), vsObject("ns-0", "vs-0", 20)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := s.Apply(objs[i%2]); err != nil {
					b.Fatal(err)
				}
				if withSnapshot {
					s.Snapshot()
				}
			}
		})
	}
}

// BenchmarkSnapshot: taking a snapshot of 1000 objects and listing them.
func BenchmarkSnapshot(b *testing.B) {
	s := benchStore(b, 1000)
	b.Run("take", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			s.Snapshot()
		}
	})
	b.Run("list", func(b *testing.B) {
		sn := s.Snapshot()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if len(sn.List(VirtualService)) != 1000 {
				b.Fatal("short")
			}
		}
	})
}
