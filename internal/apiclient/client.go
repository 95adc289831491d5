// Package apiclient talks to the control plane's HTTP API for the CLI.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/amime-mesh/amime/internal/config"
)

// DefaultServer is where `amime up` and `amime control-plane` listen.
const DefaultServer = "http://127.0.0.1:15014"

// Client is a control-plane API client.
type Client struct {
	Server string
	Token  string
	HTTP   *http.Client
}

// New returns a client for server ("" means DefaultServer).
func New(server, token string) *Client {
	if server == "" {
		server = DefaultServer
	}
	return &Client{Server: strings.TrimRight(server, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// StatusError is a failure the server explained with a Kubernetes Status.
type StatusError struct {
	Code    int
	Reason  string
	Message string
}

func (e *StatusError) Error() string { return e.Message }

func (c *Client) do(ctx context.Context, method, path string, body []byte, contentType string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("control plane at %s: %w (is `amime up` or `amime control-plane` running? --server / $AMIME_SERVER)", c.Server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var st struct {
			Message string `json:"message"`
			Reason  string `json:"reason"`
		}
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			return nil, nil, &StatusError{Code: resp.StatusCode, Reason: st.Reason, Message: st.Message}
		}
		return nil, nil, &StatusError{Code: resp.StatusCode, Message: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))}
	}
	return data, resp.Header, nil
}

// ApplyResult is one object's outcome.
type ApplyResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Op        string `json:"op"`
}

// Apply applies a multi-document YAML atomically.
func (c *Client) Apply(ctx context.Context, docs []byte, namespace string, dryRun bool) ([]ApplyResult, error) {
	q := url.Values{}
	if namespace != "" {
		q.Set("namespace", namespace)
	}
	if dryRun {
		q.Set("dryRun", "All")
	}
	data, _, err := c.do(ctx, "POST", "/apis/amime.io/v1/apply?"+q.Encode(), docs, "application/yaml")
	if err != nil {
		return nil, err
	}
	var out []ApplyResult
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decode apply response: %w", err)
	}
	return out, nil
}

func resourcePath(k config.KindInfo, namespace, name string) string {
	version := k.Versions[len(k.Versions)-1]
	p := "/apis/" + k.Group + "/" + version
	if namespace != "" {
		p += "/namespaces/" + url.PathEscape(namespace)
	}
	p += "/" + k.Plural
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

// Get returns one object.
func (c *Client) Get(ctx context.Context, k config.KindInfo, namespace, name string) (*config.Object, error) {
	data, _, err := c.do(ctx, "GET", resourcePath(k, namespace, name), nil, "")
	if err != nil {
		return nil, err
	}
	objs, err := config.Decode(data)
	if err != nil || len(objs) != 1 {
		return nil, fmt.Errorf("decode %s %s/%s: %v", k.Kind, namespace, name, err)
	}
	return objs[0], nil
}

// List returns the objects of a kind in namespace ("" for all).
func (c *Client) List(ctx context.Context, k config.KindInfo, namespace string) ([]*config.Object, error) {
	data, _, err := c.do(ctx, "GET", resourcePath(k, namespace, ""), nil, "")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("decode %s list: %w", k.Kind, err)
	}
	out := make([]*config.Object, 0, len(list.Items))
	for _, it := range list.Items {
		objs, err := config.Decode(it)
		if err != nil {
			return nil, fmt.Errorf("decode %s list item: %w", k.Kind, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// Delete removes one object.
func (c *Client) Delete(ctx context.Context, k config.KindInfo, namespace, name string) error {
	_, _, err := c.do(ctx, "DELETE", resourcePath(k, namespace, name), nil, "")
	return err
}

// GetJSON fetches a JSON document from a debug endpoint.
func (c *Client) GetJSON(ctx context.Context, path string, v any) error {
	data, _, err := c.do(ctx, "GET", path, nil, "")
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// GetRaw fetches a document.
func (c *Client) GetRaw(ctx context.Context, path string) ([]byte, error) {
	data, _, err := c.do(ctx, "GET", path, nil, "")
	return data, err
}

// Heartbeat renews a self-registered WorkloadEntry's lease and returns the
// heartbeat interval the control plane asks for (0 if it names none).
func (c *Client) Heartbeat(ctx context.Context, namespace, name string) (time.Duration, error) {
	data, _, err := c.do(ctx, "POST", "/apis/amime.io/v1/namespaces/"+url.PathEscape(namespace)+"/workloadentries/"+url.PathEscape(name)+"/heartbeat", nil, "")
	if err != nil {
		return 0, err
	}
	var r struct {
		Interval string `json:"interval"`
	}
	if json.Unmarshal(data, &r) != nil || r.Interval == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(r.Interval)
	if err != nil || d <= 0 {
		return 0, nil
	}
	return d, nil
}
