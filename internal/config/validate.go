package config

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// FieldError is one problem found in an object: the field path, written
// with the JSON names the user wrote (spec.http[0].route[1].weight), and
// why it is rejected.
type FieldError struct {
	Field  string
	Reason string
}

// ValidationError lists every problem found in one object, so that a user
// fixes a file in one round trip instead of one error at a time.
type ValidationError struct {
	Kind      string
	Namespace string
	Name      string
	Errors    []FieldError
}

// Error renders one line per problem: "Kind ns/name: field: reason".
func (e *ValidationError) Error() string {
	ref := objectRef(e.Kind, e.Namespace, e.Name)
	var b strings.Builder
	for i, fe := range e.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(ref)
		b.WriteString(": ")
		b.WriteString(fe.Field)
		b.WriteString(": ")
		b.WriteString(fe.Reason)
	}
	return b.String()
}

func objectRef(kind, ns, name string) string {
	if name == "" {
		name = "(no name)"
	}
	if ns == "" {
		return kind + " " + name
	}
	return kind + " " + ns + "/" + name
}

// fpath is a field path under construction.
type fpath string

func (p fpath) f(name string) fpath { return p + "." + fpath(name) }
func (p fpath) i(n int) fpath       { return p + "[" + fpath(strconv.Itoa(n)) + "]" }
func (p fpath) k(key string) fpath  { return p + "[" + fpath(key) + "]" }

// each calls fn for every element of list at p.field[i], reporting a nil
// element ("must not be null") instead of passing it on.
func each[T any](v *validator, p fpath, field string, list []*T, fn func(fpath, *T)) {
	for i, x := range list {
		xp := p.f(field).i(i)
		if x == nil {
			v.add(xp, "must not be null")
			continue
		}
		fn(xp, x)
	}
}

// validator collects problems for one object.
type validator struct {
	errs []FieldError
}

func (v *validator) add(p fpath, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Field: string(p), Reason: fmt.Sprintf(format, args...)})
}

// addIf records reason when it is not empty (the check helpers return "" for valid input).
func (v *validator) addIf(p fpath, reason string) {
	if reason != "" {
		v.errs = append(v.errs, FieldError{Field: string(p), Reason: reason})
	}
}

// Validate checks o the way istiod's validation webhook does (plus the
// Kubernetes metadata rules an API server applies) and returns nil or a
// *ValidationError listing every problem.
func Validate(o *Object) error {
	if o == nil {
		return &ValidationError{Errors: []FieldError{{Field: "object", Reason: "is nil"}}}
	}
	v := &validator{}
	validateObject(v, o)
	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Kind: o.Kind, Namespace: o.Meta.Namespace, Name: o.Meta.Name, Errors: v.errs}
}

func validateObject(v *validator, o *Object) {
	ki, ok := kindByName(o.Kind)
	if !ok {
		v.add("kind", "unknown kind %q (want one of %s)", o.Kind, kindList())
		return
	}
	if o.APIVersion != "" {
		if r := checkAPIVersion(ki, o.APIVersion); r != "" {
			v.add("apiVersion", "%s", r)
		}
	}
	validateMeta(v, o)
	if o.Spec == nil {
		v.add("spec", "is required")
		return
	}
	if want := ki.New(); proto.MessageName(o.Spec) != proto.MessageName(want) {
		v.add("spec", "has type %s, want %s", proto.MessageName(o.Spec), proto.MessageName(want))
		return
	}
	ns := o.Meta.Namespace
	switch s := o.Spec.(type) {
	case *networking.VirtualService:
		validateVirtualService(v, s)
	case *networking.DestinationRule:
		validateDestinationRule(v, ns, s)
	case *networking.Gateway:
		validateGateway(v, s)
	case *networking.ServiceEntry:
		validateServiceEntry(v, ns, s)
	case *networking.WorkloadEntry:
		validateWorkloadEntry(v, "spec", s, nil, true)
	case *networking.WorkloadGroup:
		validateWorkloadGroup(v, s)
	case *networking.Sidecar:
		validateSidecar(v, s)
	case *security.PeerAuthentication:
		validatePeerAuthentication(v, s)
	case *security.RequestAuthentication:
		validateRequestAuthentication(v, s)
	case *security.AuthorizationPolicy:
		validateAuthorizationPolicy(v, s)
	case *telemetry.Telemetry:
		validateTelemetry(v, s)
	}
}

