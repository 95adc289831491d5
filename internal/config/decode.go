package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang/protobuf/jsonpb"        //nolint:staticcheck // istio.io/api's own codec: accepts Go durations ("30ms") as Istio does
	protov1 "github.com/golang/protobuf/proto" //nolint:staticcheck // jsonpb takes v1 messages
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"
)

// DefaultNamespace is where objects without metadata.namespace land, as
// with kubectl.
const DefaultNamespace = "default"

// DecodeOptions tunes Decode.
type DecodeOptions struct {
	// DefaultNamespace is used for objects without metadata.namespace;
	// "" means "default".
	DefaultNamespace string
	// Validate runs Validate on every decoded object, so that semantic
	// errors also name the document they come from.
	Validate bool
}

// DocumentError is a problem in one document of a multi-document input.
// Index counts non-empty documents from 1.
type DocumentError struct {
	Index int
	Err   error
}

func (e *DocumentError) Error() string {
	return prefixLines(fmt.Sprintf("document %d: ", e.Index), e.Err.Error())
}

func (e *DocumentError) Unwrap() error { return e.Err }

// prefixLines prefixes every line of s, so that multi-problem errors keep
// their context on each line.
func prefixLines(prefix, s string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// Decode reads Istio resources from multi-document YAML or JSON, with the
// default options.
func Decode(data []byte) ([]*Object, error) {
	return DecodeOptions{}.Decode(data)
}

// Decode reads Istio resources from multi-document YAML ("---" separated)
// or JSON (one or more values; a top-level array is a list of objects).
// Empty documents are skipped; "kind: List" documents contribute their
// items. Either every object is returned, or none and an error listing the
// problem of every bad document.
func (opts DecodeOptions) Decode(data []byte) ([]*Object, error) {
	docs, err := splitInput(data)
	if err != nil {
		return nil, err
	}
	var objs []*Object
	var errs []error
	for i, d := range docs {
		if d.err != nil {
			errs = append(errs, &DocumentError{Index: i + 1, Err: d.err})
			continue
		}
		got, err := opts.decodeDocument(d.json)
		if err != nil {
			errs = append(errs, &DocumentError{Index: i + 1, Err: err})
			continue
		}
		objs = append(objs, got...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return objs, nil
}

type document struct {
	json []byte
	err  error
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// splitInput returns the non-empty documents of data as JSON.
func splitInput(data []byte) ([]document, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return splitJSON(trimmed)
	}
	var docs []document
	for _, chunk := range splitYAML(data) {
		j, err := yaml.YAMLToJSONStrict(chunk.data)
		if err != nil {
			// Report lines of the whole input, not of the document.
			msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(m string) string {
				n, _ := strconv.Atoi(m[len("line "):])
				return "line " + strconv.Itoa(n+chunk.line-1)
			})
			msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
			// One line per problem: yaml.v2 spreads some errors over several.
			lines := strings.Split(msg, "\n")
			for i := range lines {
				lines[i] = strings.TrimSpace(lines[i])
			}
			msg = strings.Join(lines, " ")
			docs = append(docs, document{err: errors.New(msg)})
			continue
		}
		if isNull(j) {
			continue
		}
		docs = append(docs, document{json: j})
	}
	return docs, nil
}

func isNull(j []byte) bool {
	j = bytes.TrimSpace(j)
	return len(j) == 0 || string(j) == "null"
}

type yamlChunk struct {
	data []byte
	line int // first line of the chunk in the input, from 1
}

// splitYAML cuts at "---" lines (optionally followed by a comment).
func splitYAML(data []byte) []yamlChunk {
	var chunks []yamlChunk
	start, startLine, line := 0, 1, 1
	for pos := 0; pos <= len(data); {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		l := strings.TrimRight(string(data[pos:end]), " \t\r")
		if rest, ok := strings.CutPrefix(l, "---"); ok && (rest == "" || strings.HasPrefix(strings.TrimLeft(rest, " \t"), "#") && rest[0] != '-') {
			chunks = append(chunks, yamlChunk{data: data[start:pos], line: startLine})
			start, startLine = end+1, line+1
		}
		pos = end + 1
		line++
	}
	if start < len(data) {
		chunks = append(chunks, yamlChunk{data: data[start:], line: startLine})
	}
	return chunks
}

func splitJSON(data []byte) ([]document, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var docs []document
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			// The stream cannot be resynchronised after a syntax error.
			docs = append(docs, document{err: fmt.Errorf("invalid JSON: %w", err)})
			return docs, nil
		}
		if isNull(raw) {
			continue
		}
		if raw[0] == '[' {
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				docs = append(docs, document{err: fmt.Errorf("invalid JSON: %w", err)})
				continue
			}
			for _, it := range items {
				docs = append(docs, document{json: it})
			}
			continue
		}
		docs = append(docs, document{json: raw})
	}
}

