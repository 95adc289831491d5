package tracestore

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// newServer serves a new store over real HTTP on 127.0.0.1.
func newServer(t *testing.T, o Options) (*Store, *httptest.Server) {
	t.Helper()
	s := New(o)
	srv := httptest.NewServer(Handler(s))
	t.Cleanup(srv.Close)
	return s, srv
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func post(t *testing.T, url, contentType, encoding string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	return do(t, req)
}

func get(t *testing.T, url string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// getJSON fetches url, expects 200 and decodes the body into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	r := get(t, url)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", url, ct)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("GET %s: decoding %s: %v", url, r.body, err)
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestQueryAPI(t *testing.T) {
	s, srv := newServer(t, Options{})
	var empty []Summary
	getJSON(t, srv.URL+"/api/traces", &empty)
	if empty == nil || len(empty) != 0 {
		t.Errorf("empty store: %#v, want an empty list", empty)
	}
	var noSvcs []string
	getJSON(t, srv.URL+"/api/services", &noSvcs)
	if noSvcs == nil || len(noSvcs) != 0 {
		t.Errorf("empty store services: %#v, want an empty list", noSvcs)
	}

	s.Add(
		span(1, 10, 0, "customer", "GET /", 0, 100*time.Millisecond),
		span(1, 11, 10, "preference", "GET /p", 10*time.Millisecond, 300*time.Millisecond),
		span(2, 20, 0, "customer", "GET /", time.Second, 50*time.Millisecond),
		span(3, 30, 0, "ratings", "GET /r", 2*time.Second, 400*time.Millisecond),
	)
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{tid(3), tid(2), tid(1)}},
		{"?limit=2", []string{tid(3), tid(2)}},
		{"?service=customer", []string{tid(2), tid(1)}},
		{"?service=customer&minDuration=250ms", []string{tid(1)}},
		{"?minDuration=0.35s", []string{tid(3)}},
		{"?minDuration=", []string{tid(3), tid(2), tid(1)}},
		{"?service=" + url.QueryEscape("no such"), []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			var got []Summary
			getJSON(t, srv.URL+"/api/traces"+tt.query, &got)
			if ids := ids(got); !slices.Equal(ids, tt.want) {
				t.Errorf("got %v, want %v", ids, tt.want)
			}
		})
	}

	var sums []Summary
	getJSON(t, srv.URL+"/api/traces?limit=1&minDuration=300ms&service=preference", &sums)
	if len(sums) != 1 || sums[0].Duration != 310*time.Millisecond || sums[0].Root != "customer: GET /" ||
		!slices.Equal(sums[0].Services, []string{"customer", "preference"}) || !sums[0].Start.Equal(base) || sums[0].Spans != 2 {
		t.Errorf("summary over JSON = %+v", sums)
	}

	var tr Trace
	getJSON(t, srv.URL+"/api/traces/"+tid(1), &tr)
	if tr.ID != tid(1) || len(tr.Spans) != 2 || tr.Spans[1].ParentID != sid(10) || tr.Spans[1].Duration != 300*time.Millisecond {
		t.Errorf("trace over JSON = %+v", tr)
	}
	var svcs []string
	getJSON(t, srv.URL+"/api/services", &svcs)
	if want := []string{"customer", "preference", "ratings"}; !slices.Equal(svcs, want) {
		t.Errorf("services = %v, want %v", svcs, want)
	}
}

func TestQueryAPIErrors(t *testing.T) {
	s, srv := newServer(t, Options{})
	s.Add(span(1, 10, 0, "a", "op", 0, time.Millisecond))
	tests := []struct {
		path       string
		wantStatus int
		wantInMsg  string
	}{
		{"/api/traces?limit=0", 400, "limit"},
		{"/api/traces?limit=ten", 400, "limit"},
		{"/api/traces?limit=1001", 400, "limit"},
		{"/api/traces?limit=-3", 400, "limit"},
		{"/api/traces?minDuration=fast", 400, "minDuration"},
		{"/api/traces?minDuration=250", 400, "minDuration"},
		{"/api/traces?minDuration=-1s", 400, "minDuration"},
		{"/api/traces?servce=a", 400, "servce"},
		{"/api/traces?service=a&service=b", 400, "service"},
		{"/api/traces/not-hex-at-all-xxxxxxxxxxxxxxxxxxxx", 400, "id"},
		{"/api/traces/abc", 400, "id"},
		{"/api/traces/00000000000000000000000000000000", 400, "id"},
		{"/api/traces/" + tid(2), 404, tid(2)},
		{"/api/traces/" + sid(99), 404, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := get(t, srv.URL+tt.path)
			if r.status != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", r.status, tt.wantStatus, r.body)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(r.body, &e); err != nil {
				t.Fatalf("error body %q: %v", r.body, err)
			}
			if !strings.Contains(e.Error, tt.wantInMsg) {
				t.Errorf("error %q does not name %q", e.Error, tt.wantInMsg)
			}
		})
	}
}

func TestMethods(t *testing.T) {
	_, srv := newServer(t, Options{})
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/v1/traces", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/v2/spans", http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/traces", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/api/services", http.StatusMethodNotAllowed},
		{http.MethodGet, "/v1/metrics", http.StatusNotFound},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := do(t, req).status; got != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, got, tt.want)
		}
	}
}
