package dashboard

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/amime-mesh/amime/internal/tracestore"
)

//go:embed assets
var assets embed.FS

// defaultEdgeWindow is the graph's rate window unless ?window= says
// otherwise: long enough to smooth a few scrapes, short enough to be live.
const defaultEdgeWindow = time.Minute

// configDumpTimeout bounds a config dump request to the control plane.
const configDumpTimeout = 10 * time.Second

type pages struct {
	byName map[string]*template.Template
}

var pageNames = []string{"graph", "service", "traces", "trace", "proxies", "configdump"}

func mustParsePages() *pages {
	funcs := template.FuncMap{
		"ms":         fmtDuration,
		"pathEscape": url.PathEscape,
		"since": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 MST")
		},
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range pageNames {
		t := template.Must(template.New(name).Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/"+name+".html"))
		p.byName[name] = t
	}
	return p
}

// Handler serves the pages and the JSON API:
//
//	/                         graph
//	/services/{host}          a service: charts, edges, Istio config
//	/traces, /traces/{id}     trace search and waterfall
//	/proxies                  proxies and their xDS sync status
//	/proxies/{id}/config      a proxy's config dump
//	/api/graph?window=1m      the graph (GraphNode, GraphEdge)
//	/api/services/{host}      ServiceView
//	/api/proxies              []Proxy
//	/api/proxies/{id}/config_dump
//	/api/traces?service=&minDuration=&limit=, /api/traces/{id}
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", d.graphPage)
	mux.HandleFunc("GET /services/{host}", d.servicePage)
	mux.HandleFunc("GET /traces", d.tracesPage)
	mux.HandleFunc("GET /traces/{id}", d.tracePage)
	mux.HandleFunc("GET /proxies", d.proxiesPage)
	mux.HandleFunc("GET /proxies/{id}/config", d.configDumpPage)
	mux.HandleFunc("GET /api/graph", d.apiGraph)
	mux.HandleFunc("GET /api/services/{host}", d.apiService)
	mux.HandleFunc("GET /api/proxies", d.apiProxies)
	mux.HandleFunc("GET /api/proxies/{id}/config_dump", d.apiConfigDump)
	mux.HandleFunc("GET /api/traces", d.apiTraces)
	mux.HandleFunc("GET /api/traces/{id}", d.apiTrace)
	return securityHeaders(mux)
}

// securityHeaders: the pages run only their own scripts and styles, so
// data that slipped past escaping still could not run.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

