package apiclient

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Token is a join token the control plane issued.
type Token struct {
	Token    string `json:"token"`
	Identity string `json:"identity"`
	Expires  string `json:"expires"`
	// RootCert is the mesh trust bundle (PEM) the proxy verifies the
	// control plane with.
	RootCert string `json:"rootCert"`
}

// CreateToken asks for a join token for service account sa in namespace ns;
// ttl 0 takes the control plane's default.
func (c *Client) CreateToken(ctx context.Context, ns, sa string, ttl time.Duration) (*Token, error) {
	req := map[string]string{"namespace": ns, "serviceAccount": sa}
	if ttl > 0 {
		req["ttl"] = ttl.String()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	data, _, err := c.do(ctx, "POST", "/apis/amime.io/v1/tokens", body, "application/json")
	if err != nil {
		return nil, err
	}
	var t Token
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("token answer: %w", err)
	}
	return &t, nil
}

// CAOperation runs a CA operation ("rotate-root", "retire-old") and
// returns the trust bundle after it.
func (c *Client) CAOperation(ctx context.Context, op string) ([]byte, error) {
	data, _, err := c.do(ctx, "POST", "/apis/amime.io/v1/ca/"+op, nil, "")
	return data, err
}
