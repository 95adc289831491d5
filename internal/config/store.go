package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
)

// Store errors; returned wrapped with the object's key.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrConflict      = errors.New("conflict")
	ErrClosed        = errors.New("store is closed")
)

// EventType says what happened to an object.
type EventType int

// Event types.
const (
	Added EventType = iota + 1
	Modified
	Deleted
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "Added"
	case Modified:
		return "Modified"
	case Deleted:
		return "Deleted"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one change, delivered to subscribers in commit order.
type Event struct {
	Type EventType
	// Object is the new state; for Deleted, the last state carrying the
	// resourceVersion of the deletion.
	Object *Object
	// Old is the previous state for Modified and Deleted.
	Old *Object
}

// Op is what a write did to one object, in kubectl's words.
type Op string

// Ops.
const (
	OpCreated    Op = "created"
	OpConfigured Op = "configured"
	OpUnchanged  Op = "unchanged"
	OpDeleted    Op = "deleted"
)

// Result is the outcome of a write for one object.
type Result struct {
	Object *Object
	Op     Op
}

// persister makes changes durable before the store acknowledges them.
type persister interface {
	// commit records puts and deletes; rv is the store's resourceVersion
	// after them. When it fails, partial reports whether the disk may
	// already hold part of the change.
	commit(puts, deletes []*Object, rv uint64) (partial bool, err error)
	close() error
}

// Store holds Istio objects in memory, optionally persisted. It is safe for
// concurrent use. Objects it returns are shared and never modified
// afterwards (every write stores a fresh copy): callers must not modify
// them either.
type Store struct {
	// writeMu serialises writers, and is held across disk I/O so that
	// readers (mu) are only blocked while a change is installed in memory.
	writeMu sync.Mutex

	mu     sync.RWMutex
	kinds  map[string]*kindSet
	rv     uint64 // global resourceVersion, like etcd's revision
	snap   *Snapshot
	subs   map[*Subscription]struct{}
	closed bool
	failed error // set when the disk may disagree with memory

	backend persister
	now     func() time.Time
}

// kindSet holds the objects of one kind. Once a Snapshot shares it, it is
// frozen and the next write copies it: snapshots cost O(kinds), and a
// write after a snapshot costs one copy of the kind's map.
type kindSet struct {
	objs   map[Key]*Object
	frozen bool // guarded by Store.mu

	once   sync.Once // builds sorted, only once frozen
	sorted []*Object
}

func (ks *kindSet) list() []*Object {
	ks.once.Do(func() {
		ks.sorted = sortedObjects(ks.objs)
	})
	return ks.sorted
}

func sortedObjects(m map[Key]*Object) []*Object {
	out := make([]*Object, 0, len(m))
	for _, o := range m {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b *Object) int {
		if c := strings.Compare(a.Meta.Namespace, b.Meta.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Meta.Name, b.Meta.Name)
	})
	return out
}

// NewStore returns an empty in-memory store.
func NewStore() *Store {
	return &Store{
		kinds: map[string]*kindSet{},
		subs:  map[*Subscription]struct{}{},
		now:   time.Now,
	}
}

// Close releases the store's resources (the data directory lock) and stops
// all subscriptions. Later writes fail with ErrClosed.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs := s.subs
	s.subs = map[*Subscription]struct{}{}
	s.mu.Unlock()
	for sub := range subs {
		sub.halt()
	}
	if s.backend != nil {
		return s.backend.close()
	}
	return nil
}

// ResourceVersion returns the store's current resourceVersion.
func (s *Store) ResourceVersion() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return strconv.FormatUint(s.rv, 10)
}

// Get returns the object with key k.
func (s *Store) Get(k Key) (*Object, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.getLocked(k)
	return o, ok
}

func (s *Store) getLocked(k Key) (*Object, bool) {
	ks := s.kinds[k.Kind]
	if ks == nil {
		return nil, false
	}
	o, ok := ks.objs[k]
	return o, ok
}

