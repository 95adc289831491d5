// Package xdsclient is the proxy's ADS client: it keeps one aggregated xDS
// stream (SotW or delta, Envoy v3 API) to the control plane, tracks
// subscriptions, validates and ACK/NACKs responses, and hands the handler the
// complete current set of resources per type.
//
// Protocol reference: https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

// Default reconnect back-off bounds.
const (
	DefaultInitialBackoff = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Config configures a Client.
type Config struct {
	// Target is the "host:port" of the ADS server (any gRPC target works).
	Target string
	// DialOptions are appended after the client's defaults (insecure transport
	// credentials), so a credentials option given here replaces the default.
	DialOptions []grpc.DialOption
	// Node identifies the proxy; it is sent on the first request of each stream.
	Node *corev3.Node
	// Delta selects DeltaAggregatedResources instead of StreamAggregatedResources.
	Delta bool
	// InitialBackoff and MaxBackoff bound the reconnect back-off (exponential,
	// full jitter). Zero means DefaultInitialBackoff / DefaultMaxBackoff.
	InitialBackoff, MaxBackoff time.Duration
	// Logger receives the client's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Handler consumes resource updates.
type Handler interface {
	// OnUpdate gets the COMPLETE current set of resources of typeURL known to
	// the client, keyed by name (also in delta mode, where the client
	// accumulates additions and removals). The map is the handler's to keep;
	// the Any values must not be modified. Returning an error NACKs the
	// response: the client keeps its previous set as current and reports the
	// error text to the server. Calls are serialized, in arrival order.
	// OnUpdate may call Watch and Wildcard.
	OnUpdate(typeURL string, resources map[string]*anypb.Any) error
}

// Client is an ADS client. Create it with New, subscribe with Watch/Wildcard
// (before or during Run), and serve with Run.
type Client struct {
	cfg     Config
	handler Handler
	log     *slog.Logger

	running atomic.Bool
	// wake tells the serving goroutine that subscriptions changed or that a
	// pruned set must be redelivered; capacity 1 so signalling never blocks.
	wake chan struct{}

	mu        sync.Mutex
	types     map[string]*typeState
	order     []string // type URLs in first-subscription order, for deterministic requests
	connected bool
}

// New validates cfg, applies defaults and returns a Client. It does not connect.
func New(cfg Config, h Handler) (*Client, error) {
	if cfg.Target == "" {
		return nil, errors.New("xdsclient: empty target")
	}
	if h == nil {
		return nil, errors.New("xdsclient: nil handler")
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = DefaultInitialBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.InitialBackoff {
		return nil, fmt.Errorf("xdsclient: max backoff %v below initial backoff %v", cfg.MaxBackoff, cfg.InitialBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{
		cfg:     cfg,
		handler: h,
		log:     cfg.Logger.With("component", "xdsclient", "target", cfg.Target),
		wake:    make(chan struct{}, 1),
		types:   map[string]*typeState{},
	}, nil
}

// Watch subscribes to exactly names of typeURL, replacing any previous
// subscription of that type (including a wildcard one). Empty names means no
// interest in any resource of the type. Names dropped by the change are
// removed from the set delivered to the handler. Safe to call from any
// goroutine, including from Handler.OnUpdate; the change is sent on the live
// stream and resent on every reconnect.
func (c *Client) Watch(typeURL string, names []string) {
	c.subscribe(typeURL, false, names)
}

// Wildcard subscribes to every resource of typeURL the server has for this
// node (meant for LDS and CDS), replacing any named subscription.
func (c *Client) Wildcard(typeURL string) {
	c.subscribe(typeURL, true, nil)
}

func (c *Client) subscribe(typeURL string, wildcard bool, names []string) {
	if !knownType(typeURL) {
		// The signature has no error; a typo must not go unnoticed.
		c.log.Error("ignoring subscription to unsupported type", "type", typeURL)
		return
	}
	c.mu.Lock()
	st, ok := c.types[typeURL]
	if !ok {
		st = newTypeState(typeURL)
		st.dirty = true
		c.types[typeURL] = st
		c.order = append(c.order, typeURL)
	}
	changed := st.setSubscription(wildcard, names) || !ok
	c.mu.Unlock()
	if changed {
		c.log.Debug("subscription changed", "type", typeURL, "wildcard", wildcard, "names", names)
		c.signal()
	}
}

func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Status is a snapshot of the client's state for the admin endpoint.
type Status struct {
	// Connected is true while an ADS stream is established.
	Connected bool
	// Types is keyed by type URL.
	Types map[string]TypeStatus
}

// TypeStatus describes one subscribed type.
type TypeStatus struct {
	Wildcard bool
	Names    []string // sorted; empty for wildcard
	// Version is the version of the last ACKed response (delta: system_version_info).
	Version string
	// Nonce is the most recent nonce received on the current stream.
	Nonce string
	// LastNACK is the error text of the most recent NACK ("" if none yet);
	// NACKed tells whether the latest response of this type was rejected.
	LastNACK string
	NACKed   bool
	// Connected is true when the type is subscribed on the live stream.
	Connected bool
	// LastUpdate is when a response of this type was last ACKed.
	LastUpdate time.Time
	// Resources is the number of resources in the current set.
	Resources int
}

// Status returns a snapshot of the connection and per-type state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{Connected: c.connected, Types: make(map[string]TypeStatus, len(c.types))}
	for url, st := range c.types {
		s.Types[url] = TypeStatus{
			Wildcard:   st.wildcard,
			Names:      sortedNames(st.names),
			Version:    st.version,
			Nonce:      st.nonce,
			LastNACK:   st.lastNACK,
			NACKed:     st.nacked,
			Connected:  c.connected && st.sent,
			LastUpdate: st.lastUpdate,
			Resources:  len(st.resources),
		}
	}
	return s
}

// Run connects to the ADS server and serves until ctx is cancelled,
// reconnecting with back-off; accepted state is kept across reconnects. It
// returns ctx.Err(), or an error if the client cannot be built or is already
// running. Every goroutine it starts has ended when it returns.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xdsclient: Run already in progress")
	}
	defer c.running.Store(false)

	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Keep gRPC's own reconnect back-off within ours; its default (up to
		// 120s) would otherwise dominate how soon a stream can be re-opened.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.Config{
			BaseDelay:  c.cfg.InitialBackoff,
			Multiplier: 2,
			Jitter:     0.2,
			MaxDelay:   c.cfg.MaxBackoff,
		}}),
	}
	conn, err := grpc.NewClient(c.cfg.Target, append(opts, c.cfg.DialOptions...)...)
	if err != nil {
		return fmt.Errorf("xdsclient: creating gRPC client for %q: %w", c.cfg.Target, err)
	}
	defer func() {
		if err := conn.Close(); err != nil {
			c.log.Debug("closing gRPC client", "err", err)
		}
	}()

	bo := newBackoff(c.cfg.InitialBackoff, c.cfg.MaxBackoff)
	for {
		var got bool
		if c.cfg.Delta {
			got, err = c.runDelta(ctx, conn)
		} else {
			got, err = c.runSotW(ctx, conn)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if got {
			bo.reset()
		}
		delay := bo.next()
		c.log.Warn("ADS stream ended; reconnecting", "err", err, "delay", delay)
		if err := c.idle(ctx, delay); err != nil {
			return err
		}
	}
}

