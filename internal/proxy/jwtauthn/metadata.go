package jwtauthn

import (
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// IstioAuthnFilter is the dynamic metadata namespace of the request
// authentication result in Istio's attribute form (see the package doc).
const IstioAuthnFilter = "istio_authn"

// The keys of the IstioAuthnFilter namespace.
const (
	KeyPrincipal = "request.auth.principal"
	KeyAudiences = "request.auth.audiences"
	KeyPresenter = "request.auth.presenter"
	KeyClaims    = "request.auth.claims"
	KeyRawClaims = "request.auth.raw_claims"
)

// claim walks a dotted claim path through nested objects.
func (t *jwt) claim(path []string) (any, bool) {
	raw, ok := t.claims[path[0]]
	if !ok {
		return nil, false
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, false
	}
	for _, k := range path[1:] {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// Metadata builds the dynamic metadata of a passed request, by namespace:
//
//   - Name ("envoy.filters.http.jwt_authn"): for each verified token, its
//     payload under its provider's payload_in_metadata and its JOSE header
//     under header_in_metadata, when set;
//   - IstioAuthnFilter ("istio_authn"): the first verified token in
//     Istio's request.auth.* form.
//
// It is built on demand (it allocates): call it once, and only when a
// later filter reads metadata. It is empty when no token was verified.
func (r *Result) Metadata() map[string]*structpb.Struct {
	if len(r.verified) == 0 {
		return nil
	}
	out := map[string]*structpb.Struct{}
	jwtFields := map[string]*structpb.Value{}
	for _, v := range r.verified {
		if v.p.payloadInMeta != "" {
			jwtFields[v.p.payloadInMeta] = structpb.NewStructValue(toStruct(v.t.payload))
		}
		if v.p.headerInMeta != "" {
			jwtFields[v.p.headerInMeta] = structpb.NewStructValue(toStruct(v.t.header))
		}
	}
	if len(jwtFields) > 0 {
		out[Name] = &structpb.Struct{Fields: jwtFields}
	}
	out[IstioAuthnFilter] = istioAuthn(r.verified[0].t)
	return out
}

// toStruct converts a verified JSON object (it parsed before) to a Struct.
func toStruct(b []byte) *structpb.Struct {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return &structpb.Struct{}
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		return &structpb.Struct{}
	}
	return s
}

// istioAuthn renders a token as Istio's authn filter did: claims as lists
// of strings (a string claim split on spaces, a list of strings as is,
// objects recursively, other types left out), principal iss/sub,
// audiences and presenter as the first aud and azp values.
func istioAuthn(t *jwt) *structpb.Struct {
	var payload map[string]any
	_ = json.Unmarshal(t.payload, &payload)
	claims := istioClaims(payload)
	first := func(k string) string {
		if v, ok := claims.Fields[k]; ok {
			if l := v.GetListValue().GetValues(); len(l) > 0 {
				return l[0].GetStringValue()
			}
		}
		return ""
	}
	f := map[string]*structpb.Value{
		KeyClaims:    structpb.NewStructValue(claims),
		KeyRawClaims: structpb.NewStringValue(string(t.payload)),
	}
	if iss, sub := first("iss"), first("sub"); iss != "" && sub != "" {
		f[KeyPrincipal] = structpb.NewStringValue(iss + "/" + sub)
	}
	// Istio's authorization matches request.auth.audiences with a string
	// matcher, so it is the first audience, not a list.
	if aud := first("aud"); aud != "" {
		f[KeyAudiences] = structpb.NewStringValue(aud)
	}
	if azp := first("azp"); azp != "" {
		f[KeyPresenter] = structpb.NewStringValue(azp)
	}
	return &structpb.Struct{Fields: f}
}

func istioClaims(m map[string]any) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range m {
		switch x := v.(type) {
		case string:
			var l []*structpb.Value
			for _, w := range strings.Split(x, " ") {
				if w != "" {
					l = append(l, structpb.NewStringValue(w))
				}
			}
			if len(l) > 0 {
				s.Fields[k] = structpb.NewListValue(&structpb.ListValue{Values: l})
			}
		case []any:
			l := make([]*structpb.Value, 0, len(x))
			for _, e := range x {
				str, ok := e.(string)
				if !ok {
					l = nil
					break
				}
				l = append(l, structpb.NewStringValue(str))
			}
			if len(l) > 0 {
				s.Fields[k] = structpb.NewListValue(&structpb.ListValue{Values: l})
			}
		case map[string]any:
			s.Fields[k] = structpb.NewStructValue(istioClaims(x))
		}
	}
	return s
}
