package config

import (
	"math/rand"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// fill sets every field of m, recursively to depth, to random values:
// empty or populated sub-messages, list and map entries, random scalars and
// enum numbers (including ones outside the enum). Validate must survive
// anything a decoder (or a Go caller) can produce.
func fill(r *rand.Rand, m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if r.Intn(3) == 0 {
			continue
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for n := r.Intn(3); n > 0; n-- {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					if depth > 0 {
						fill(r, e.Message(), depth-1)
					}
					l.Append(e)
				} else {
					l.Append(scalar(r, fd))
				}
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for n := r.Intn(3); n > 0; n-- {
				k := scalar(r, fd.MapKey()).MapKey()
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					v := mp.NewValue()
					if depth > 0 {
						fill(r, v.Message(), depth-1)
					}
					mp.Set(k, v)
				} else {
					mp.Set(k, scalar(r, fd.MapValue()))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			sub := m.Mutable(fd).Message()
			if depth > 0 {
				fill(r, sub, depth-1)
			}
		default:
			m.Set(fd, scalar(r, fd))
		}
	}
}

func scalar(r *rand.Rand, fd protoreflect.FieldDescriptor) protoreflect.Value {
	strs := []string{"", "*", "a", "a.b.com", "10.0.0.1", "10.0.0.0/8", "unix:///x", "ns/a.com", "%", "((", "STRICT", "Bad Name"}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(r.Intn(2) == 0)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strs[r.Intn(len(strs))])
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("x"))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(r.Intn(200000) - 100000))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(r.Intn(200000) - 100000))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(r.Intn(100000)))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(r.Intn(10000000)))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(r.NormFloat64() * 100))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(r.NormFloat64() * 100)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(r.Intn(8)))
	}
	panic(fd.Kind().String())
}

func TestValidateNeverPanics(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, ki := range Kinds() {
		for i := 0; i < 300; i++ {
			spec := ki.New()
			fill(r, spec.ProtoReflect(), 4)
			o := &Object{Kind: ki.Kind, Meta: Meta{Name: "x", Namespace: "default"}, Spec: spec}
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("%s: Validate panicked: %v\nspec: %v", ki.Kind, p, spec)
					}
				}()
				Validate(o)
			}()
		}
	}
}