// decodeDocument decodes one document: an object or a List of objects.
func (opts DecodeOptions) decodeDocument(j []byte) ([]*Object, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, fmt.Errorf("a document must be an object (apiVersion, kind, metadata, spec): %w", err)
	}
	var kind string
	if raw, ok := top["kind"]; !ok {
		return nil, errors.New("kind is required")
	} else if err := json.Unmarshal(raw, &kind); err != nil {
		return nil, errors.New("kind must be a string")
	}
	if kind == "List" || strings.HasSuffix(kind, "List") && top["items"] != nil {
		var items []json.RawMessage
		if err := json.Unmarshal(top["items"], &items); err != nil {
			return nil, errors.New("items must be a list of objects")
		}
		var objs []*Object
		var errs []error
		for i, it := range items {
			o, err := opts.decodeObject(it)
			if err != nil {
				errs = append(errs, prefixError(fmt.Sprintf("items[%d]: ", i), err))
				continue
			}
			objs = append(objs, o)
		}
		return objs, errors.Join(errs...)
	}
	o, err := opts.decodeObject(j)
	if err != nil {
		return nil, err
	}
	return []*Object{o}, nil
}

type prefixedError struct {
	prefix string
	err    error
}

func (e *prefixedError) Error() string { return prefixLines(e.prefix, e.err.Error()) }
func (e *prefixedError) Unwrap() error { return e.err }

func prefixError(prefix string, err error) error { return &prefixedError{prefix: prefix, err: err} }

