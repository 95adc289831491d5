// Command amime is the service mesh in one binary: the proxy (sidecar and
// gateway), the control plane, the local mesh (`amime up`) and the
// operator CLI.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "amime:", err)
		os.Exit(1)
	}
}
