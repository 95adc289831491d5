package analyze

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/amime-mesh/amime/internal/config"
)

// Helpers that assemble an Input; pure, like the analyzers.

// DecodeManifests decodes local files for analysis; ns is the namespace
// of objects that name none. config.Decode is all or nothing; to analyze
// the good documents of an input with a bad one, each document is decoded
// on its own after a failure, and each bad document becomes IST0106
// findings.
func DecodeManifests(data []byte, ns string) ([]*config.Object, []Finding) {
	opts := config.DecodeOptions{DefaultNamespace: ns}
	objs, err := opts.Decode(data)
	if err == nil {
		return objs, nil
	}
	var findings []Finding
	for _, e := range unjoin(err) {
		where := "input"
		var de *config.DocumentError
		if errors.As(e, &de) {
			where = fmt.Sprintf("document %d of the -f input", de.Index)
			e = de.Err
		}
		// A List document reports each bad item.
		for _, item := range unjoin(e) {
			findings = append(findings, ValidationFindings("", "", where, item)...)
		}
	}
	objs = nil
	for _, doc := range splitDocuments(data) {
		if got, err := opts.Decode(doc); err == nil {
			objs = append(objs, got...)
		}
	}
	return objs, findings
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// splitDocuments cuts multi-document YAML at "---" lines (optionally
// followed by a comment), as config.Decode does.
func splitDocuments(data []byte) [][]byte {
	var out [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		l := strings.TrimRight(string(line), " \t\r\n")
		if rest, ok := strings.CutPrefix(l, "---"); ok && (rest == "" || strings.HasPrefix(strings.TrimLeft(rest, " \t"), "#")) {
			out = append(out, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(out, cur.Bytes())
}

// Merge applies file objects over the server's, as `amime apply` would: a
// file object replaces the server object of the same key and keeps its
// creation time (which decides precedence); new ones are created at now,
// after every existing object. It returns the keys the files define.
// File objects are modified (their creation time).
func Merge(server, files []*config.Object, now time.Time) ([]*config.Object, map[config.Key]bool) {
	byKey := map[config.Key]int{}
	out := make([]*config.Object, 0, len(server)+len(files))
	for _, o := range server {
		byKey[o.Key()] = len(out)
		out = append(out, o)
	}
	fromFile := map[config.Key]bool{}
	for _, o := range files {
		k := o.Key()
		fromFile[k] = true
		if i, ok := byKey[k]; ok {
			o.Meta.CreationTimestamp = out[i].Meta.CreationTimestamp
			out[i] = o
			continue
		}
		o.Meta.CreationTimestamp = now
		byKey[k] = len(out)
		out = append(out, o)
	}
	return out, fromFile
}

// GatewayProxiesFromStatus reads the gateway proxies from the control
// plane's /debug/proxy-status list (node ids router~… as Istio's, or
// gateway~… from `amime proxy --mode gateway`). Labels count as known only
// when the list shows the control plane reports them (some entry has a
// "labels" field) and every gateway entry has them: the control plane
// does not report them today, and an empty list proves nothing.
func GatewayProxiesFromStatus(data []byte) ([]GatewayProxy, bool, error) {
	var st []map[string]json.RawMessage
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, false, fmt.Errorf("proxy status: %w", err)
	}
	known := false
	for _, p := range st {
		if _, ok := p["labels"]; ok {
			known = true
		}
	}
	var out []GatewayProxy
	for _, p := range st {
		var id string
		_ = json.Unmarshal(p["id"], &id)
		if kind, _, _ := strings.Cut(id, "~"); kind != "router" && kind != "gateway" {
			continue
		}
		gp := GatewayProxy{ID: id}
		raw, ok := p["labels"]
		if !ok || json.Unmarshal(raw, &gp.Labels) != nil {
			known = false
		}
		out = append(out, gp)
	}
	return out, known, nil
}