func (opts DecodeOptions) decodeObject(j []byte) (*Object, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, fmt.Errorf("an object must be a mapping (apiVersion, kind, metadata, spec): %w", err)
	}
	var kind, apiVersion string
	if raw, ok := top["kind"]; !ok {
		return nil, errors.New("kind is required")
	} else if json.Unmarshal(raw, &kind) != nil {
		return nil, errors.New("kind must be a string")
	}
	ki, ok := kindByName(kind)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (want one of %s)", kind, kindList())
	}
	o := &Object{Kind: kind}
	verr := &ValidationError{Kind: kind}
	if raw, ok := top["metadata"]; ok {
		decodeMeta(raw, &o.Meta, verr)
	}
	if o.Meta.Namespace == "" {
		o.Meta.Namespace = opts.DefaultNamespace
		if o.Meta.Namespace == "" {
			o.Meta.Namespace = DefaultNamespace
		}
	}
	verr.Namespace, verr.Name = o.Meta.Namespace, o.Meta.Name
	add := func(field, format string, args ...any) {
		verr.Errors = append(verr.Errors, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	for _, k := range sortedKeys(top) {
		switch k {
		case "apiVersion", "kind", "metadata", "spec":
		case "status":
			// Written by controllers; kept out so "get -o yaml | apply" works.
		default:
			add(k, "unknown field %q", k)
		}
	}
	if raw, ok := top["apiVersion"]; !ok {
		add("apiVersion", "is required")
	} else if json.Unmarshal(raw, &apiVersion) != nil {
		add("apiVersion", "must be a string")
	} else if r := checkAPIVersion(ki, apiVersion); r != "" {
		add("apiVersion", "%s", r)
	}
	o.APIVersion = apiVersion
	o.Spec = ki.New()
	if raw, ok := top["spec"]; ok && !isNull(raw) {
		decodeSpec(raw, o.Spec, verr)
	}
	if len(verr.Errors) > 0 {
		return nil, verr
	}
	if opts.Validate {
		if err := Validate(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// decodeMeta reads the ObjectMeta fields amime keeps and tolerates the
// server-populated ones, so that "kubectl get -o yaml" output applies.
func decodeMeta(raw json.RawMessage, m *Meta, verr *ValidationError) {
	add := func(field, format string, args ...any) {
		verr.Errors = append(verr.Errors, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		add("metadata", "must be an object")
		return
	}
	str := func(k string, dst *string) {
		if raw, ok := fields[k]; ok && !isNull(raw) {
			if json.Unmarshal(raw, dst) != nil {
				add("metadata."+k, "must be a string")
			}
		}
	}
	strMap := func(k string) map[string]string {
		raw, ok := fields[k]
		if !ok || isNull(raw) {
			return nil
		}
		var generic map[string]any
		if json.Unmarshal(raw, &generic) != nil {
			add("metadata."+k, "must be a map of strings")
			return nil
		}
		out := make(map[string]string, len(generic))
		for _, key := range sortedKeys(generic) {
			s, ok := generic[key].(string)
			if !ok {
				add(string(fpath("metadata."+k).k(key)), "must be a string, got %s", describe(generic[key]))
				continue
			}
			out[key] = s
		}
		return out
	}
	for _, k := range sortedKeys(fields) {
		switch k {
		case "name":
			str(k, &m.Name)
		case "namespace":
			str(k, &m.Namespace)
		case "resourceVersion":
			str(k, &m.ResourceVersion)
		case "labels":
			m.Labels = strMap(k)
		case "annotations":
			m.Annotations = strMap(k)
		case "generation":
			if raw := fields[k]; !isNull(raw) && json.Unmarshal(raw, &m.Generation) != nil {
				add("metadata.generation", "must be an integer")
			}
		case "creationTimestamp":
			var s string
			str(k, &s)
			if s != "" {
				t, err := time.Parse(time.RFC3339, s)
				if err != nil {
					add("metadata.creationTimestamp", "invalid timestamp %q: want RFC 3339", s)
				}
				m.CreationTimestamp = t
			}
		case "uid", "selfLink", "managedFields", "finalizers", "ownerReferences",
			"deletionTimestamp", "deletionGracePeriodSeconds":
			// Server-populated in Kubernetes; meaningless here.
		case "generateName":
			add("metadata.generateName", "not supported: set metadata.name")
		default:
			add("metadata", "unknown field %q", k)
		}
	}
}

// specUnmarshaler is istio.io/api's JSON codec, made strict.
var specUnmarshaler = jsonpb.Unmarshaler{AllowUnknownFields: false}

func decodeSpec(raw json.RawMessage, spec proto.Message, verr *ValidationError) {
	decodeMessage(raw, spec, "spec", verr)
}

// decodeMessage decodes raw into msg strictly, naming fields from root.
func decodeMessage(raw json.RawMessage, spec proto.Message, root fpath, verr *ValidationError) {
	// First a schema pass, which names the exact field of every problem
	// (jsonpb only reports the first one, without a path) and catches what
	// jsonpb lets through: several members of a oneof, nulls in lists.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		verr.Errors = append(verr.Errors, FieldError{Field: string(root), Reason: err.Error()})
		return
	}
	v := &validator{}
	checkMessage(v, spec.ProtoReflect().Descriptor(), generic, root)
	if len(v.errs) > 0 {
		verr.Errors = append(verr.Errors, v.errs...)
		return
	}
	if err := specUnmarshaler.Unmarshal(bytes.NewReader(raw), protov1.MessageV1(spec)); err != nil {
		verr.Errors = append(verr.Errors, FieldError{Field: string(root), Reason: err.Error()})
	}
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + x.String()
	case float64:
		return "number " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

var wrapperTypes = map[protoreflect.FullName]bool{
	"google.protobuf.BoolValue": true, "google.protobuf.StringValue": true, "google.protobuf.BytesValue": true,
	"google.protobuf.Int32Value": true, "google.protobuf.UInt32Value": true,
	"google.protobuf.Int64Value": true, "google.protobuf.UInt64Value": true,
	"google.protobuf.FloatValue": true, "google.protobuf.DoubleValue": true,
}

// checkMessage checks a JSON value against a message type as jsonpb will
// read it.
func checkMessage(v *validator, md protoreflect.MessageDescriptor, val any, p fpath) {
	switch name := md.FullName(); {
	case name == "google.protobuf.Duration":
		s, ok := val.(string)
		if !ok {
			v.add(p, "expected a duration such as \"5s\" or \"100ms\", got %s", describe(val))
		} else if _, err := time.ParseDuration(s); err != nil {
			v.add(p, "invalid duration %q: want a number with a unit, such as 5s, 100ms or 1m30s", s)
		}
		return
	case name == "google.protobuf.Timestamp":
		s, ok := val.(string)
		if !ok {
			v.add(p, "expected an RFC 3339 timestamp, got %s", describe(val))
		} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			v.add(p, "invalid timestamp %q: want RFC 3339", s)
		}
		return
	case wrapperTypes[name]:
		checkScalar(v, md.Fields().ByNumber(1), val, p)
		return
	case strings.HasPrefix(string(name), "google.protobuf."):
		return // Struct, Value, Any...: free-form
	}
	obj, ok := val.(map[string]any)
	if !ok {
		v.add(p, "expected an object, got %s", describe(val))
		return
	}
	fields := md.Fields()
	given := map[protoreflect.FieldNumber]string{}
	oneofs := map[int][]string{}
	for _, key := range sortedKeys(obj) {
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(key))
		}
		if fd == nil {
			v.add(p, "unknown field %q", key)
			continue
		}
		if prev, dup := given[fd.Number()]; dup {
			v.add(p, "field given twice, as %q and %q", prev, key)
			continue
		}
		given[fd.Number()] = key
		fv := obj[key]
		if fv == nil {
			continue // null leaves the field unset
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			oneofs[od.Index()] = append(oneofs[od.Index()], key)
		}
		checkField(v, fd, fv, p.f(key))
	}
	idx := make([]int, 0, len(oneofs))
	for i := range oneofs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		if keys := oneofs[i]; len(keys) > 1 {
			// jsonpb would silently keep the last one.
			v.add(p, "only one of %s may be set", quoteList(keys))
		}
	}
}

func quoteList(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = strconv.Quote(k)
	}
	return strings.Join(q, ", ")
}

