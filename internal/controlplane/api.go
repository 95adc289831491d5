package controlplane

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/amime-mesh/amime/internal/ca"
	"github.com/amime-mesh/amime/internal/config"
	"github.com/amime-mesh/amime/internal/explain"
	"github.com/amime-mesh/amime/internal/identity"
	"github.com/amime-mesh/amime/internal/registry"
)

// maxBody bounds request bodies: config documents, not uploads.
const maxBody = 8 << 20

// api is the control plane's HTTP API, shaped like Kubernetes' so that
// kubectl habits (and simple curl) carry over:
//
//	/apis/{group}/{version}/[namespaces/{ns}/]{plural}[/{name}]
//
// plus POST /apis/amime.io/v1/apply, which applies a multi-document YAML
// atomically (all or nothing), for `amime apply -f`.
type api struct {
	store  *config.Store
	token  string // required as a bearer token when non-empty
	debug  http.Handler
	leases *registry.Leases
	push   func(reason string)
	// heartbeatInterval is what heartbeats are told to keep to.
	heartbeatInterval time.Duration
	// tokens and ca are nil without the TLS xDS port.
	tokens *identity.Tokens
	ca     *ca.CA
	// proxies lists the connected proxies for explain (nil: unavailable).
	proxies func() []*explain.Proxy
}

func (a *api) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /apis/amime.io/v1/apply", a.auth(a.applyBatch))
	mux.HandleFunc("POST /apis/amime.io/v1/namespaces/{ns}/workloadentries/{name}/heartbeat", a.auth(a.heartbeat))
	mux.HandleFunc("POST /apis/amime.io/v1/tokens", a.auth(a.createToken))
	mux.HandleFunc("GET /apis/amime.io/v1/rootcert", a.auth(a.rootCert))
	mux.HandleFunc("POST /apis/amime.io/v1/ca/{op}", a.auth(a.caRotate))
	mux.HandleFunc("POST /apis/amime.io/v1/explain", a.auth(a.explain))
	mux.HandleFunc("GET /apis/{group}/{version}/{plural}", a.auth(a.list))
	mux.HandleFunc("GET /apis/{group}/{version}/namespaces/{ns}/{plural}", a.auth(a.list))
	mux.HandleFunc("POST /apis/{group}/{version}/namespaces/{ns}/{plural}", a.auth(a.create))
	mux.HandleFunc("GET /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", a.auth(a.get))
	mux.HandleFunc("PUT /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", a.auth(a.update))
	mux.HandleFunc("PATCH /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", a.auth(a.apply))
	mux.HandleFunc("DELETE /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", a.auth(a.delete))
	if a.debug != nil {
		mux.Handle("/debug/", a.auth(a.debug.ServeHTTP))
	}
}

func (a *api) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
				writeStatus(w, http.StatusUnauthorized, "Unauthorized", "a bearer token is required (--token / $AMIME_TOKEN)")
				return
			}
		}
		h(w, r)
	}
}

// kindOf resolves the path's group/version/plural.
func kindOf(w http.ResponseWriter, r *http.Request) (config.KindInfo, bool) {
	group, version, plural := r.PathValue("group"), r.PathValue("version"), r.PathValue("plural")
	for _, k := range config.Kinds() {
		if k.Group == group && k.Plural == plural {
			for _, v := range k.Versions {
				if v == version {
					return k, true
				}
			}
			writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s/%s does not serve %s", group, version, plural))
			return k, false
		}
	}
	writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("the server could not find the requested resource %s/%s %s", group, version, plural))
	return config.KindInfo{}, false
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok {
		return
	}
	snap := a.store.Snapshot()
	var objs []*config.Object
	if ns := r.PathValue("ns"); ns != "" {
		objs = snap.ListNamespace(k.Kind, ns)
	} else {
		objs = snap.List(k.Kind)
	}
	items := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		b, err := config.Encode(o, "json")
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		items = append(items, b)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"apiVersion": k.Group + "/" + r.PathValue("version"),
		"kind":       k.Kind + "List",
		"metadata":   map[string]string{"resourceVersion": snap.ResourceVersion()},
		"items":      items,
	})
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok {
		return
	}
	o, found := a.store.Get(config.Key{Kind: k.Kind, Namespace: r.PathValue("ns"), Name: r.PathValue("name")})
	if !found {
		writeStatus(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s %q not found", k.Plural, r.PathValue("name")))
		return
	}
	writeObject(w, http.StatusOK, o, "")
}

