package controlplane

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/registry"
)

const vsPath = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"

const reviewsVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
`

func newAPI(t *testing.T, token string) (*httptest.Server, *config.Store) {
	t.Helper()
	store := config.NewStore()
	t.Cleanup(func() { store.Close() })
	mux := http.NewServeMux()
	(&api{store: store, token: token, leases: registry.NewLeases(0, 0, nil), push: func(string) {}}).routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, store
}

type reply struct {
	code   int
	body   string
	status struct {
		Kind, Reason, Message string
		Code                  int
	}
}

func call(t *testing.T, srv *httptest.Server, method, path, body, token string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	// Compact, so assertions need not follow the server's indentation.
	var compact bytes.Buffer
	if json.Compact(&compact, b) == nil {
		b = compact.Bytes()
	}
	r := reply{code: resp.StatusCode, body: string(b)}
	_ = json.Unmarshal(b, &r.status)
	return r
}

func TestAPIKubernetesShapes(t *testing.T) {
	srv, _ := newAPI(t, "")
	steps := []struct {
		name, method, path, body string
		code                     int
		reason                   string // Status reason for failures
		contains                 string
	}{
		{"create", "POST", vsPath, reviewsVS, 201, "", `"name":"reviews"`},
		{"create again", "POST", vsPath, reviewsVS, 409, "AlreadyExists", ""},
		{"get", "GET", vsPath + "/reviews", "", 200, "", `"subset":"v1"`},
		{"list", "GET", vsPath, "", 200, "", `"kind":"VirtualServiceList"`},
		{"list all namespaces", "GET", "/apis/networking.istio.io/v1/virtualservices", "", 200, "", `"reviews"`},
		{"old api version serves too", "GET", "/apis/networking.istio.io/v1alpha3/namespaces/default/virtualservices/reviews", "", 200, "", `"reviews"`},
		{"unknown version", "GET", "/apis/networking.istio.io/v2/namespaces/default/virtualservices", "", 404, "NotFound", ""},
		{"unknown resource", "GET", "/apis/networking.istio.io/v1/namespaces/default/widgets", "", 404, "NotFound", ""},
		{"missing", "GET", vsPath + "/nope", "", 404, "NotFound", ""},
		{"invalid weights", "PATCH", vsPath + "/reviews", strings.Replace(reviewsVS, "    - destination: {host: reviews, subset: v1}\n",
			"    - destination: {host: reviews, subset: v1}\n      weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 40\n", 1), 422, "Invalid", "spec.http[0].route"},
		{"name mismatch", "PUT", vsPath + "/other", reviewsVS, 400, "BadRequest", ""},
		{"stale resourceVersion", "PUT", vsPath + "/reviews", strings.Replace(reviewsVS, "namespace: default}", "namespace: default, resourceVersion: \"999\"}", 1), 409, "Conflict", ""},
		{"dry run", "PATCH", vsPath + "/reviews?dryRun=All", strings.Replace(reviewsVS, "subset: v1", "subset: v9", 1), 200, "", `"subset":"v9"`},
		{"dry run stored nothing", "GET", vsPath + "/reviews", "", 200, "", `"subset":"v1"`},
		{"delete", "DELETE", vsPath + "/reviews", "", 200, "", `"status":"Success"`},
		{"deleted", "GET", vsPath + "/reviews", "", 404, "NotFound", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := call(t, srv, s.method, s.path, s.body, "")
			if r.code != s.code {
				t.Fatalf("%s %s: %d %s, want %d", s.method, s.path, r.code, r.body, s.code)
			}
			if s.reason != "" && (r.status.Kind != "Status" || r.status.Reason != s.reason || r.status.Code != s.code) {
				t.Errorf("status %+v, want a Status with reason %s", r.status, s.reason)
			}
			if s.contains != "" && !strings.Contains(r.body, s.contains) && !strings.Contains(r.status.Message, s.contains) {
				t.Errorf("body %s does not contain %s", r.body, s.contains)
			}
		})
	}
}

func TestAPIBatchApplyIsAtomic(t *testing.T) {
	srv, store := newAPI(t, "")
	good := reviewsVS + "---\n" + strings.ReplaceAll(reviewsVS, "reviews", "ratings")
	r := call(t, srv, "POST", "/apis/amime.io/v1/apply", good, "")
	if r.code != 200 || !strings.Contains(r.body, `"op":"created"`) {
		t.Fatalf("apply: %d %s", r.code, r.body)
	}
	r = call(t, srv, "POST", "/apis/amime.io/v1/apply", good, "")
	if !strings.Contains(r.body, `"op":"unchanged"`) {
		t.Fatalf("re-apply: %s", r.body)
	}
	bad := strings.Replace(good, "subset: v1", "subset: v2", 1) + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken}\nspec: {hosts: []}\n"
	r = call(t, srv, "POST", "/apis/amime.io/v1/apply", bad, "")
	if r.code != 422 {
		t.Fatalf("bad batch: %d %s", r.code, r.body)
	}
	o, _ := store.Get(config.Key{Kind: config.VirtualService, Namespace: "default", Name: "reviews"})
	if b, _ := config.Encode(o, "json"); !strings.Contains(strings.Join(strings.Fields(string(b)), ""), `"subset":"v1"`) {
		t.Fatalf("a rejected batch changed reviews: %s", b)
	}
}

func TestAPIToken(t *testing.T) {
	srv, _ := newAPI(t, "s3cret")
	if r := call(t, srv, "GET", vsPath, "", ""); r.code != 401 || r.status.Reason != "Unauthorized" {
		t.Fatalf("no token: %d %+v", r.code, r.status)
	}
	if r := call(t, srv, "GET", vsPath, "", "wrong"); r.code != 401 {
		t.Fatalf("wrong token: %d", r.code)
	}
	if r := call(t, srv, "GET", vsPath, "", "s3cret"); r.code != 200 {
		t.Fatalf("right token: %d %s", r.code, r.body)
	}
}

func TestTokenRequiredOffLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:15014", "", true},
		{"localhost:15014", "", true},
		{"[::1]:15014", "", true},
		{"0.0.0.0:15014", "", false},
		{"10.0.0.1:15014", "", false},
		{"0.0.0.0:15014", "t", true},
	} {
		err := requireTokenOffLoopback(tc.addr, tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("%s token=%q: err %v", tc.addr, tc.token, err)
		}
	}
}