// List returns the objects of kind in namespace ("" for all namespaces),
// ordered by namespace then name.
func (s *Store) List(kind, namespace string) []*Object {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ks := s.kinds[kind]
	if ks == nil {
		return nil
	}
	return filterNamespace(sortedObjects(ks.objs), namespace)
}

func filterNamespace(list []*Object, ns string) []*Object {
	if ns == "" {
		return list
	}
	out := list[:0:0]
	for _, o := range list {
		if o.Meta.Namespace == ns {
			out = append(out, o)
		}
	}
	return out
}

// Snapshot is an immutable, consistent view of a store at one
// resourceVersion.
type Snapshot struct {
	rv    uint64
	kinds map[string]*kindSet
}

// Snapshot returns the current state. It is cheap: nothing is copied until
// the next write.
func (s *Store) Snapshot() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Store) snapshotLocked() *Snapshot {
	if s.snap != nil {
		return s.snap
	}
	kinds := make(map[string]*kindSet, len(s.kinds))
	for k, ks := range s.kinds {
		ks.frozen = true
		kinds[k] = ks
	}
	s.snap = &Snapshot{rv: s.rv, kinds: kinds}
	return s.snap
}

// ResourceVersion is the store's resourceVersion when the snapshot was taken.
func (sn *Snapshot) ResourceVersion() string { return strconv.FormatUint(sn.rv, 10) }

// List returns the objects of kind, ordered by namespace then name. The
// slice is the caller's; the objects are shared and read-only.
func (sn *Snapshot) List(kind string) []*Object {
	ks := sn.kinds[kind]
	if ks == nil {
		return nil
	}
	return slices.Clone(ks.list())
}

// ListNamespace returns the objects of kind in namespace.
func (sn *Snapshot) ListNamespace(kind, namespace string) []*Object {
	ks := sn.kinds[kind]
	if ks == nil {
		return nil
	}
	return filterNamespace(slices.Clone(ks.list()), namespace)
}

// Get returns the object with key k.
func (sn *Snapshot) Get(k Key) (*Object, bool) {
	ks := sn.kinds[k.Kind]
	if ks == nil {
		return nil, false
	}
	o, ok := ks.objs[k]
	return o, ok
}

// Len returns the number of objects.
func (sn *Snapshot) Len() int {
	n := 0
	for _, ks := range sn.kinds {
		n += len(ks.objs)
	}
	return n
}

// ---- writes ----

type writeMode int

const (
	modeApply   writeMode = iota // create or replace; resourceVersion is a precondition
	modeCreate                   // must not exist
	modeUpdate                   // must exist; resourceVersion is a precondition
	modeReplace                  // create or replace; resourceVersion ignored (sync from a source of truth)
)

// change is one staged write.
type change struct {
	key Key
	old *Object // nil when created
	new *Object // nil when deleted
	op  Op
}

// Apply creates obj or replaces the stored object's spec, labels and
// annotations (server-side apply of the whole object). When obj carries a
// resourceVersion, it must match the stored one (optimistic concurrency).
// Applying identical content is a no-op that keeps the resourceVersion.
func (s *Store) Apply(obj *Object) (stored *Object, created bool, err error) {
	res, err := s.write([]*Object{obj}, modeApply, false)
	if err != nil {
		return nil, false, err
	}
	return res[0].Object, res[0].Op == OpCreated, nil
}

// Create stores a new object; it fails with ErrAlreadyExists if the key is taken.
func (s *Store) Create(obj *Object) (*Object, error) {
	res, err := s.write([]*Object{obj}, modeCreate, false)
	if err != nil {
		return nil, err
	}
	return res[0].Object, nil
}

// Update replaces an existing object; it fails with ErrNotFound if there is none.
func (s *Store) Update(obj *Object) (*Object, error) {
	res, err := s.write([]*Object{obj}, modeUpdate, false)
	if err != nil {
		return nil, err
	}
	return res[0].Object, nil
}