func checkField(v *validator, fd protoreflect.FieldDescriptor, val any, p fpath) {
	switch {
	case fd.IsMap():
		obj, ok := val.(map[string]any)
		if !ok {
			v.add(p, "expected a map, got %s", describe(val))
			return
		}
		for _, k := range sortedKeys(obj) {
			kp := p.k(k)
			if kk := fd.MapKey().Kind(); kk != protoreflect.StringKind {
				checkScalar(v, fd.MapKey(), json.Number(k), kp)
			}
			if obj[k] == nil {
				v.add(kp, "must not be null")
				continue
			}
			checkValue(v, fd.MapValue(), obj[k], kp)
		}
	case fd.IsList():
		arr, ok := val.([]any)
		if !ok {
			v.add(p, "expected a list, got %s", describe(val))
			return
		}
		for i, e := range arr {
			if e == nil {
				v.add(p.i(i), "must not be null")
				continue
			}
			checkValue(v, fd, e, p.i(i))
		}
	default:
		checkValue(v, fd, val, p)
	}
}

func checkValue(v *validator, fd protoreflect.FieldDescriptor, val any, p fpath) {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		checkMessage(v, fd.Message(), val, p)
		return
	}
	checkScalar(v, fd, val, p)
}

func checkScalar(v *validator, fd protoreflect.FieldDescriptor, val any, p fpath) {
	integer := func(bits int, signed bool) {
		var s string
		switch x := val.(type) {
		case json.Number:
			s = x.String()
		case string:
			s = x // proto3 JSON allows quoted integers
		default:
			v.add(p, "expected an integer, got %s", describe(val))
			return
		}
		var err error
		if signed {
			_, err = strconv.ParseInt(s, 10, bits)
		} else {
			_, err = strconv.ParseUint(s, 10, bits)
		}
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				v.add(p, "%s is out of range for %s", s, fd.Kind())
			} else {
				v.add(p, "expected an integer, got %s", describe(val))
			}
		}
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if _, ok := val.(bool); !ok {
			v.add(p, "expected true or false, got %s", describe(val))
		}
	case protoreflect.StringKind:
		if _, ok := val.(string); !ok {
			v.add(p, "expected a string, got %s", describe(val))
		}
	case protoreflect.BytesKind:
		s, ok := val.(string)
		if !ok {
			v.add(p, "expected base64 data, got %s", describe(val))
		} else if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			v.add(p, "invalid base64 data")
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		integer(32, true)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		integer(64, true)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		integer(32, false)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		integer(64, false)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		switch x := val.(type) {
		case json.Number:
			if f, err := x.Float64(); err != nil || fd.Kind() == protoreflect.FloatKind && math.Abs(f) > math.MaxFloat32 {
				v.add(p, "%s is out of range for %s", x, fd.Kind())
			}
		case string:
			if x != "NaN" && x != "Infinity" && x != "-Infinity" {
				if _, err := strconv.ParseFloat(x, 64); err != nil {
					v.add(p, "expected a number, got %s", describe(val))
				}
			}
		default:
			v.add(p, "expected a number, got %s", describe(val))
		}
	case protoreflect.EnumKind:
		switch x := val.(type) {
		case string:
			if fd.Enum().Values().ByName(protoreflect.Name(x)) == nil {
				v.add(p, "unknown value %q (want one of %s)", x, enumNames(fd.Enum()))
			}
		case json.Number:
			if _, err := strconv.ParseInt(x.String(), 10, 32); err != nil {
				v.add(p, "unknown value %s (want one of %s)", x, enumNames(fd.Enum()))
			}
		default:
			v.add(p, "expected one of %s, got %s", enumNames(fd.Enum()), describe(val))
		}
	}
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	names := make([]string, vals.Len())
	for i := range names {
		names[i] = string(vals.Get(i).Name())
	}
	return strings.Join(names, ", ")
}

