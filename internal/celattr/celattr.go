// Package celattr compiles and evaluates CEL expressions over Envoy's
// request attributes (request.*, response.*, connection.*, upstream.*,
// source.*, destination.*, xds.*), the language of Istio's Telemetry
// accessLogging filter and Envoy's CEL access log filter. The control
// plane compiles an expression to validate it; the proxy evaluates it.
package celattr

import (
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/interpreter"
)

// Roots are the attribute groups Envoy defines. Each is a map from
// attribute name to value, so that an attribute a proxy does not fill
// fails only the expressions that use it (as in Envoy, where a missing
// attribute is an evaluation error and the filter does not match).
var roots = []string{"request", "response", "connection", "upstream", "source", "destination", "xds", "filter_state", "metadata"}

// Expr is a compiled boolean expression.
type Expr struct {
	src  string
	prog cel.Program
}

func env() (*cel.Env, error) {
	opts := make([]cel.EnvOption, 0, len(roots))
	for _, r := range roots {
		opts = append(opts, cel.Variable(r, cel.MapType(cel.StringType, cel.DynType)))
	}
	return cel.NewEnv(opts...)
}

// Compile parses and type-checks expr, which must be boolean.
func Compile(expr string) (*Expr, error) {
	e, err := env()
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	ast, iss := e.Compile(expr)
	if iss.Err() != nil {
		// CEL adds lines pointing at the column; the column is already in
		// the first line, and errors here are one line per problem.
		msg, _, _ := strings.Cut(iss.Err().Error(), "\n")
		return nil, fmt.Errorf("invalid expression %q: %s", expr, msg)
	}
	if t := ast.OutputType(); t != cel.BoolType && t != cel.DynType {
		return nil, fmt.Errorf("invalid expression %q: evaluates to %s, want bool", expr, t)
	}
	prog, err := e.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("invalid expression %q: %w", expr, err)
	}
	return &Expr{src: expr, prog: prog}, nil
}

// String returns the source expression.
func (x *Expr) String() string { return x.src }

// Resolver gives the attribute group named root ("request", "response",
// …), or false when the proxy has none for it. It is called only for the
// groups the expression uses.
type Resolver func(root string) (map[string]any, bool)

// Match evaluates the expression. An evaluation error (a missing
// attribute, a type mismatch) or a non-boolean result is false, as in
// Envoy's CEL filter.
func (x *Expr) Match(r Resolver) bool {
	out, _, err := x.prog.Eval(activation(r))
	if err != nil {
		return false
	}
	b, ok := out.Value().(bool)
	return ok && b
}

type activation Resolver

func (a activation) ResolveName(name string) (any, bool) { return a(name) }
func (a activation) Parent() interpreter.Activation      { return nil }
