// Package fieldcheck rejects configuration that sets fields the proxy does
// not implement. Envoy's API is large; a proxy that silently ignored a field
// it does not support would behave differently from what the operator asked
// for, so every set field must be on an allow-list, and the error names the
// field path the way Envoy reports config errors.
package fieldcheck

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// All allows every field of a message and of the messages below it.
const All = "*"

// Rules maps a message's full name to the fields (proto names) the proxy
// implements. A message listed with All is accepted whole. Messages in the
// google.protobuf package (wrappers, Duration, Struct, …) are accepted whole
// unless listed.
type Rules map[protoreflect.FullName][]string

// Error is a field the proxy does not implement.
type Error struct {
	Path   string // e.g. "virtual_hosts[0].routes[2].route.retry_policy"
	Reason string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// Check walks every set field of m and returns the first one not allowed by
// r, in field-number order so the report is stable. Any fields are unpacked
// with the global registry and checked as their embedded type.
func (r Rules) Check(m proto.Message) error {
	return r.check(m.ProtoReflect(), "")
}

func (r Rules) check(m protoreflect.Message, path string) error {
	desc := m.Descriptor()
	if desc.FullName() == "google.protobuf.Any" {
		return r.checkAny(m, path)
	}
	allowed, listed := r[desc.FullName()]
	if !listed && desc.ParentFile().Package() == "google.protobuf" {
		return nil
	}
	if !listed {
		return &Error{Path: path, Reason: fmt.Sprintf("%s is not supported by amime", desc.FullName())}
	}
	if len(allowed) == 1 && allowed[0] == All {
		return nil
	}
	var set []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		set = append(set, fd)
		return true
	})
	sort.Slice(set, func(i, j int) bool { return set[i].Number() < set[j].Number() })
	for _, fd := range set {
		p := join(path, string(fd.Name()))
		if !contains(allowed, string(fd.Name())) {
			return &Error{Path: p, Reason: "field is not supported by amime"}
		}
		if err := r.checkValue(fd, m.Get(fd), p); err != nil {
			return err
		}
	}
	return nil
}

func (r Rules) checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch {
	case fd.IsList():
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return nil
		}
		l := v.List()
		for i := 0; i < l.Len(); i++ {
			if err := r.check(l.Get(i).Message(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case fd.IsMap():
		if fd.MapValue().Kind() != protoreflect.MessageKind {
			return nil
		}
		var err error
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			err = r.check(mv.Message(), fmt.Sprintf("%s[%q]", path, k.String()))
			return err == nil
		})
		return err
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		return r.check(v.Message(), path)
	}
	return nil
}

func (r Rules) checkAny(m protoreflect.Message, path string) error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		a = &anypb.Any{}
		proto.Merge(a, m.Interface())
	}
	name := a.GetTypeUrl()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
	if err != nil {
		return &Error{Path: path, Reason: fmt.Sprintf("type %q is not supported by amime", a.GetTypeUrl())}
	}
	if _, listed := r[mt.Descriptor().FullName()]; !listed {
		return &Error{Path: path, Reason: fmt.Sprintf("type %q is not supported by amime", a.GetTypeUrl())}
	}
	inner := mt.New().Interface()
	if err := proto.Unmarshal(a.GetValue(), inner); err != nil {
		return &Error{Path: path, Reason: fmt.Sprintf("decode %s: %v", name, err)}
	}
	return r.check(inner.ProtoReflect(), path)
}

// Merge returns the union of several rule sets, so each package can own the
// rules for the part of the API it implements.
func Merge(sets ...Rules) Rules {
	out := Rules{}
	for _, s := range sets {
		for k, v := range s {
			out[k] = append(out[k], v...)
		}
	}
	return out
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s || x == All {
			return true
		}
	}
	return false
}