// ApplyAll applies objs as one batch: all are validated first, and either
// every object is applied or none is.
func (s *Store) ApplyAll(objs []*Object) ([]Result, error) {
	return s.write(objs, modeApply, false)
}

// DryRun reports what ApplyAll(objs) would do, changing nothing. The
// returned objects carry no resourceVersion.
func (s *Store) DryRun(objs []*Object) ([]Result, error) {
	return s.write(objs, modeApply, true)
}

// ReplaceAll makes the store hold exactly objs among the objects owned
// reports true for (nil: every object): objs are applied ignoring their
// resourceVersion, owned objects not in objs are deleted. It is atomic, like
// ApplyAll, and meant for syncing from a source of truth such as WatchDir.
func (s *Store) ReplaceAll(objs []*Object, owned func(*Object) bool) ([]Result, error) {
	if err := validateAll(objs); err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	if err := s.writableLocked(); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	st := newStaging(s)
	var errs []error
	for _, o := range objs {
		if _, err := st.stage(o, modeReplace); err != nil {
			errs = append(errs, err)
		}
	}
	keep := make(map[Key]bool, len(objs))
	for _, o := range objs {
		keep[o.Key()] = true
	}
	for _, kind := range sortedKeys(s.kinds) {
		for _, o := range sortedObjects(s.kinds[kind].objs) {
			if !keep[o.Key()] && (owned == nil || owned(o)) {
				st.stageDelete(o)
			}
		}
	}
	s.mu.RUnlock()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s.commit(st, false)
}

// Delete removes the object with key k. When resourceVersion is not empty
// it must match the stored one.
func (s *Store) Delete(k Key, resourceVersion string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	if err := s.writableLocked(); err != nil {
		s.mu.RUnlock()
		return err
	}
	cur, ok := s.getLocked(k)
	s.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%s: %w", k, ErrNotFound)
	}
	if resourceVersion != "" && resourceVersion != cur.Meta.ResourceVersion {
		return conflictError(k, resourceVersion, cur.Meta.ResourceVersion)
	}
	st := newStaging(s)
	st.stageDelete(cur)
	_, err := s.commit(st, false)
	return err
}

func conflictError(k Key, got, current string) error {
	if current == "" {
		return fmt.Errorf("%s: %w: resourceVersion %q was given but the object does not exist", k, ErrConflict, got)
	}
	return fmt.Errorf("%s: %w: the object has been modified (resourceVersion %q, current %q); get the latest version and try again", k, ErrConflict, got, current)
}

