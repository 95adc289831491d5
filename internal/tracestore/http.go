package tracestore

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	contentTypeProtobuf = "application/x-protobuf"
	contentTypeJSON     = "application/json"
	// MaxSearchLimit bounds the limit parameter of GET /api/traces.
	MaxSearchLimit = 1000
	// pooledBufferMax keeps the odd huge body's buffer out of the pool, so
	// that the pool does not pin the request limit's worth of memory.
	pooledBufferMax = 1 << 20
)

// handler serves the collector's endpoints for one store.
type handler struct {
	store    *Store
	maxBytes int64
	bufs     sync.Pool // *bytes.Buffer
	gzips    sync.Pool // *gzip.Reader
}

// Handler serves, for s:
//
//	POST /v1/traces        OTLP/HTTP, protobuf or JSON, optionally gzipped
//	POST /api/v2/spans     Zipkin v2 JSON, optionally gzipped
//	GET  /api/traces       search: ?service=&minDuration=250ms&limit=20 → []Summary
//	GET  /api/traces/{id}  one Trace, or 404
//	GET  /api/services     []string
func Handler(s *Store) http.Handler {
	h := &handler{store: s, maxBytes: s.maxRequestBytes}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", h.otlp)
	mux.HandleFunc("POST /api/v2/spans", h.zipkin)
	mux.HandleFunc("GET /api/traces", h.search)
	mux.HandleFunc("GET /api/traces/{id}", h.trace)
	mux.HandleFunc("GET /api/services", h.services)
	return mux
}

// httpError is a refused request: the status to answer and why.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// otlp receives an OTLP/HTTP ExportTraceServiceRequest and answers as the
// OTLP specification requires: 200 with an ExportTraceServiceResponse, or
// a google.rpc.Status, both in the request's encoding.
func (h *handler) otlp(w http.ResponseWriter, r *http.Request) {
	var isJSON bool
	switch mt := mediaType(r); mt {
	case contentTypeProtobuf:
	case contentTypeJSON:
		isJSON = true
	default:
		h.store.reject("otlp", 0)
		writeOTLPStatus(w, false, &httpError{http.StatusUnsupportedMediaType,
			fmt.Sprintf("unsupported Content-Type %q: want %s or %s", mt, contentTypeProtobuf, contentTypeJSON)}, nil)
		return
	}
	buf := h.buffer()
	defer h.release(buf)
	if herr := h.readBody(w, r, buf); herr != nil {
		h.store.reject("otlp", 0)
		writeOTLPStatus(w, isJSON, herr, nil)
		return
	}
	req := &coltracepb.ExportTraceServiceRequest{}
	var err error
	if isJSON {
		err = unmarshalOTLPJSON(buf.Bytes(), req)
	} else if err = proto.Unmarshal(buf.Bytes(), req); err != nil {
		err = fmt.Errorf("decoding OTLP protobuf: %w", err)
	}
	if err != nil {
		h.store.reject("otlp", 0)
		writeOTLPStatus(w, isJSON, &httpError{http.StatusBadRequest, err.Error()}, err)
		return
	}
	spans, total, err := otlpSpans(req)
	if err != nil {
		h.store.reject("otlp", total)
		writeOTLPStatus(w, isJSON, &httpError{http.StatusBadRequest, err.Error()}, err)
		return
	}
	h.store.Add(spans...)
	resp := &coltracepb.ExportTraceServiceResponse{}
	if n := total - len(spans); n > 0 {
		h.store.incomplete(n)
		resp.PartialSuccess = &coltracepb.ExportTracePartialSuccess{
			RejectedSpans: int64(n),
			ErrorMessage:  fmt.Sprintf("%d spans without a start time were dropped", n),
		}
	}
	writeOTLP(w, isJSON, http.StatusOK, resp)
}

// zipkin receives a Zipkin v2 JSON list of spans and answers 202, as
// Zipkin's collector does.
func (h *handler) zipkin(w http.ResponseWriter, r *http.Request) {
	// Zipkin's own clients sometimes send no Content-Type; JSON is the
	// default there. Zipkin's protobuf encoding is not supported.
	if mt := mediaType(r); mt != "" && mt != contentTypeJSON {
		h.store.reject("zipkin", 0)
		http.Error(w, fmt.Sprintf("unsupported Content-Type %q: want %s (Zipkin v2 JSON)", mt, contentTypeJSON), http.StatusUnsupportedMediaType)
		return
	}
	buf := h.buffer()
	defer h.release(buf)
	if herr := h.readBody(w, r, buf); herr != nil {
		h.store.reject("zipkin", 0)
		http.Error(w, herr.msg, herr.status)
		return
	}
	spans, total, err := zipkinSpans(buf.Bytes())
	if err != nil {
		h.store.reject("zipkin", total)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.store.incomplete(total - len(spans))
	h.store.Add(spans...)
	w.WriteHeader(http.StatusAccepted)
}

// mediaType is the request's Content-Type without parameters, lower case;
// "" when absent or unparsable.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return mt
}

