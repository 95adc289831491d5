package rbac

import (
	"fmt"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Filter is one compiled RBAC filter configuration (HTTP, network, or an
// HTTP per-route override). It is immutable and safe for concurrent use.
type Filter struct {
	name   string  // the filter's metadata namespace: HTTPName or NetworkName
	engine *Engine // nil: no rules, nothing enforced
	shadow *Engine // nil: no shadow_rules
}

// Engine returns the enforced engine, nil when the configuration has no
// rules (the filter then allows everything).
func (f *Filter) Engine() *Engine { return f.engine }

// Shadow returns the shadow engine, nil without shadow_rules.
func (f *Filter) Shadow() *Engine { return f.shadow }

// Decision is the outcome of a filter for one request or connection.
type Decision struct {
	// Deny: the HTTP filter answers DeniedStatus with DeniedBody; the
	// network filter closes the connection.
	Deny bool
	// Details is the response_code_details (HTTP) or connection
	// termination details (network) of a deny:
	// rbac_access_denied_matched_policy[<policy>|none]. "" when allowed.
	Details string
	// Policy is the enforced engine's matched policy ("" for none).
	Policy string
	// Log is set for a LOG engine: LogHint is then access_log_hint.
	Log, LogHint bool

	// Shadow is set when shadow rules were evaluated; ShadowAllowed and
	// ShadowPolicy are their result and matched policy.
	Shadow        bool
	ShadowAllowed bool
	ShadowPolicy  string

	namespace string
}

// Decide evaluates the shadow rules, then the enforced rules, for a, as
// Envoy's filters do. It does not allocate.
func (f *Filter) Decide(a *Attributes) Decision {
	d := Decision{namespace: f.name}
	if e := f.shadow; e != nil {
		i := e.match(a)
		d.Shadow, d.ShadowAllowed = true, e.allowed(i)
		if i >= 0 {
			d.ShadowPolicy = e.policies[i].name
		}
	}
	if e := f.engine; e != nil {
		i := e.match(a)
		if i >= 0 {
			d.Policy = e.policies[i].name
		}
		d.Log = e.action == Log
		d.LogHint = d.Log && i >= 0
		if !e.allowed(i) {
			d.Deny, d.Details = true, noneDetails
			if i >= 0 {
				d.Details = e.policies[i].details
			}
		}
	}
	return d
}

// Check is Decide for callers that need only the verdict.
func (f *Filter) Check(a *Attributes) (deny bool, details string) {
	d := f.Decide(a)
	return d.Deny, d.Details
}

// Metadata returns the dynamic metadata Envoy's filter emits for d: under
// the filter's name, the shadow engine's result and matched policy (when
// shadow rules ran); under CommonNamespace, access_log_hint (for a LOG
// engine). Either is nil when there is nothing to emit. It allocates: call
// it only when Shadow or Log is set and metadata is consumed.
func (d *Decision) Metadata() (filter, common *structpb.Struct) {
	if d.Shadow {
		res := EngineResultDenied
		if d.ShadowAllowed {
			res = EngineResultAllowed
		}
		filter = &structpb.Struct{Fields: map[string]*structpb.Value{
			ShadowEngineResultKey: structpb.NewStringValue(res),
		}}
		if d.ShadowPolicy != "" {
			filter.Fields[ShadowEffectivePolicyIDKey] = structpb.NewStringValue(d.ShadowPolicy)
		}
	}
	if d.Log {
		common = &structpb.Struct{Fields: map[string]*structpb.Value{
			AccessLogHintKey: structpb.NewBoolValue(d.LogHint),
		}}
	}
	return filter, common
}

// Namespace is the dynamic metadata namespace of the filter that decided
// (HTTPName or NetworkName), the key of Metadata's filter struct.
func (d *Decision) Namespace() string { return d.namespace }

// Parse decodes and compiles an envoy.filters.http.rbac configuration (the
// filter's typed_config).
func Parse(a *anypb.Any) (*Filter, error) {
	m := &rbachttpv3.RBAC{}
	if err := unpack(a, HTTPTypeURL, m); err != nil {
		return nil, err
	}
	return Compile(m)
}

// Compile checks (Rules, Envoy's proto rules) and compiles an HTTP RBAC.
func Compile(m *rbachttpv3.RBAC) (*Filter, error) {
	if err := check(m); err != nil {
		return nil, err
	}
	return compile(HTTPName, m.GetRules(), m.GetShadowRules(), "")
}

// ParsePerRoute decodes and compiles an RBACPerRoute (a
// typed_per_filter_config entry); it has route.FilterConfigParser's
// signature and returns a *Filter. The most specific entry replaces the
// filter's configuration whole, as in Envoy: a route whose RBACPerRoute
// has no rbac gets a Filter with neither rules nor shadow rules (RBAC off).
func ParsePerRoute(a *anypb.Any) (any, error) {
	m := &rbachttpv3.RBACPerRoute{}
	if err := unpack(a, HTTPPerRouteTypeURL, m); err != nil {
		return nil, err
	}
	if err := check(m); err != nil {
		return nil, err
	}
	r := m.GetRbac()
	return compile(HTTPName, r.GetRules(), r.GetShadowRules(), "rbac.")
}

// ParseNetwork decodes and compiles an envoy.filters.network.rbac
// configuration.
func ParseNetwork(a *anypb.Any) (*Filter, error) {
	m := &rbacnetv3.RBAC{}
	if err := unpack(a, NetworkTypeURL, m); err != nil {
		return nil, err
	}
	return CompileNetwork(m)
}

// CompileNetwork checks and compiles a network RBAC.
func CompileNetwork(m *rbacnetv3.RBAC) (*Filter, error) {
	if err := check(m); err != nil {
		return nil, err
	}
	return compile(NetworkName, m.GetRules(), m.GetShadowRules(), "")
}

func compile(name string, rules, shadow *rbacv3.RBAC, p string) (*Filter, error) {
	f := &Filter{name: name}
	var err error
	if rules != nil {
		if f.engine, err = NewEngine(rules, p+"rules"); err != nil {
			return nil, err
		}
	}
	if shadow != nil {
		if f.shadow, err = NewEngine(shadow, p+"shadow_rules"); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func unpack(a *anypb.Any, typeURL string, m proto.Message) error {
	if a.GetTypeUrl() != typeURL {
		return fmt.Errorf("type %q is not %s", a.GetTypeUrl(), typeURL)
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	return nil
}

// check refuses the fields amime does not implement, then applies Envoy's
// proto rules, so that an unsupported field is reported by its path
// rather than by a validation error about its content.
func check(m interface {
	proto.Message
	Validate() error
}) error {
	if err := Rules().Check(m); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	return nil
}