func validateAll(objs []*Object) error {
	var errs []error
	for _, o := range objs {
		if err := Validate(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Store) writableLocked() error {
	if s.closed {
		return ErrClosed
	}
	if s.failed != nil {
		return fmt.Errorf("store needs reopening after a disk error: %w", s.failed)
	}
	return nil
}

func (s *Store) write(objs []*Object, mode writeMode, dryRun bool) ([]Result, error) {
	if err := validateAll(objs); err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	if err := s.writableLocked(); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	st := newStaging(s)
	var errs []error
	for _, o := range objs {
		if _, err := st.stage(o, mode); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.RUnlock()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s.commit(st, dryRun)
}

// staging computes a batch against the store's state plus the batch's
// earlier changes. Only writers (holding writeMu) stage, so the state
// cannot change underneath.
type staging struct {
	s       *Store
	rv      uint64
	now     time.Time
	overlay map[Key]*Object // nil value: deleted in this batch
	changes []change
}

func newStaging(s *Store) *staging {
	return &staging{s: s, rv: s.rv, now: s.now().UTC().Truncate(time.Second), overlay: map[Key]*Object{}}
}

func (st *staging) current(k Key) *Object {
	if o, ok := st.overlay[k]; ok {
		return o
	}
	o, _ := st.s.getLocked(k)
	return o
}

func (st *staging) stage(obj *Object, mode writeMode) (*Object, error) {
	k := obj.Key()
	cur := st.current(k)
	switch {
	case mode == modeCreate && cur != nil:
		return nil, fmt.Errorf("%s: %w", k, ErrAlreadyExists)
	case mode == modeUpdate && cur == nil:
		return nil, fmt.Errorf("%s: %w", k, ErrNotFound)
	}
	if rv := obj.Meta.ResourceVersion; rv != "" && mode != modeReplace {
		if cur == nil {
			return nil, conflictError(k, rv, "")
		}
		if rv != cur.Meta.ResourceVersion {
			return nil, conflictError(k, rv, cur.Meta.ResourceVersion)
		}
	}
	apiVersion := obj.APIVersion
	if apiVersion == "" {
		ki, _ := kindByName(obj.Kind)
		apiVersion = ki.Group + "/" + ki.Versions[len(ki.Versions)-1]
	}
	if cur != nil && cur.APIVersion == apiVersion && proto.Equal(cur.Spec, obj.Spec) &&
		mapsEqual(cur.Meta.Labels, obj.Meta.Labels) && mapsEqual(cur.Meta.Annotations, obj.Meta.Annotations) {
		st.changes = append(st.changes, change{key: k, old: cur, new: cur, op: OpUnchanged})
		return cur, nil
	}
	st.rv++
	n := &Object{
		APIVersion: apiVersion,
		Kind:       obj.Kind,
		Meta: Meta{
			Name:            obj.Meta.Name,
			Namespace:       obj.Meta.Namespace,
			Labels:          cloneMap(obj.Meta.Labels),
			Annotations:     cloneMap(obj.Meta.Annotations),
			ResourceVersion: strconv.FormatUint(st.rv, 10),
		},
		// A copy, so that the caller may keep modifying obj.
		Spec: proto.Clone(obj.Spec),
	}
	op := OpCreated
	if cur == nil {
		n.Meta.Generation = 1
		n.Meta.CreationTimestamp = st.now
	} else {
		op = OpConfigured
		n.Meta.Generation = cur.Meta.Generation
		if !proto.Equal(cur.Spec, obj.Spec) {
			n.Meta.Generation++
		}
		n.Meta.CreationTimestamp = cur.Meta.CreationTimestamp
	}
	st.overlay[k] = n
	st.changes = append(st.changes, change{key: k, old: cur, new: n, op: op})
	return n, nil
}

func (st *staging) stageDelete(cur *Object) {
	st.rv++
	st.overlay[cur.Key()] = nil
	st.changes = append(st.changes, change{key: cur.Key(), old: cur, op: OpDeleted})
}

func mapsEqual(a, b map[string]string) bool {
	return len(a) == len(b) && maps.Equal(a, b)
}

// commit persists a staged batch and installs it. Called with writeMu held.
func (s *Store) commit(st *staging, dryRun bool) ([]Result, error) {
	results := make([]Result, 0, len(st.changes))
	for _, c := range st.changes {
		o := c.new
		if c.op == OpDeleted {
			o = c.old
		}
		results = append(results, Result{Object: o, Op: c.op})
	}
	if dryRun {
		for i, r := range results {
			if r.Op == OpCreated || r.Op == OpConfigured {
				c := *r.Object
				c.Meta.ResourceVersion = ""
				results[i].Object = &c
			}
		}
		return results, nil
	}
	if st.rv == st.s.rv {
		return results, nil // nothing changed
	}
	if s.backend != nil {
		var puts, deletes []*Object
		for _, k := range sortedKeyList(st.overlay) {
			if o := st.overlay[k]; o != nil {
				puts = append(puts, o)
			} else if cur, ok := s.getLockedRead(k); ok {
				deletes = append(deletes, cur)
			}
		}
		if partial, err := s.backend.commit(puts, deletes, st.rv); err != nil {
			if partial {
				s.mu.Lock()
				s.failed = err
				s.mu.Unlock()
			}
			return nil, fmt.Errorf("persist: %w", err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var events []Event
	for _, c := range st.changes {
		switch c.op {
		case OpCreated, OpConfigured:
			ks := s.writableKind(c.key.Kind)
			ks.objs[c.key] = c.new
			typ := Added
			if c.op == OpConfigured {
				typ = Modified
			}
			events = append(events, Event{Type: typ, Object: c.new, Old: c.old})
		case OpDeleted:
			ks := s.writableKind(c.key.Kind)
			delete(ks.objs, c.key)
			last := *c.old
			last.Meta.ResourceVersion = strconv.FormatUint(st.rv, 10)
			events = append(events, Event{Type: Deleted, Object: &last, Old: c.old})
		}
	}
	s.rv = st.rv
	s.snap = nil
	for sub := range s.subs {
		sub.enqueue(events)
	}
	return results, nil
}

// getLockedRead reads the committed state; only writers call it, and
// writers are the only ones changing that state.
func (s *Store) getLockedRead(k Key) (*Object, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.getLocked(k)
}

func sortedKeyList(m map[Key]*Object) []Key {
	keys := make([]Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b Key) int {
		return strings.Compare(a.Kind+"/"+a.Namespace+"/"+a.Name, b.Kind+"/"+b.Namespace+"/"+b.Name)
	})
	return keys
}

// writableKind returns the kind's set, copying it first if a snapshot
// shares it. Called with mu held for writing.
func (s *Store) writableKind(kind string) *kindSet {
	ks := s.kinds[kind]
	switch {
	case ks == nil:
		ks = &kindSet{objs: map[Key]*Object{}}
		s.kinds[kind] = ks
	case ks.frozen:
		ks = &kindSet{objs: maps.Clone(ks.objs)}
		s.kinds[kind] = ks
	}
	return ks
}

// ---- subscriptions ----

// Subscription delivers events to one callback, in order, from its own
// goroutine: a slow subscriber never blocks writers or other subscribers
// (its queue grows instead).
type Subscription struct {
	s       *Store
	fn      func(Event)
	mu      sync.Mutex
	cond    *sync.Cond
	q       []Event
	stopped bool
	done    chan struct{}
}

// Subscribe calls fn for every change committed after it returns, and
// returns the state just before the first such change, so that a consumer
// can start from the snapshot without missing or repeating anything.
// fn may call the store.
func (s *Store) Subscribe(fn func(Event)) (*Snapshot, *Subscription) {
	sub := &Subscription{s: s, fn: fn, done: make(chan struct{})}
	sub.cond = sync.NewCond(&sub.mu)
	s.mu.Lock()
	snap := s.snapshotLocked()
	if s.closed {
		s.mu.Unlock()
		sub.stopped = true
		close(sub.done)
		return snap, sub
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	go sub.run()
	return snap, sub
}

// Stop ends the subscription and drops undelivered events. A callback
// already running finishes; no other starts. Stop may be called from the
// callback. Done is closed once the delivery goroutine has exited.
func (sub *Subscription) Stop() {
	sub.s.mu.Lock()
	delete(sub.s.subs, sub)
	sub.s.mu.Unlock()
	sub.halt()
}

func (sub *Subscription) halt() {
	sub.mu.Lock()
	sub.stopped = true
	sub.q = nil
	sub.cond.Broadcast()
	sub.mu.Unlock()
}

// Done is closed when the subscription's goroutine has exited.
func (sub *Subscription) Done() <-chan struct{} { return sub.done }

func (sub *Subscription) enqueue(evs []Event) {
	sub.mu.Lock()
	if !sub.stopped {
		sub.q = append(sub.q, evs...)
		sub.cond.Signal()
	}
	sub.mu.Unlock()
}

func (sub *Subscription) run() {
	defer close(sub.done)
	for {
		sub.mu.Lock()
		for len(sub.q) == 0 && !sub.stopped {
			sub.cond.Wait()
		}
		if sub.stopped {
			sub.mu.Unlock()
			return
		}
		ev := sub.q[0]
		sub.q[0] = Event{}
		sub.q = sub.q[1:]
		sub.mu.Unlock()
		sub.fn(ev)
	}
}
