package xdsclient

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
)

func TestBackoff(t *testing.T) {
	const initial, maxD = 100 * time.Millisecond, 1 * time.Second
	// Ceilings grow by doubling from initial and stay at max.
	wantCeil := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	tests := []struct {
		name  string
		randN func(n int64) int64
		want  func(ceil time.Duration) time.Duration
	}{
		{"lowest draw", func(int64) int64 { return 0 }, func(time.Duration) time.Duration { return 0 }},
		{"highest draw", func(n int64) int64 { return n - 1 }, func(c time.Duration) time.Duration { return c }},
		{"middle draw", func(n int64) int64 { return n / 2 }, func(c time.Duration) time.Duration { return (c + 1) / 2 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackoff(initial, maxD)
			b.randN = tc.randN
			for i, c := range wantCeil {
				ceil := c * time.Millisecond
				if got := b.next(); got != tc.want(ceil) {
					t.Fatalf("attempt %d: delay %v, want %v", i, got, tc.want(ceil))
				}
			}
			b.reset()
			if got := b.next(); got != tc.want(initial) {
				t.Errorf("after reset: delay %v, want %v", got, tc.want(initial))
			}
		})
	}

	t.Run("full jitter range", func(t *testing.T) {
		b := newBackoff(initial, maxD)
		seenLow, seenHigh := false, false
		for i := 0; i < 2000; i++ {
			b.attempt = 10 // ceiling = max
			d := b.next()
			if d < 0 || d > maxD {
				t.Fatalf("delay %v outside [0, %v]", d, maxD)
			}
			seenLow = seenLow || d < maxD/4
			seenHigh = seenHigh || d > 3*maxD/4
		}
		if !seenLow || !seenHigh {
			t.Errorf("delays not spread over the range (low %v, high %v)", seenLow, seenHigh)
		}
	})

	t.Run("no overflow", func(t *testing.T) {
		b := newBackoff(time.Nanosecond, time.Duration(1<<62))
		b.randN = func(n int64) int64 { return n - 1 }
		for i := 0; i < 200; i++ {
			if d := b.next(); d < 0 || d > time.Duration(1<<62) {
				t.Fatalf("attempt %d: delay %v out of bounds", i, d)
			}
		}
	})
}

func TestSotWRequestShapes(t *testing.T) {
	type step struct {
		wildcard  bool
		names     []string
		wantSend  bool
		wantNames []string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"legacy wildcard is an empty list", []step{{wildcard: true, wantSend: true}}},
		{"named", []step{{names: []string{"b", "a"}, wantSend: true, wantNames: []string{"a", "b"}}}},
		{"nothing to ask yet", []step{{names: nil, wantSend: false}}},
		{"unsubscribe all after names is an empty list", []step{
			{names: []string{"a"}, wantSend: true, wantNames: []string{"a"}},
			{names: nil, wantSend: true},
		}},
		{"wildcard after names is explicit", []step{
			{names: []string{"a"}, wantSend: true, wantNames: []string{"a"}},
			{wildcard: true, wantSend: true, wantNames: []string{"*"}},
		}},
		{"unchanged subscription sends nothing", []step{
			{names: []string{"a"}, wantSend: true, wantNames: []string{"a"}},
			{names: []string{"a"}, wantSend: false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newTypeState(EndpointType)
			st.resetStream()
			st.version, st.nonce = "v7", "n7"
			for i, s := range tc.steps {
				st.setSubscription(s.wildcard, s.names)
				req := st.sotwRequest(false)
				if (req != nil) != s.wantSend {
					t.Fatalf("step %d: sent=%v, want %v", i, req != nil, s.wantSend)
				}
				if req == nil {
					continue
				}
				if !slices.Equal(req.GetResourceNames(), s.wantNames) || req.GetVersionInfo() != "v7" || req.GetResponseNonce() != "n7" || req.GetTypeUrl() != EndpointType {
					t.Errorf("step %d: request %v", i, req)
				}
			}
		})
	}
}

