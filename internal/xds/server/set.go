package server

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one xDS resource as the server sends it: serialized once,
// whatever the number of proxies it goes to.
type Resource struct {
	Name string
	// Version fingerprints the serialized form: the per-resource version
	// of delta xDS, and how the server tells which resources of a type
	// changed.
	Version string
	Any     *anypb.Any
	sum     uint64 // of Any.Value
}

// Set is an immutable list of resources of one type, serialized and
// fingerprinted when it is made. Proxies that have the same resources
// should share one Set: the server then marshals, hashes and holds them
// once for all of them, and compares them between pushes by fingerprint.
type Set struct {
	id      uint64
	typeURL string
	items   []*Resource // sorted by name
	hash    uint64
	// refs are the EDS and RDS names the set's clusters and listeners
	// reference, for the consistency check; nil when there are none.
	refs map[resourcev3.Type][]string
}

var setIDs atomic.Uint64

// NewSet serializes resources of typeURL. Names must be unique. The
// messages are not kept: the caller may reuse or drop them.
func NewSet(typeURL resourcev3.Type, resources []types.Resource) (*Set, error) {
	return newSet(typeURL, resources, nil)
}

func newSet(typeURL resourcev3.Type, resources []types.Resource, in *Interner) (*Set, error) {
	s := &Set{id: setIDs.Add(1), typeURL: typeURL, items: make([]*Resource, 0, len(resources))}
	h := xxhash.New()
	var buf [8]byte
	for _, r := range resources {
		if got := resourcev3.Type("type.googleapis.com/" + string(proto.MessageName(r))); got != typeURL {
			return nil, fmt.Errorf("%s in a set of %s", got, typeURL)
		}
		res, err := in.resource(typeURL, r)
		if err != nil {
			return nil, err
		}
		s.items = append(s.items, res)
	}
	slices.SortFunc(s.items, func(a, b *Resource) int { return strings.Compare(a.Name, b.Name) })
	for i, r := range s.items {
		if i > 0 && s.items[i-1].Name == r.Name {
			return nil, fmt.Errorf("%s %q twice", shortType(typeURL), r.Name)
		}
		// Names and contents, so that moving content between names counts.
		_, _ = h.WriteString(r.Name)
		_, _ = h.Write([]byte{0})
		binary.LittleEndian.PutUint64(buf[:], r.sum)
		_, _ = h.Write(buf[:])
	}
	s.hash = h.Sum64()
	if typeURL == resourcev3.ClusterType || typeURL == resourcev3.ListenerType {
		var err error
		if s.refs, err = references(resources); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func marshal(typeURL resourcev3.Type, r types.Resource) (*Resource, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", cachev3.GetResourceName(r), err)
	}
	sum := xxhash.Sum64(b)
	return &Resource{Name: cachev3.GetResourceName(r), Version: strconv.FormatUint(sum, 36), Any: &anypb.Any{TypeUrl: typeURL, Value: b}, sum: sum}, nil
}

// Interner makes sets of messages that other sets contain too (as
// translate.Shared hands the same cluster and endpoint messages to every
// view): each message is serialized once, and the same list of messages
// gives the same Set, which proxies then share, in memory and in the
// server's per-set caches. It holds the messages: use one per generation
// of them (a push). Safe for concurrent use.
type Interner struct {
	mu   sync.Mutex
	res  map[types.Resource]*Resource
	sets map[uint64][]internedSet // by the hash of the message pointers
	prev *Interner                // the generation before (see Next)
}

type internedSet struct {
	resources []types.Resource
	set       *Set
}

// NewInterner returns an empty Interner.
func NewInterner() *Interner {
	return &Interner{res: map[types.Resource]*Resource{}, sets: map[uint64][]internedSet{}}
}

// Next returns the Interner of the next generation of messages: it
// reuses what this one serialized for the messages still in use, and this
// one is let go when Next is called on the new one.
func (in *Interner) Next() *Interner {
	in.mu.Lock()
	in.prev = nil
	in.mu.Unlock()
	n := NewInterner()
	n.prev = in
	return n
}

func (in *Interner) lookupSet(key uint64, typeURL resourcev3.Type, resources []types.Resource) *Set {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, is := range in.sets[key] {
		if is.set.typeURL == typeURL && slices.Equal(is.resources, resources) {
			return is.set
		}
	}
	return nil
}

// NewSet is NewSet, sharing what it can with the sets made before.
func (in *Interner) NewSet(typeURL resourcev3.Type, resources []types.Resource) (*Set, error) {
	h := xxhash.New()
	_, _ = h.WriteString(typeURL)
	var buf [8]byte
	for _, r := range resources {
		binary.LittleEndian.PutUint64(buf[:], uint64(reflect.ValueOf(r).Pointer()))
		_, _ = h.Write(buf[:])
	}
	key := h.Sum64()
	if s := in.lookupSet(key, typeURL, resources); s != nil {
		return s, nil
	}
	in.mu.Lock()
	prev := in.prev
	in.mu.Unlock()
	s := (*Set)(nil)
	if prev != nil {
		s = prev.lookupSet(key, typeURL, resources)
	}
	if s == nil {
		var err error
		if s, err = newSet(typeURL, resources, in); err != nil {
			return nil, err
		}
	}
	in.mu.Lock()
	in.sets[key] = append(in.sets[key], internedSet{resources: slices.Clone(resources), set: s})
	in.mu.Unlock()
	return s, nil
}

// resource serializes a message, once per Interner.
func (in *Interner) resource(typeURL resourcev3.Type, r types.Resource) (*Resource, error) {
	if in == nil {
		return marshal(typeURL, r)
	}
	in.mu.Lock()
	res, prev := in.res[r], in.prev
	in.mu.Unlock()
	if res != nil {
		return res, nil
	}
	if prev != nil {
		prev.mu.Lock()
		res = prev.res[r]
		prev.mu.Unlock()
	}
	if res == nil {
		var err error
		if res, err = marshal(typeURL, r); err != nil {
			return nil, err
		}
	}
	in.mu.Lock()
	in.res[r] = res
	in.mu.Unlock()
	return res, nil
}

// MustSet is NewSet for resources known to marshal (tests).
func MustSet(typeURL resourcev3.Type, resources ...types.Resource) *Set {
	s, err := NewSet(typeURL, resources)
	if err != nil {
		panic(err)
	}
	return s
}

// Len is the number of resources.
func (s *Set) Len() int { return len(s.items) }

// Resources lists the set's resources, sorted by name (read-only).
func (s *Set) Resources() []*Resource { return s.items }

// Fingerprint identifies the set's content: names and serialized forms.
func (s *Set) Fingerprint() uint64 { return s.hash }

// get finds a resource by name.
func (s *Set) get(name string) *Resource {
	i, ok := slices.BinarySearchFunc(s.items, name, func(r *Resource, n string) int { return strings.Compare(r.Name, n) })
	if !ok {
		return nil
	}
	return s.items[i]
}

// references lists what clusters and listeners name in other types, as
// go-control-plane's consistency check does, also following the RDS
// names of api_listeners, which it does not see: proxyless gRPC views
// consist of them.
func references(resources []types.Resource) (map[resourcev3.Type][]string, error) {
	byName := make(map[string]types.ResourceWithTTL, len(resources))
	for _, r := range resources {
		byName[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: r}
	}
	refs := cachev3.GetResourceReferences(byName)
	for _, r := range resources {
		l, ok := r.(*listenerv3.Listener)
		a := l.GetApiListener().GetApiListener()
		if !ok || a == nil || !a.MessageIs(&hcmv3.HttpConnectionManager{}) {
			continue
		}
		m := &hcmv3.HttpConnectionManager{}
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("listener %q: api_listener: %w", l.GetName(), err)
		}
		if name := m.GetRds().GetRouteConfigName(); name != "" {
			if refs[resourcev3.RouteType] == nil {
				refs[resourcev3.RouteType] = map[string]bool{}
			}
			refs[resourcev3.RouteType][name] = true
		}
	}
	var out map[resourcev3.Type][]string
	for t, names := range refs {
		if len(names) == 0 {
			continue
		}
		if out == nil {
			out = map[resourcev3.Type][]string{}
		}
		for n := range names {
			out[t] = append(out[t], n)
		}
		slices.Sort(out[t])
	}
	return out, nil
}