// ---- encoding ----

var specMarshaler = jsonpb.Marshaler{}

type wireMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp string            `json:"creationTimestamp,omitempty"`
}

type wireObject struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   wireMeta        `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// Encode renders o as kubectl does: apiVersion, kind, metadata, spec.
// format is "yaml" or "json". An empty APIVersion is written as the kind's
// newest version.
func Encode(o *Object, format string) ([]byte, error) {
	if format != "yaml" && format != "json" {
		return nil, fmt.Errorf("encode %s: unknown format %q (want yaml or json)", o.Key(), format)
	}
	ki, ok := kindByName(o.Kind)
	if !ok {
		return nil, fmt.Errorf("encode %s: unknown kind %q", o.Key(), o.Kind)
	}
	w := wireObject{
		APIVersion: o.APIVersion,
		Kind:       o.Kind,
		Metadata: wireMeta{
			Name:            o.Meta.Name,
			Namespace:       o.Meta.Namespace,
			Labels:          o.Meta.Labels,
			Annotations:     o.Meta.Annotations,
			ResourceVersion: o.Meta.ResourceVersion,
			Generation:      o.Meta.Generation,
		},
		Spec: json.RawMessage("{}"),
	}
	if w.APIVersion == "" {
		w.APIVersion = ki.Group + "/" + ki.Versions[len(ki.Versions)-1]
	}
	if !o.Meta.CreationTimestamp.IsZero() {
		w.Metadata.CreationTimestamp = o.Meta.CreationTimestamp.UTC().Format(time.RFC3339)
	}
	if o.Spec != nil {
		s, err := specMarshaler.MarshalToString(protov1.MessageV1(o.Spec))
		if err != nil {
			return nil, fmt.Errorf("encode %s: spec: %w", o.Key(), err)
		}
		w.Spec = json.RawMessage(s)
	}
	j, err := json.MarshalIndent(w, "", "    ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.Key(), err)
	}
	if format == "json" {
		return append(j, '\n'), nil
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.Key(), err)
	}
	return y, nil
}
