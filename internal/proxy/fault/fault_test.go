package fault

import (
	"math/rand/v2"
	"testing"
	"time"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestCompile(t *testing.T) {
	m := &faultv3.HTTPFault{
		Delay: &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(time.Second)},
			Percentage:         &typev3.FractionalPercent{Numerator: 250000, Denominator: typev3.FractionalPercent_MILLION},
		},
		Abort: &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14},
			Percentage: &typev3.FractionalPercent{Numerator: 10},
		},
	}
	a, _ := anypb.New(m)
	c, err := Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Delay: time.Second, DelayOn: Percent{250000, 1_000_000}, HTTPStatus: 200, GRPCStatus: 14, AbortOn: Percent{10, 100}}
	if *c != want {
		t.Errorf("%+v, want %+v", *c, want)
	}
	// Envoy's proto rules: an HTTP abort status must be 200..599.
	if _, err := Compile(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 99}}}); err == nil {
		t.Error("http_status 99 accepted")
	}
	// No percentage: never (the proto default, 0%).
	c, _ = Compile(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}}})
	if d := c.Decide(rand.New(rand.NewPCG(1, 2))); d.HTTPStatus != 0 {
		t.Errorf("abort without percentage: %+v", d)
	}
}

func TestDecideFractions(t *testing.T) {
	c := &Config{Delay: time.Millisecond, DelayOn: Percent{1, 4}, HTTPStatus: 503, GRPCStatus: -1, AbortOn: Percent{300000, 1_000_000}}
	rng := rand.New(rand.NewPCG(7, 8))
	const n = 100000
	delays, aborts := 0, 0
	for i := 0; i < n; i++ {
		d := c.Decide(rng)
		if d.Delay > 0 {
			delays++
		}
		if d.HTTPStatus == 503 {
			aborts++
		}
	}
	if delays < n/4-1500 || delays > n/4+1500 || aborts < n*3/10-1500 || aborts > n*3/10+1500 {
		t.Errorf("%d delays (want ~25%%), %d aborts (want ~30%%) of %d", delays, aborts, n)
	}
	if !(Percent{200, 100}).Hit(99) || (Percent{0, 100}).Hit(0) {
		t.Error("a numerator above the denominator means always; 0 never")
	}
}
