package matcher

import (
	"fmt"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

type valueKind uint8

const (
	valueNull valueKind = iota
	valueDouble
	valueString
	valueBool
	valuePresent
	valueList
	valueOr
)

// Value is a compiled envoy.type.matcher.v3.ValueMatcher.
type Value struct {
	kind   valueKind
	b      bool // bool_match, present_match
	exact  bool // double_match.exact rather than range
	lo, hi float64
	str    String
	sub    []Value // list_match.one_of (one element), or_match
}

// NewValue compiles vm; p is its field path for errors.
func NewValue(vm *matcherv3.ValueMatcher, p string) (Value, error) {
	var v Value
	switch m := vm.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		v.kind = valueNull
	case *matcherv3.ValueMatcher_DoubleMatch:
		v.kind = valueDouble
		switch d := m.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			v.exact, v.lo = true, d.Exact
		case *matcherv3.DoubleMatcher_Range:
			v.lo, v.hi = d.Range.GetStart(), d.Range.GetEnd()
		default:
			return v, errf(p+".double_match", "match_pattern is required")
		}
	case *matcherv3.ValueMatcher_StringMatch:
		v.kind = valueString
		s, err := NewString(m.StringMatch, p+".string_match")
		if err != nil {
			return v, err
		}
		v.str = s
	case *matcherv3.ValueMatcher_BoolMatch:
		v.kind, v.b = valueBool, m.BoolMatch
	case *matcherv3.ValueMatcher_PresentMatch:
		v.kind, v.b = valuePresent, m.PresentMatch
	case *matcherv3.ValueMatcher_ListMatch:
		v.kind = valueList
		one := m.ListMatch.GetOneOf()
		if one == nil {
			return v, errf(p+".list_match", "one_of is required")
		}
		sub, err := NewValue(one, p+".list_match.one_of")
		if err != nil {
			return v, err
		}
		v.sub = []Value{sub}
	case *matcherv3.ValueMatcher_OrMatch:
		v.kind = valueOr
		for i, vm := range m.OrMatch.GetValueMatchers() {
			sub, err := NewValue(vm, fmt.Sprintf("%s.or_match.value_matchers[%d]", p, i))
			if err != nil {
				return v, err
			}
			v.sub = append(v.sub, sub)
		}
	default:
		return v, errf(p, "match_pattern is required")
	}
	return v, nil
}

// Match reports whether x matches; nil stands for a value that is not
// there (Envoy's default Value, with no kind set).
func (v *Value) Match(x *structpb.Value) bool {
	switch v.kind {
	case valueNull:
		_, ok := x.GetKind().(*structpb.Value_NullValue)
		return ok
	case valueDouble:
		k, ok := x.GetKind().(*structpb.Value_NumberValue)
		if !ok {
			return false
		}
		if v.exact {
			return k.NumberValue == v.lo
		}
		return v.lo <= k.NumberValue && k.NumberValue < v.hi
	case valueString:
		k, ok := x.GetKind().(*structpb.Value_StringValue)
		return ok && v.str.Match(k.StringValue)
	case valueBool:
		k, ok := x.GetKind().(*structpb.Value_BoolValue)
		return ok && k.BoolValue == v.b
	case valuePresent:
		// present_match: false matches nothing, as in Envoy.
		return v.b && x.GetKind() != nil
	case valueList:
		k, ok := x.GetKind().(*structpb.Value_ListValue)
		if !ok {
			return false
		}
		for _, e := range k.ListValue.GetValues() {
			if v.sub[0].Match(e) {
				return true
			}
		}
		return false
	case valueOr:
		for i := range v.sub {
			if v.sub[i].Match(x) {
				return true
			}
		}
	}
	return false
}

// Metadata is a compiled envoy.type.matcher.v3.MetadataMatcher.
type Metadata struct {
	Filter string
	Path   []string
	value  Value
	invert bool
}

// NewMetadata compiles mm; p is its field path for errors.
func NewMetadata(mm *matcherv3.MetadataMatcher, p string) (Metadata, error) {
	m := Metadata{Filter: mm.GetFilter(), invert: mm.GetInvert()}
	if len(mm.GetPath()) == 0 {
		return m, errf(p+".path", "at least one path segment is required")
	}
	for i, s := range mm.GetPath() {
		k, ok := s.GetSegment().(*matcherv3.MetadataMatcher_PathSegment_Key)
		if !ok {
			return m, errf(fmt.Sprintf("%s.path[%d]", p, i), "key is required")
		}
		m.Path = append(m.Path, k.Key)
	}
	if mm.GetValue() == nil {
		return m, errf(p+".value", "value is required")
	}
	v, err := NewValue(mm.GetValue(), p+".value")
	if err != nil {
		return m, err
	}
	m.value = v
	return m, nil
}

// Match looks the value up in dynamic metadata (by filter namespace) along
// Path, as Envoy's Metadata::metadataValue does (a missing filter, key or
// a non-struct value on the way is a value that is not there), and
// applies the value matcher, inverted by invert.
func (m *Metadata) Match(md map[string]*structpb.Struct) bool {
	return m.value.Match(Lookup(md, m.Filter, m.Path)) != m.invert
}

// Lookup returns the dynamic metadata value at filter, path; nil when it is
// not there.
func Lookup(md map[string]*structpb.Struct, filter string, path []string) *structpb.Value {
	s := md[filter]
	var v *structpb.Value
	for _, key := range path {
		if s == nil {
			return nil
		}
		v = s.GetFields()[key]
		if v == nil {
			return nil
		}
		s = v.GetStructValue()
	}
	return v
}
