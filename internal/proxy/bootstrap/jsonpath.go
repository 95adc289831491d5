package bootstrap

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// locate walks a JSON document beside the message descriptor md and
// returns the proto path of the first key the message does not have, or of
// the first typed config whose type is not linked into the binary. protojson
// reports such errors by line and column only; operators need the path.
func locate(js []byte, md protoreflect.MessageDescriptor) (string, bool) {
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return "", false
	}
	return walk(doc, md, "")
}

func walk(v any, md protoreflect.MessageDescriptor, path string) (string, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return "", false
	}
	if md.FullName() == "google.protobuf.Any" {
		typeURL, _ := obj["@type"].(string)
		name := typeURL[strings.LastIndexByte(typeURL, '/')+1:]
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
		if err != nil {
			return fmt.Sprintf("%s: type %q is not supported by amime", path, typeURL), true
		}
		inner := mt.Descriptor()
		if isWellKnown(inner) {
			return "", false
		}
		rest := make(map[string]any, len(obj))
		for k, x := range obj {
			if k != "@type" {
				rest[k] = x
			}
		}
		return walk(rest, inner, path)
	}
	if isWellKnown(md) {
		return "", false
	}
	fields := md.Fields()
	for _, key := range sortedKeys(obj) {
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(key))
		}
		p := joinPath(path, key)
		if fd == nil {
			return fmt.Sprintf("%s: unknown field", p), true
		}
		p = joinPath(path, string(fd.Name()))
		if fd.Message() == nil {
			continue
		}
		val := obj[key]
		switch {
		case fd.IsMap():
			m, _ := val.(map[string]any)
			if fd.MapValue().Message() == nil {
				continue
			}
			for _, k := range sortedKeys(m) {
				if r, ok := walk(m[k], fd.MapValue().Message(), fmt.Sprintf("%s[%q]", p, k)); ok {
					return r, true
				}
			}
		case fd.IsList():
			l, _ := val.([]any)
			for i, x := range l {
				if r, ok := walk(x, fd.Message(), fmt.Sprintf("%s[%d]", p, i)); ok {
					return r, true
				}
			}
		default:
			if r, ok := walk(val, fd.Message(), p); ok {
				return r, true
			}
		}
	}
	return "", false
}

// isWellKnown reports messages with their own JSON form (Duration "1s",
// wrappers as bare values, Struct as any object), which walk cannot follow.
func isWellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile().Package() == "google.protobuf" && md.FullName() != "google.protobuf.Any"
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Document order is lost in a map; sort for a stable report.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}