func (d *Dashboard) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := d.pages.byName[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		d.log.Error("dashboard: rendering page", "page", name, "err", err)
		http.Error(w, "rendering page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	_ = enc.Encode(v)
}

// pageData is what every page's layout reads.
type pageData struct {
	Title string
	Nav   string
	Data  any
}

func (d *Dashboard) graphPage(w http.ResponseWriter, r *http.Request) {
	d.render(w, "graph", pageData{Title: "Graph", Nav: "graph"})
}

func (d *Dashboard) servicePage(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	var objs []ConfigObject
	var warns []string
	if d.src.ServiceConfig != nil {
		objs, warns = d.src.ServiceConfig(host)
	}
	d.render(w, "service", pageData{Title: host, Nav: "graph", Data: struct {
		Host     string
		Config   []ConfigObject
		Warnings []string
	}{host, objs, warns}})
}

func parseWindow(r *http.Request) (time.Duration, error) {
	s := r.URL.Query().Get("window")
	if s == "" {
		return defaultEdgeWindow, nil
	}
	dur, err := time.ParseDuration(s)
	if err != nil || dur <= 0 {
		return 0, fmt.Errorf("window: %q is not a positive duration such as 1m", s)
	}
	return dur, nil
}

func (d *Dashboard) apiGraph(w http.ResponseWriter, r *http.Request) {
	dur, err := parseWindow(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, d.Graph(dur))
}

func (d *Dashboard) apiService(w http.ResponseWriter, r *http.Request) {
	dur, err := parseWindow(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, d.Service(r.PathValue("host"), dur))
}

// typeOrder is the order xDS types are shown in; others follow by name.
var typeOrder = []string{"CDS", "LDS", "RDS", "EDS", "SDS"}

// proxyRow is a proxies table row.
type proxyRow struct {
	Proxy
	Status []typeStatus
}

type typeStatus struct {
	Type, Status, Class string
}

func statusClass(s string) string {
	switch {
	case s == "SYNCED":
		return "synced"
	case s == "STALE":
		return "stale"
	case strings.HasPrefix(s, "NACK"):
		return "nack"
	case s == "":
		return "none"
	}
	return "notsent"
}

func (d *Dashboard) proxiesPage(w http.ResponseWriter, r *http.Request) {
	proxies := d.proxies()
	cols := append([]string(nil), typeOrder...)
	extra := map[string]bool{}
	for _, p := range proxies {
		for t := range p.Types {
			if !contains(typeOrder, t) {
				extra[t] = true
			}
		}
	}
	more := make([]string, 0, len(extra))
	for t := range extra {
		more = append(more, t)
	}
	sort.Strings(more)
	cols = append(cols, more...)
	rows := make([]proxyRow, 0, len(proxies))
	for _, p := range proxies {
		row := proxyRow{Proxy: p}
		for _, t := range cols {
			s := p.Types[t]
			row.Status = append(row.Status, typeStatus{Type: t, Status: s, Class: statusClass(s)})
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	d.render(w, "proxies", pageData{Title: "Proxies", Nav: "proxies", Data: struct {
		Types          []string
		Rows           []proxyRow
		HaveConfigDump bool
	}{cols, rows, d.src.ConfigDump != nil}})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (d *Dashboard) apiProxies(w http.ResponseWriter, r *http.Request) {
	proxies := d.proxies()
	if proxies == nil {
		proxies = []Proxy{}
	}
	sort.Slice(proxies, func(i, j int) bool { return proxies[i].ID < proxies[j].ID })
	writeJSON(w, proxies)
}

func (d *Dashboard) configDump(ctx context.Context, id string) ([]byte, int, error) {
	if d.src.ConfigDump == nil {
		return nil, http.StatusNotFound, fmt.Errorf("config dumps are not available")
	}
	ctx, cancel := context.WithTimeout(ctx, configDumpTimeout)
	defer cancel()
	b, err := d.src.ConfigDump(ctx, id)
	if err != nil {
		return nil, http.StatusBadGateway, fmt.Errorf("config dump of %q: %w", id, err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, http.StatusBadGateway, fmt.Errorf("config dump of %q is not JSON: %w", id, err)
	}
	return out.Bytes(), http.StatusOK, nil
}

func (d *Dashboard) apiConfigDump(w http.ResponseWriter, r *http.Request) {
	b, code, err := d.configDump(r.Context(), r.PathValue("id"))
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (d *Dashboard) configDumpPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b, code, err := d.configDump(r.Context(), id)
	data := struct {
		ID, JSON, Error string
	}{ID: id, JSON: string(b)}
	if err != nil {
		data.Error = err.Error()
		w.WriteHeader(code)
	}
	d.render(w, "configdump", pageData{Title: "Config dump", Nav: "proxies", Data: data})
}

// parseTraceQuery reads ?service=&minDuration=&limit=; minDuration is a
// Go duration (250ms, 1.5s) or a number of milliseconds.
func parseTraceQuery(r *http.Request) (tracestore.Query, error) {
	v := r.URL.Query()
	q := tracestore.Query{Service: v.Get("service")}
	if s := strings.TrimSpace(v.Get("minDuration")); s != "" {
		if ms, err := strconv.ParseFloat(s, 64); err == nil && ms >= 0 {
			q.MinDuration = time.Duration(ms * float64(time.Millisecond))
		} else if dur, err := time.ParseDuration(s); err == nil && dur >= 0 {
			q.MinDuration = dur
		} else {
			return q, fmt.Errorf("minDuration: %q is neither milliseconds nor a duration such as 250ms", s)
		}
	}
	if s := strings.TrimSpace(v.Get("limit")); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return q, fmt.Errorf("limit: %q is not a number from 1 to 1000", s)
		}
		q.Limit = n
	}
	return q, nil
}

func (d *Dashboard) apiTraces(w http.ResponseWriter, r *http.Request) {
	if d.src.Traces == nil {
		http.Error(w, "tracing is off", http.StatusNotFound)
		return
	}
	q, err := parseTraceQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	res := d.src.Traces.Search(q)
	if res == nil {
		res = []tracestore.Summary{}
	}
	writeJSON(w, res)
}

func (d *Dashboard) apiTrace(w http.ResponseWriter, r *http.Request) {
	if d.src.Traces == nil {
		http.Error(w, "tracing is off", http.StatusNotFound)
		return
	}
	t, ok := d.src.Traces.Trace(r.PathValue("id"))
	if !ok {
		http.Error(w, "no such trace", http.StatusNotFound)
		return
	}
	writeJSON(w, t)
}

func (d *Dashboard) tracesPage(w http.ResponseWriter, r *http.Request) {
	data := struct {
		Off      bool
		Error    string
		Query    tracestore.Query
		MinDur   string
		Limit    string
		Services []string
		Results  []tracestore.Summary
		Searched bool
	}{Off: d.src.Traces == nil}
	vals := r.URL.Query()
	data.MinDur, data.Limit = vals.Get("minDuration"), vals.Get("limit")
	if !data.Off {
		data.Services = d.src.Traces.Services()
		q, err := parseTraceQuery(r)
		data.Query = q
		if err != nil {
			data.Error = err.Error()
			w.WriteHeader(http.StatusBadRequest)
		} else {
			data.Results = d.src.Traces.Search(q)
			data.Searched = true
		}
	}
	d.render(w, "traces", pageData{Title: "Traces", Nav: "traces", Data: data})
}

func (d *Dashboard) tracePage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data := struct {
		Off   bool
		ID    string
		Found bool
		W     waterfall
	}{Off: d.src.Traces == nil, ID: id}
	if !data.Off {
		var t tracestore.Trace
		t, data.Found = d.src.Traces.Trace(id)
		if data.Found {
			data.W = buildWaterfall(t)
		} else {
			w.WriteHeader(http.StatusNotFound)
		}
	}
	d.render(w, "trace", pageData{Title: "Trace " + id, Nav: "traces", Data: data})
}

// fmtDuration prints a duration in milliseconds, as the pages show them.
func fmtDuration(dur time.Duration) string {
	ms := float64(dur) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
	case ms >= 1:
		return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(ms, 'f', 3, 64) + " ms"
}