// idle waits out a back-off delay while still redelivering pruned sets, so
// unsubscribing works the same whether or not we are connected.
func (c *Client) idle(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case <-c.wake:
			c.deliverPending()
		}
	}
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
}

// startStream resets per-stream state of every type, so that the first
// flush resends all subscriptions.
func (c *Client) startStream() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = true
	for _, st := range c.types {
		st.resetStream()
	}
}

// deliverPending hands pruned sets to the handler. Called only from the
// serving goroutine, which keeps handler calls serialized.
func (c *Client) deliverPending() {
	for {
		c.mu.Lock()
		var typeURL string
		var set map[string]*anypb.Any
		for _, url := range c.order {
			if st := c.types[url]; st.redeliver {
				st.redeliver = false
				typeURL, set = url, maps.Clone(st.resources)
				break
			}
		}
		c.mu.Unlock()
		if typeURL == "" {
			return
		}
		// Nothing to NACK here: the removal is our own decision, so an error is only logged.
		if err := c.handler.OnUpdate(typeURL, set); err != nil {
			c.log.Warn("handler rejected unsubscription update", "type", typeURL, "err", err)
		}
	}
}

// pendingTypes returns, in subscription order, the states that need a request.
func (c *Client) pendingTypes() []*typeState {
	var out []*typeState
	for _, url := range c.order {
		if st := c.types[url]; st.dirty {
			out = append(out, st)
		}
	}
	return out
}

// accept decides what to do with a validated candidate set: it calls the
// handler unless nothing changed, and commits the set on success. It must be
// called without c.mu held; commit runs under c.mu.
func (c *Client) accept(st *typeState, candidate map[string]*anypb.Any, commit func()) error {
	c.mu.Lock()
	skip := st.delivered && sameSet(st.resources, candidate)
	c.mu.Unlock()
	var err error
	if !skip {
		err = c.handler.OnUpdate(st.typeURL, maps.Clone(candidate))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		st.lastNACK, st.nacked = err.Error(), true
		return err
	}
	st.resources = candidate
	st.delivered = true
	st.nacked = false
	st.lastUpdate = time.Now()
	commit()
	// The handler may have changed the subscription of this very type while
	// it ran; what it unsubscribed must not linger in the committed set.
	if st.prune() {
		st.redeliver = true
	}
	return nil
}
