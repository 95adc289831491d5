package route

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func compileRetryRoute(t *testing.T, rp *routev3.RetryPolicy) (*Retry, error) {
	t.Helper()
	ra := toCluster("c")
	ra.RetryPolicy = rp
	tbl, err := Compile(config(vhost("v", []string{"*"}, fwdRoute("r", prefixMatch("/"), ra))))
	if err != nil {
		return nil, err
	}
	return tbl.Select(get("h", "/"), 0).RetryPolicyCompiled(), nil
}

func TestRetryPolicyDefaults(t *testing.T) {
	r, err := compileRetryRoute(t, &routev3.RetryPolicy{RetryOn: "5xx, gateway-error,unavailable"})
	if err != nil {
		t.Fatal(err)
	}
	// Envoy: one retry, 25 ms base back-off, max 10x base, one re-pick.
	if r.NumRetries != 1 || r.BackOffBase != 25*time.Millisecond || r.BackOffMax != 250*time.Millisecond ||
		r.HostSelectionMaxAttempts != 1 || r.PreviousHosts || r.On != Retry5xx|RetryGatewayError|RetryGrpcUnavailable {
		t.Errorf("%+v", r)
	}
	if r, _ := compileRetryRoute(t, nil); r != nil {
		t.Errorf("no policy compiled to %+v", r)
	}
}

func TestRetryPolicyFields(t *testing.T) {
	pred, _ := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
	r, err := compileRetryRoute(t, &routev3.RetryPolicy{
		RetryOn:                       "retriable-status-codes,retriable-4xx",
		NumRetries:                    wrapperspb.UInt32(0),
		PerTryTimeout:                 durationpb.New(1500 * time.Microsecond),
		RetriableStatusCodes:          []uint32{418},
		RetryBackOff:                  &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond)},
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts", ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: pred}}},
		HostSelectionRetryMaxAttempts: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.NumRetries != 0 || r.PerTryTimeout != time.Millisecond || r.BackOffMax != 100*time.Millisecond || !r.PreviousHosts || r.HostSelectionMaxAttempts != 5 {
		t.Errorf("%+v", r)
	}
	for _, tc := range []struct {
		status, grpc int
		want         bool
	}{{418, -1, true}, {409, -1, true}, {503, -1, false}, {200, 14, false}} {
		if got := r.RetriableStatus(tc.status, tc.grpc); got != tc.want {
			t.Errorf("RetriableStatus(%d, %d) = %v", tc.status, tc.grpc, got)
		}
	}
	if r.RetriableReset(ResetConnectFailure) || r.RetriableReset(ResetOther) {
		t.Error("resets are not retried under these conditions")
	}
}

func TestRetryConditions(t *testing.T) {
	for _, tc := range []struct {
		on     string
		status int
		grpc   int
		reset  int // -1: judge the status
		want   bool
	}{
		{"5xx", 500, -1, -1, true},
		{"5xx", 404, -1, -1, false},
		{"gateway-error", 500, -1, -1, false},
		{"gateway-error", 504, -1, -1, true},
		{"gateway-error", 0, -1, ResetPerTryTimeout, true},
		{"5xx", 0, -1, ResetOther, true},
		{"reset", 0, -1, ResetConnectFailure, true},
		{"connect-failure", 0, -1, ResetConnectFailure, true},
		{"connect-failure", 0, -1, ResetOther, false},
		{"connect-failure", 0, -1, ResetPerTryTimeout, false},
		{"refused-stream", 0, -1, ResetRefusedStream, true},
		{"cancelled", 200, 1, -1, true},
		{"deadline-exceeded", 200, 4, -1, true},
		{"resource-exhausted", 200, 8, -1, true},
		{"internal", 200, 13, -1, true},
		{"unavailable", 200, 14, -1, true},
		{"unavailable", 200, 13, -1, false},
	} {
		r, err := compileRetryRoute(t, &routev3.RetryPolicy{RetryOn: tc.on})
		if err != nil {
			t.Fatal(err)
		}
		got := false
		if tc.reset >= 0 {
			got = r.RetriableReset(tc.reset)
		} else {
			got = r.RetriableStatus(tc.status, tc.grpc)
		}
		if got != tc.want {
			t.Errorf("%s: status %d grpc %d reset %d: %v, want %v", tc.on, tc.status, tc.grpc, tc.reset, got, tc.want)
		}
	}
}

func TestRetryPolicyRejected(t *testing.T) {
	other, _ := anypb.New(&routev3.RetryPolicy{})
	for _, tc := range []struct {
		rp   *routev3.RetryPolicy
		want string
	}{
		{&routev3.RetryPolicy{RetryOn: "5xx,envoy-ratelimited"}, `retry_on: retry condition "envoy-ratelimited" is not supported`},
		{&routev3.RetryPolicy{RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.omit_canary_hosts"}}}, "retry_host_predicate[0]"},
		{&routev3.RetryPolicy{RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts", ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: other}}}}, "retry_host_predicate[0]"},
	} {
		_, err := compileRetryRoute(t, tc.rp)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.rp, err, tc.want)
		}
	}
	// A virtual host's policy is checked at its own path.
	vh := vhost("v", []string{"*"}, fwdRoute("r", prefixMatch("/"), toCluster("c")))
	vh.RetryPolicy = &routev3.RetryPolicy{RetryOn: "bogus"}
	if _, err := Compile(config(vh)); err == nil || !strings.Contains(err.Error(), "virtual_hosts[0].retry_policy.retry_on") {
		t.Errorf("vhost policy: %v", err)
	}
}
