package hcm

import (
	"net/http"
	"sync/atomic"
	"time"
)

type cachedDate struct {
	sec int64
	s   string
}

// dateCache holds the Date header text for the current second, so local
// replies do not format a time each.
type dateCache struct{ p atomic.Pointer[cachedDate] }

func (c *dateCache) get() string {
	now := time.Now()
	if d := c.p.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	d := &cachedDate{sec: now.Unix(), s: now.UTC().Format(http.TimeFormat)}
	c.p.Store(d)
	return d.s
}
