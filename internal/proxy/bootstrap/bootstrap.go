// Package bootstrap loads the proxy's Envoy v3 Bootstrap from a YAML or JSON
// file, strictly: unknown fields are errors (protojson names them), and the
// caller checks that every set field is one the proxy implements.
package bootstrap

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// Load reads and decodes the bootstrap file at path. YAML and JSON are both
// accepted (JSON is YAML); the extension only picks the message in errors.
func Load(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bootstrap: %w", err)
	}
	b, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", filepath.Base(path), err)
	}
	return b, nil
}

// Parse decodes a bootstrap document. Typed configs (`@type`) resolve
// against the types linked into the binary, so a filter amime does not
// know fails here with its type name.
func Parse(data []byte) (*bootstrapv3.Bootstrap, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, fmt.Errorf("empty document")
	}
	js := data
	if data[0] != '{' {
		var err error
		if js, err = yaml.YAMLToJSON(data); err != nil {
			return nil, fmt.Errorf("yaml: %w", err)
		}
	}
	if string(bytes.TrimSpace(js)) == "null" {
		// A YAML document of only comments or "---".
		return nil, fmt.Errorf("empty document")
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		if where, ok := locate(js, b.ProtoReflect().Descriptor()); ok {
			return nil, fmt.Errorf("%s", where)
		}
		// protojson prefixes its messages with "proto:" and a space that is
		// sometimes a non-breaking one.
		msg := strings.TrimLeft(strings.TrimPrefix(err.Error(), "proto:"), " \u00a0")
		return nil, fmt.Errorf("decode: %s", msg)
	}
	return b, nil
}
