package streaminfo

import "testing"

func TestFlagsString(t *testing.T) {
	for _, tc := range []struct {
		f    Flags
		want string
	}{
		{0, "-"},
		{NoRouteFound, "NR"},
		{UpstreamConnectionFailure | NoHealthyUpstream, "UH,UF"},
		{UpstreamRetryLimitExceeded | UpstreamRequestTimeout, "UT,URX"},
		{DownstreamRemoteReset, "DR"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("%d.String() = %q, want %q", tc.f, got, tc.want)
		}
	}
	if len(shortNames) != 29 || Flags(1)<<len(shortNames) != numFlags {
		t.Fatalf("flag table out of sync: %d names", len(shortNames))
	}
}
