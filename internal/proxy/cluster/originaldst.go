package cluster

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// origDst holds the hosts of an ORIGINAL_DST cluster: made on demand from
// each connection's original destination, and forgotten once unused for
// cleanup_interval (Envoy's default 5 s), as Envoy does.
type origDst struct {
	useHeader bool
	cleanup   time.Duration
	hosts     sync.Map // "ip:port" -> *origHost
	count     atomic.Int64
	lastSweep atomic.Int64 // unix nanos
}

type origHost struct {
	h        *Host
	lastUsed atomic.Int64
}

// UseHTTPHeader reports original_dst_lb_config.use_http_header: the
// destination may come from the x-envoy-original-dst-host request header.
func (c *Cluster) UseHTTPHeader() bool { return c.orig != nil && c.orig.useHeader }

// OriginalDstHost returns the host for addr ("ip:port") in an ORIGINAL_DST
// cluster, or nil when addr is not an IP address and port, or the cluster
// is of another type.
func (c *Cluster) OriginalDstHost(addr string) *Host {
	o := c.orig
	if o == nil {
		return nil
	}
	now := time.Now().UnixNano()
	if v, ok := o.hosts.Load(addr); ok {
		oh := v.(*origHost)
		oh.lastUsed.Store(now)
		return oh.h
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil
	}
	key := ap.String()
	oh := &origHost{h: &Host{Addr: key, Weight: 1, Healthy: true}}
	oh.lastUsed.Store(now)
	v, loaded := o.hosts.LoadOrStore(key, oh)
	if !loaded {
		o.count.Add(1)
		o.sweep(now, c.onDrop)
	}
	return v.(*origHost).h
}

// Each new host triggers at most one sweep per cleanup interval, so the
// request path never scans the map more often than that.
func (o *origDst) sweep(now int64, drop func(*Host)) {
	last := o.lastSweep.Load()
	if now-last < int64(o.cleanup) || !o.lastSweep.CompareAndSwap(last, now) {
		return
	}
	o.hosts.Range(func(k, v any) bool {
		if now-v.(*origHost).lastUsed.Load() > int64(o.cleanup) && v.(*origHost).h.Active.Load() == 0 {
			o.hosts.Delete(k)
			o.count.Add(-1)
			if drop != nil {
				drop(v.(*origHost).h)
			}
		}
		return true
	})
}

// OriginalDstHosts returns the current hosts of an ORIGINAL_DST cluster.
func (c *Cluster) OriginalDstHosts() []*Host {
	if c.orig == nil {
		return nil
	}
	var out []*Host
	c.orig.hosts.Range(func(_, v any) bool {
		out = append(out, v.(*origHost).h)
		return true
	})
	return out
}