// readObject decodes the one object of a request body and checks it
// against the path.
func readObject(w http.ResponseWriter, r *http.Request, k config.KindInfo, wantName bool) (*config.Object, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		writeStatus(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "request body over 8 MiB")
		return nil, false
	}
	objs, err := config.DecodeOptions{DefaultNamespace: r.PathValue("ns")}.Decode(body)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return nil, false
	}
	if len(objs) != 1 {
		writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("want one object, got %d", len(objs)))
		return nil, false
	}
	o := objs[0]
	switch {
	case o.Kind != k.Kind:
		writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("the body is a %s, the path names %s", o.Kind, k.Plural))
	case o.Meta.Namespace != r.PathValue("ns"):
		writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("the namespace of the body (%s) does not match the path (%s)", o.Meta.Namespace, r.PathValue("ns")))
	case wantName && o.Meta.Name != r.PathValue("name"):
		writeStatus(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("the name of the body (%s) does not match the path (%s)", o.Meta.Name, r.PathValue("name")))
	default:
		return o, true
	}
	return nil, false
}

func dryRun(r *http.Request) bool { return r.URL.Query().Get("dryRun") == "All" }

// write is the shared body of create, update and apply: read the one
// object of the request, dry-run it or hand it to do.
func (a *api) write(w http.ResponseWriter, r *http.Request, byName bool, do func(*config.Object) (*config.Object, config.Op, error)) {
	k, ok := kindOf(w, r)
	if !ok {
		return
	}
	o, ok := readObject(w, r, k, byName)
	if !ok {
		return
	}
	if dryRun(r) {
		a.dryRunOne(w, o)
		return
	}
	stored, op, err := do(o)
	if err != nil {
		writeError(w, err)
		return
	}
	code := http.StatusOK
	if op == config.OpCreated {
		code = http.StatusCreated
	}
	writeObject(w, code, stored, op)
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	a.write(w, r, false, func(o *config.Object) (*config.Object, config.Op, error) {
		stored, err := a.store.Create(o)
		return stored, config.OpCreated, err
	})
}

func (a *api) update(w http.ResponseWriter, r *http.Request) {
	a.write(w, r, true, func(o *config.Object) (*config.Object, config.Op, error) {
		stored, err := a.store.Update(o)
		return stored, config.OpConfigured, err
	})
}

// apply is server-side apply's create-or-replace.
func (a *api) apply(w http.ResponseWriter, r *http.Request) {
	a.write(w, r, true, func(o *config.Object) (*config.Object, config.Op, error) {
		res, err := a.store.ApplyAll([]*config.Object{o})
		if err != nil {
			return nil, "", err
		}
		return res[0].Object, res[0].Op, nil
	})
}

func (a *api) dryRunOne(w http.ResponseWriter, o *config.Object) {
	res, err := a.store.DryRun([]*config.Object{o})
	if err != nil {
		writeError(w, err)
		return
	}
	writeObject(w, http.StatusOK, res[0].Object, res[0].Op)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	k, ok := kindOf(w, r)
	if !ok {
		return
	}
	// Kubernetes' DeleteOptions precondition, when given.
	var opts struct {
		Preconditions struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"preconditions"`
	}
	if r.ContentLength > 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&opts); err != nil {
			writeStatus(w, http.StatusBadRequest, "BadRequest", "delete options: "+err.Error())
			return
		}
	}
	key := config.Key{Kind: k.Kind, Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
	if err := a.store.Delete(key, opts.Preconditions.ResourceVersion); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Success",
		"details": map[string]string{"name": key.Name, "kind": k.Plural}})
}

// ApplyResult is one object's outcome of a batch apply.
type ApplyResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Op        string `json:"op"`
}

// applyBatch applies every document of the body, or none if any is
// invalid.
func (a *api) applyBatch(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		writeStatus(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "request body over 8 MiB")
		return
	}
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		ns = "default"
	}
	objs, err := config.DecodeOptions{DefaultNamespace: ns}.Decode(body)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	var res []config.Result
	if dryRun(r) {
		res, err = a.store.DryRun(objs)
	} else {
		res, err = a.store.ApplyAll(objs)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]ApplyResult, 0, len(res))
	for _, x := range res {
		out = append(out, ApplyResult{Kind: x.Object.Kind, Namespace: x.Object.Meta.Namespace, Name: x.Object.Meta.Name, Op: string(x.Op)})
	}
	writeJSON(w, http.StatusOK, out)
}

func writeObject(w http.ResponseWriter, code int, o *config.Object, op config.Op) {
	b, err := config.Encode(o, "json")
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	if op != "" {
		w.Header().Set("Amime-Op", string(op))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeStatus answers with a Kubernetes Status object.
func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
		"message": msg, "reason": reason, "code": code})
}

func writeError(w http.ResponseWriter, err error) {
	var ve *config.ValidationError
	switch {
	case errors.As(err, &ve):
		writeStatus(w, http.StatusUnprocessableEntity, "Invalid", err.Error())
	case errors.Is(err, config.ErrNotFound):
		writeStatus(w, http.StatusNotFound, "NotFound", err.Error())
	case errors.Is(err, config.ErrAlreadyExists):
		writeStatus(w, http.StatusConflict, "AlreadyExists", err.Error())
	case errors.Is(err, config.ErrConflict):
		writeStatus(w, http.StatusConflict, "Conflict", err.Error())
	default:
		writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
	}
}
