package xdsclient

import (
	"context"
	"errors"
	"sync"
)

// serve runs one stream's event loop on the calling goroutine: a helper
// goroutine only reads responses, while this goroutine sends every request and
// calls the handler, which keeps gRPC sends single-writer and handler calls
// serialized. It returns when the stream fails or ctx ends, after the reader
// has exited. got reports whether at least one response arrived.
func serve[Resp any](ctx context.Context, cancel context.CancelFunc, c *Client,
	recv func() (Resp, error), flush func() error, handle func(Resp) error,
) (got bool, err error) {
	responses := make(chan Resp)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			resp, err := recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case responses <- resp:
			case <-ctx.Done():
				return
			}
		}
	})
	defer func() {
		cancel() // unblocks recv
		wg.Wait()
		c.setConnected(false)
	}()

	if err := flush(); err != nil {
		return false, err
	}
	for {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case err := <-recvErr:
			if err == nil {
				err = errors.New("stream closed")
			}
			return got, err
		case resp := <-responses:
			got = true
			if err := handle(resp); err != nil {
				return got, err
			}
			// The handler may have changed subscriptions of other types.
			if err := flush(); err != nil {
				return got, err
			}
			c.deliverPending()
		case <-c.wake:
			if err := flush(); err != nil {
				return got, err
			}
			c.deliverPending()
		}
	}
}