func (h *handler) buffer() *bytes.Buffer {
	if b, ok := h.bufs.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (h *handler) release(b *bytes.Buffer) {
	if b.Cap() > pooledBufferMax {
		return
	}
	b.Reset()
	h.bufs.Put(b)
}

// readBody reads the request body into buf, undoing a gzip
// Content-Encoding, and enforces the size limit both before and after
// decompression.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) *httpError {
	tooLarge := &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", h.maxBytes)}
	if r.ContentLength > h.maxBytes {
		return tooLarge
	}
	body := http.MaxBytesReader(w, r.Body, h.maxBytes)
	var src io.Reader = body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := h.gzipReader(body)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return tooLarge
			}
			return &httpError{http.StatusBadRequest, "reading gzip body: " + err.Error()}
		}
		defer h.gzips.Put(zr)
		src = zr
	default:
		return &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Encoding %q: want gzip or none", enc)}
	}
	// One byte past the limit tells a body at the limit from one beyond.
	_, err := buf.ReadFrom(io.LimitReader(src, h.maxBytes+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || int64(buf.Len()) > h.maxBytes:
		return tooLarge
	case err != nil:
		return &httpError{http.StatusBadRequest, "reading body: " + err.Error()}
	}
	return nil
}

func (h *handler) gzipReader(r io.Reader) (*gzip.Reader, error) {
	if zr, ok := h.gzips.Get().(*gzip.Reader); ok {
		if err := zr.Reset(r); err != nil {
			h.gzips.Put(zr)
			return nil, err
		}
		return zr, nil
	}
	return gzip.NewReader(r)
}

// writeOTLP writes an OTLP message in the request's encoding.
func writeOTLP(w http.ResponseWriter, isJSON bool, status int, m proto.Message) {
	var (
		b   []byte
		err error
	)
	if isJSON {
		w.Header().Set("Content-Type", contentTypeJSON)
		b, err = protojson.Marshal(m)
	} else {
		w.Header().Set("Content-Type", contentTypeProtobuf)
		b, err = proto.Marshal(m)
	}
	if err != nil {
		// Our own small messages always encode; answer something sane anyway.
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeOTLPStatus answers a refused OTLP request with a google.rpc.Status,
// adding the BadRequest detail the specification asks for when cause names
// a field.
func writeOTLPStatus(w http.ResponseWriter, isJSON bool, herr *httpError, cause error) {
	c := codes.InvalidArgument
	if herr.status == http.StatusRequestEntityTooLarge {
		c = codes.ResourceExhausted
	}
	st := status.New(c, herr.msg)
	var fe *fieldError
	if errors.As(cause, &fe) {
		detailed, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: fe.path, Description: fe.err.Error()},
		}})
		if err == nil {
			st = detailed
		}
	}
	writeOTLP(w, isJSON, herr.status, st.Proto())
}

// search serves GET /api/traces.
func (h *handler) search(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, h.store.Search(q))
}

// parseQuery reads GET /api/traces's parameters. Unknown ones are refused
// so that a misspelt filter does not silently match everything.
func parseQuery(r *http.Request) (Query, error) {
	var q Query
	for name, vals := range r.URL.Query() {
		if len(vals) > 1 {
			return q, fmt.Errorf("%s: given %d times, want at most once", name, len(vals))
		}
		v := vals[0]
		switch name {
		case "service":
			q.Service = v
		case "minDuration":
			if v == "" {
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return q, fmt.Errorf("minDuration: %q is not a non-negative duration such as 250ms or 1.5s", v)
			}
			q.MinDuration = d
		case "limit":
			if v == "" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxSearchLimit {
				return q, fmt.Errorf("limit: %q is not an integer from 1 to %d", v, MaxSearchLimit)
			}
			q.Limit = n
		default:
			return q, fmt.Errorf("%s: unknown parameter, want service, minDuration or limit", name)
		}
	}
	return q, nil
}

// trace serves GET /api/traces/{id}.
func (h *handler) trace(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	norm, err := normalizeTraceID(id)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("id: %q: %v", id, err))
		return
	}
	t, ok := h.store.Trace(norm)
	if !ok {
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("trace %s not found", norm))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// services serves GET /api/services.
func (h *handler) services(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.store.Services())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "encoding response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeJSONError answers {"error": msg}.
func writeJSONError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
