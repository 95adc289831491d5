package upstream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// server accepts connections and hands them to the test.
func server(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range ch {
			c.Close()
		}
	})
	return ln.Addr().String(), ch
}

func accept(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection")
		return nil
	}
}

func TestPoolReuse(t *testing.T) {
	addr, ch := server(t)
	p := NewPool(addr, time.Second)
	defer p.Close()
	c1, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	accept(t, ch)
	p.Put(c1)
	if p.Idle() != 1 || p.Open.Load() != 1 {
		t.Fatalf("idle %d open %d after Put", p.Idle(), p.Open.Load())
	}
	c2, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c2 != c1 || !c2.Reused {
		t.Fatal("an idle connection was not reused")
	}
	if p.Created.Load() != 1 {
		t.Fatalf("created %d connections, want 1", p.Created.Load())
	}
	p.Discard(c2)
	if p.Open.Load() != 0 {
		t.Fatalf("open %d after Discard", p.Open.Load())
	}
}

func TestPoolDropsConnectionsTheHostClosed(t *testing.T) {
	addr, ch := server(t)
	p := NewPool(addr, time.Second)
	defer p.Close()
	c1, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A read deadline in the past must not make a live connection look dead.
	_ = c1.NetConn().SetReadDeadline(time.Now().Add(-time.Second))
	srv := accept(t, ch)
	p.Put(c1)
	c1.idleSince = time.Now().Add(-time.Hour) // force the liveness check
	if c, _ := p.Get(context.Background()); c != c1 {
		t.Fatal("a live idle connection was dropped")
	} else {
		p.Put(c)
	}
	srv.Close()
	// Wait for the FIN to arrive, then the idle connection must be replaced.
	deadline := time.Now().Add(5 * time.Second)
	for alive(c1.nc) {
		if time.Now().After(deadline) {
			t.Fatal("closed connection still looks alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c1.idleSince = time.Now().Add(-time.Hour)
	c2, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c1 {
		t.Fatal("got back a connection the host had closed")
	}
	accept(t, ch)
}

func TestPoolDiscardsOutOfSyncConnections(t *testing.T) {
	addr, ch := server(t)
	p := NewPool(addr, time.Second)
	defer p.Close()
	c, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := accept(t, ch)
	// Bytes beyond the response: the connection cannot be reused.
	if _, err := srv.Write([]byte("junk")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.R.Peek(4); err != nil {
		t.Fatal(err)
	}
	p.Put(c)
	if p.Idle() != 0 || p.Open.Load() != 0 {
		t.Fatalf("idle %d open %d: a connection with unread bytes was pooled", p.Idle(), p.Open.Load())
	}
}

func TestPoolCloseAndConnectError(t *testing.T) {
	addr, ch := server(t)
	p := NewPool(addr, time.Second)
	c, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	accept(t, ch)
	p.Close()
	p.Put(c) // after Close: closed, not pooled
	if p.Idle() != 0 || p.Open.Load() != 0 {
		t.Fatalf("idle %d open %d after Close", p.Idle(), p.Open.Load())
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	_, err = NewPool(dead, time.Second).Get(context.Background())
	if !errors.Is(err, ErrConnect) {
		t.Fatalf("err = %v, want ErrConnect", err)
	}
}

func TestSetTimeoutLiftsAnEarlierDeadline(t *testing.T) {
	addr, ch := server(t)
	p := NewPool(addr, time.Second)
	defer p.Close()
	c, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := accept(t, ch)
	// A request with a short timeout, then one without: the second must
	// not inherit the first one's deadline.
	if err := c.SetTimeout(time.Now(), 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := c.SetTimeout(time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond) // longer than the first deadline: the point of the test
		srv.Write([]byte("x"))
	}()
	if _, err := c.R.ReadByte(); err != nil {
		t.Fatalf("read after the deadline was lifted: %v", err)
	}
}

// TestPoolIdleTimeout: an idle connection is closed after the idle
// timeout; one in use is not.
func TestPoolIdleTimeout(t *testing.T) {
	addr, ch := server(t)
	p := NewPool(addr, time.Second)
	p.IdleTimeout = 50 * time.Millisecond
	defer p.Close()
	c, err := p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := accept(t, ch)
	p.Put(c)
	deadline := time.Now().Add(5 * time.Second)
	for p.Idle() != 0 || p.Open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle %d open %d: the idle connection was not closed", p.Idle(), p.Open.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The host sees the close.
	_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := srv.Read(make([]byte, 1)); err == nil {
		t.Error("the host's side is still open")
	}
	// A connection taken from the pool is not closed under its user.
	c, err = p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	accept(t, ch)
	time.Sleep(100 * time.Millisecond) // twice the idle timeout, in use
	if p.Open.Load() != 1 {
		t.Fatalf("open %d: a busy connection was closed", p.Open.Load())
	}
	p.Discard(c)
}

// TestPoolMaxRequests: a connection that carried MaxRequests requests is
// closed instead of reused.
func TestPoolMaxRequests(t *testing.T) {
	addr, ch := server(t)
	p := NewPool(addr, time.Second)
	p.MaxRequests = 2
	defer p.Close()
	for i := 0; i < 4; i++ {
		c, err := p.Get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !c.Reused {
			accept(t, ch)
		}
		p.Put(c)
	}
	if p.Created.Load() != 2 {
		t.Fatalf("created %d connections for 4 requests with 2 per connection, want 2", p.Created.Load())
	}
}