func TestDeltaRequestShapes(t *testing.T) {
	type step struct {
		wildcard  bool
		names     []string
		wantSend  bool
		wantSub   []string
		wantUnsub []string
	}
	tests := []struct {
		name     string
		versions map[string]string // held before the stream starts
		steps    []step
	}{
		{"legacy wildcard sends no names", nil, []step{{wildcard: true, wantSend: true}}},
		{"initial named with versions", map[string]string{"a": "1"}, []step{
			{names: []string{"a", "b"}, wantSend: true, wantSub: []string{"a", "b"}},
		}},
		{"diffs", nil, []step{
			{names: []string{"a", "b"}, wantSend: true, wantSub: []string{"a", "b"}},
			{names: []string{"b", "c"}, wantSend: true, wantSub: []string{"c"}, wantUnsub: []string{"a"}},
			{names: []string{"b", "c"}, wantSend: false},
			{wildcard: true, wantSend: true, wantSub: []string{"*"}, wantUnsub: []string{"b", "c"}},
			{names: []string{"d"}, wantSend: true, wantSub: []string{"d"}, wantUnsub: []string{"*"}},
		}},
		{"nothing to ask yet", nil, []step{{wantSend: false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newTypeState(ClusterType)
			for n, v := range tc.versions {
				st.versions[n] = v
				st.resources[n] = &anypb.Any{}
			}
			st.resetStream()
			for i, s := range tc.steps {
				st.setSubscription(s.wildcard, s.names)
				if i == 0 && len(tc.versions) > 0 {
					// setSubscription prunes nothing here: the held names stay subscribed.
					if len(st.versions) != len(tc.versions) {
						t.Fatalf("versions pruned: %v", st.versions)
					}
				}
				req := st.deltaRequest(false)
				if (req != nil) != s.wantSend {
					t.Fatalf("step %d: sent=%v, want %v", i, req != nil, s.wantSend)
				}
				if req == nil {
					continue
				}
				if !slices.Equal(req.GetResourceNamesSubscribe(), s.wantSub) || !slices.Equal(req.GetResourceNamesUnsubscribe(), s.wantUnsub) || req.GetResponseNonce() != "" {
					t.Errorf("step %d: request %v", i, req)
				}
				if i == 0 && len(req.GetInitialResourceVersions()) != len(tc.versions) {
					t.Errorf("initial_resource_versions = %v, want %v", req.GetInitialResourceVersions(), tc.versions)
				}
			}
		})
	}
}

func TestNewValidation(t *testing.T) {
	h := newRecHandler()
	tests := []struct {
		name    string
		cfg     Config
		h       Handler
		wantErr string
	}{
		{"empty target", Config{}, h, "empty target"},
		{"nil handler", Config{Target: "x:1"}, nil, "nil handler"},
		{"max below initial", Config{Target: "x:1", InitialBackoff: time.Second, MaxBackoff: time.Millisecond}, h, "max backoff"},
		{"defaults", Config{Target: "x:1"}, h, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg, tc.h)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.cfg.InitialBackoff != DefaultInitialBackoff || c.cfg.MaxBackoff != DefaultMaxBackoff || c.cfg.Logger == nil {
				t.Errorf("defaults not applied: %+v", c.cfg)
			}
		})
	}
}

func TestWatchUnsupportedTypeIgnored(t *testing.T) {
	c, err := New(Config{Target: "x:1", Logger: testLogger(t)}, newRecHandler())
	if err != nil {
		t.Fatal(err)
	}
	c.Watch("type.googleapis.com/example.Unknown", []string{"a"})
	if len(c.Status().Types) != 0 {
		t.Errorf("unsupported type was subscribed")
	}
}

// TestRunLifecycle: Run returns ctx.Err() even with no server (while backing
// off), refuses to run twice at once, and leaves no goroutines behind.
func TestRunLifecycle(t *testing.T) {
	checkGoroutines(t)
	c := newTestClient(t, "127.0.0.1:1", false, newRecHandler()) // nothing listens on port 1
	c.Wildcard(ListenerType)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "Run to start", func() bool { return c.running.Load() })
	if err := c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second Run = %v, want an error", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if c.Status().Connected {
		t.Error("connected without a server")
	}
}