func kindByName(kind string) (KindInfo, bool) {
	for _, k := range kinds {
		if k.Kind == kind {
			return k, true
		}
	}
	return KindInfo{}, false
}

func kindList() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Kind
	}
	return strings.Join(names, ", ")
}

func checkAPIVersion(ki KindInfo, apiVersion string) string {
	group, version, ok := strings.Cut(apiVersion, "/")
	if ok && group == ki.Group {
		for _, v := range ki.Versions {
			if v == version {
				return ""
			}
		}
	}
	want := make([]string, len(ki.Versions))
	for i, v := range ki.Versions {
		want[i] = ki.Group + "/" + v
	}
	return fmt.Sprintf("%q is not served for %s (want one of %s)", apiVersion, ki.Kind, strings.Join(want, ", "))
}

// dryRunAnnotation is Istio's istio.io/dry-run, meaningful on
// AuthorizationPolicy only; istiod rejects it elsewhere.
const dryRunAnnotation = "istio.io/dry-run"

func validateMeta(v *validator, o *Object) {
	m := &o.Meta
	switch {
	case m.Name == "":
		v.add("metadata.name", "is required")
	case o.Kind == Gateway && !isK8sLabel(m.Name):
		// istiod builds names like "<ns>/<name>" and rejects dots here.
		v.add("metadata.name", "invalid name %q: a Gateway name must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters)", m.Name)
	case !isK8sSubdomain(m.Name):
		v.add("metadata.name", "invalid name %q: must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253 characters)", m.Name)
	}
	switch {
	case m.Namespace == "":
		v.add("metadata.namespace", "is required")
	case !isK8sLabel(m.Namespace):
		v.add("metadata.namespace", "invalid namespace %q: must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters)", m.Namespace)
	}
	v.labels("metadata.labels", m.Labels)
	for _, k := range sortedKeys(m.Annotations) {
		v.addIf(fpath("metadata.annotations").k(k), checkQualifiedName(k))
	}
	if val, ok := m.Annotations[dryRunAnnotation]; ok {
		p := fpath("metadata.annotations").k(dryRunAnnotation)
		ap, isAP := o.Spec.(*security.AuthorizationPolicy)
		switch {
		case !isAP:
			v.add(p, "only supported on AuthorizationPolicy")
		case ap.Action != security.AuthorizationPolicy_ALLOW && ap.Action != security.AuthorizationPolicy_DENY:
			v.add(p, "only supported with action ALLOW or DENY, got %s", ap.Action)
		default:
			if _, err := strconv.ParseBool(val); err != nil {
				v.add(p, "invalid value %q: must be true or false", val)
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// labels validates a label map (metadata labels, subset labels, ...).
func (v *validator) labels(p fpath, m map[string]string) {
	for _, k := range sortedKeys(m) {
		if k == "" {
			v.add(p, "empty label key not allowed")
			continue
		}
		v.addIf(p.k(k), checkQualifiedName(k))
		v.addIf(p.k(k), checkLabelValue(m[k]))
	}
}

// selector validates a workload selector's labels: a wildcard or an empty
// key would silently select nothing (or everything) in Istio.
func (v *validator) selector(p fpath, m map[string]string) {
	for _, k := range sortedKeys(m) {
		if k == "" {
			v.add(p, "empty label key not allowed")
			continue
		}
		if strings.Contains(k, "*") || strings.Contains(m[k], "*") {
			v.add(p.k(k), "wildcards are not supported in selectors")
			continue
		}
		v.addIf(p.k(k), checkQualifiedName(k))
		v.addIf(p.k(k), checkLabelValue(m[k]))
	}
}

// duration applies istiod's rule for every duration field: at least 1ms and
// whole milliseconds (Envoy truncates finer values, silently).
func (v *validator) duration(p fpath, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		v.add(p, "invalid duration: %v", err)
		return
	}
	dur := d.AsDuration()
	switch {
	case dur < time.Millisecond:
		v.add(p, "duration must be at least 1ms, got %s", dur)
	case dur%time.Millisecond != 0:
		v.add(p, "only durations to ms precision are supported, got %s", dur)
	}
}

func (v *validator) percent0to100(p fpath, val int32) {
	if val < 0 || val > 100 {
		v.add(p, "must be in the range 0..100, got %d", val)
	}
}

// fractionalPercent: 0, or 0.0001..100 (Envoy's smallest fraction is one
// in a million).
func (v *validator) fractionalPercent(p fpath, pc *networking.Percent) {
	if pc == nil {
		return
	}
	if pc.Value < 0 || pc.Value > 100 || (pc.Value > 0 && pc.Value < 0.0001) {
		v.add(p.f("value"), "percentage %v must be 0 or in the range 0.0001..100", pc.Value)
	}
}

func (v *validator) nonNegative(p fpath, n int32) {
	if n < 0 {
		v.add(p, "must not be negative, got %d", n)
	}
}

// maxRegexLen approximates Envoy's RE2 program-size limit, as istiod does.
const maxRegexLen = 1024

func checkRegex(re string) string {
	if re == "" {
		return "regex must not be empty"
	}
	if len(re) > maxRegexLen {
		return fmt.Sprintf("regex is too large (%d characters, max %d)", len(re), maxRegexLen)
	}
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Sprintf("invalid RE2 regex %q: %v", re, err)
	}
	return ""
}

// stringMatch validates a StringMatch. emptyOK: an empty match is
// meaningful (header/query parameter presence). emptyPrefixOK: a "" prefix
// is meaningful (uri prefix "" matches all paths).
func (v *validator) stringMatch(p fpath, m *networking.StringMatch, emptyOK, emptyPrefixOK bool) {
	if m == nil {
		return
	}
	switch t := m.MatchType.(type) {
	case nil:
		if !emptyOK {
			v.add(p, "one of exact, prefix or regex is required")
		}
	case *networking.StringMatch_Prefix:
		if t.Prefix == "" && !emptyPrefixOK {
			v.add(p.f("prefix"), "must not be empty")
		}
	case *networking.StringMatch_Regex:
		v.addIf(p.f("regex"), checkRegex(t.Regex))
	}
}

var headerNameRE = regexp.MustCompile(`^[-_A-Za-z0-9]+$`)

func checkHeaderName(name string) string {
	if name == "" {
		return "header name must not be empty"
	}
	if !headerNameRE.MatchString(name) {
		return fmt.Sprintf("invalid header name %q: must match [-_A-Za-z0-9]+", name)
	}
	return ""
}

// isJWTClaimHeader reports whether a match header key is Istio's
// "@request.auth.claims.<name>" / "@request.auth.claims[<name>]" routing form.
func isJWTClaimHeader(name string) bool {
	rest, ok := strings.CutPrefix(name, "@request.auth.claims")
	if !ok {
		return false
	}
	return strings.HasPrefix(rest, ".") && len(rest) > 1 ||
		strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") && len(rest) > 2
}

// checkHeaderValue rejects control characters and unescaped '%' (Envoy
// reads %VAR% as a substitution and NACKs a dangling one; "%%" is a literal).
func checkHeaderValue(val string) string {
	for i := 0; i < len(val); i++ {
		c := val[i]
		if c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Sprintf("invalid header value %q: control characters are not allowed", val)
		}
	}
	for i := 0; i < len(val); i++ {
		if val[i] != '%' {
			continue
		}
		if i+1 < len(val) && val[i+1] == '%' {
			i++
			continue
		}
		j := i + 1
		for j < len(val) && (val[j] >= 'A' && val[j] <= 'Z' || val[j] >= '0' && val[j] <= '9' || val[j] == '_') {
			j++
		}
		if j == i+1 {
			return fmt.Sprintf("invalid header value %q: unescaped '%%' (write %%%% for a literal percent)", val)
		}
		if j < len(val) && val[j] == '(' {
			k := strings.IndexByte(val[j:], ')')
			if k < 0 {
				return fmt.Sprintf("invalid header value %q: unterminated '(' in %%VARIABLE(...)%%", val)
			}
			j += k + 1
		}
		if j >= len(val) || val[j] != '%' {
			return fmt.Sprintf("invalid header value %q: unterminated %%VARIABLE%% (write %%%% for a literal percent)", val)
		}
		i = j
	}
	return ""
}

// headerOps validates HeaderOperations. Request add/set may target
// :authority/host (istiod turns it into an authority rewrite); nothing else
// may touch pseudo-headers or Host.
func (v *validator) headerOps(p fpath, ops *networking.Headers_HeaderOperations, request bool) {
	if ops == nil {
		return
	}
	checkSet := func(p fpath, m map[string]string) {
		for _, name := range sortedKeys(m) {
			np := p.k(name)
			switch {
			case name == "":
				v.add(p, "header name must not be empty")
				continue
			case request && isAuthorityHeader(name):
			case strings.HasPrefix(name, ":"):
				v.add(np, "pseudo-headers (\":\" prefix) cannot be modified")
			case strings.EqualFold(name, "host"):
				v.add(np, "the Host header cannot be modified here")
			}
			v.addIf(np, checkHeaderValue(m[name]))
		}
	}
	checkSet(p.f("set"), ops.Set)
	checkSet(p.f("add"), ops.Add)
	for i, name := range ops.Remove {
		rp := p.f("remove").i(i)
		switch {
		case name == "":
			v.add(rp, "header name must not be empty")
		case strings.HasPrefix(name, ":"):
			v.add(rp, "pseudo-headers (\":\" prefix) cannot be removed")
		case strings.EqualFold(name, "host"):
			v.add(rp, "the Host header cannot be removed")
		}
	}
}

func isAuthorityHeader(name string) bool {
	return strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host")
}

func (v *validator) headers(p fpath, h *networking.Headers) {
	if h == nil {
		return
	}
	v.headerOps(p.f("request"), h.Request, true)
	v.headerOps(p.f("response"), h.Response, false)
}

// exportTo validates visibility lists. "~" (visible to nobody) is only
// meaningful for ServiceEntry.
func (v *validator) exportTo(p fpath, ns string, list []string, serviceEntry, drWithSelector bool) {
	seen := map[string]bool{}
	for i, e := range list {
		ep := p.i(i)
		key := e
		if e == "." {
			key = ns
		}
		switch {
		case e == "*" || e == ".":
		case e == "~" && serviceEntry:
		case e == "~":
			v.add(ep, "\"~\" is only allowed in ServiceEntry")
			continue
		case !isK8sLabel(e):
			v.add(ep, "invalid entry %q: want \".\", \"*\" or a namespace name", e)
			continue
		}
		if seen[key] {
			v.add(ep, "duplicate entry %q", e)
		}
		seen[key] = true
	}
	if len(list) > 1 {
		if seen["*"] {
			v.add(p, "\"*\" cannot be combined with other entries")
		}
		if seen["~"] {
			v.add(p, "\"~\" cannot be combined with other entries")
		}
	}
	if drWithSelector && len(list) > 0 && (len(seen) != 1 || !seen[ns]) {
		v.add(p, "a DestinationRule with a workloadSelector can only be exported to its own namespace")
	}
}