// Config is one proxy's configuration: for each type, the sets whose union
// it is. A name appears in at most one set of a type.
type Config map[resourcev3.Type][]*Set

// hash fingerprints a type's resources, a function of the sets' contents.
func (c Config) hash(t resourcev3.Type) uint64 {
	h := xxhash.New()
	var buf [8]byte
	for _, s := range c[t] {
		binary.LittleEndian.PutUint64(buf[:], s.hash)
		_, _ = h.Write(buf[:])
	}
	return h.Sum64()
}

// consistencyKey identifies the sets the consistency check reads: those
// of EDS and RDS, and those of CDS and LDS that reference anything (a
// proxy's own inbound sets do not, so proxies of one view share a key).
func (c Config) consistencyKey() string {
	var b []byte
	for _, t := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		for _, s := range c[t] {
			if (t == resourcev3.ClusterType || t == resourcev3.ListenerType) && s.refs == nil {
				continue
			}
			b = strconv.AppendUint(b, s.id, 36)
			b = append(b, ',')
		}
		b = append(b, '|')
	}
	return string(b)
}

// consistent checks that every load assignment and route configuration
// is named by a cluster or listener, and every one they name is there.
func (c Config) consistent() error {
	for _, pair := range [][2]resourcev3.Type{{resourcev3.ClusterType, resourcev3.EndpointType}, {resourcev3.ListenerType, resourcev3.RouteType}} {
		named := map[string]bool{}
		for _, s := range c[pair[0]] {
			for _, n := range s.refs[pair[1]] {
				named[n] = true
			}
		}
		have := 0
		for _, s := range c[pair[1]] {
			for _, r := range s.items {
				if !named[r.Name] {
					return fmt.Errorf("%s %q is not referenced", shortType(pair[1]), r.Name)
				}
				have++
			}
		}
		if have != len(named) {
			for n := range named {
				if c.get(pair[1], n) == nil {
					return fmt.Errorf("%s %q is referenced but missing", shortType(pair[1]), n)
				}
			}
		}
	}
	return nil
}

func (c Config) get(t resourcev3.Type, name string) *Resource {
	for _, s := range c[t] {
		if r := s.get(name); r != nil {
			return r
		}
	}
	return nil
}
