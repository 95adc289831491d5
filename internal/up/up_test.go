package up

import (
	"net"
	"strings"
	"testing"
)

// checkFree must name every taken address with its user, and pass when
// all are free: `up` relies on it to refuse starting beside another
// server on 8080 (which used to answer its first-request check).
func TestCheckFree(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	err = checkFree(map[string]string{busy.Addr().String(): "the gateway", freeAddr: "the API"})
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()+", needed by the gateway") || strings.Contains(err.Error(), freeAddr) {
		t.Errorf("one address busy: got %v, want an error naming only %s and its user", err, busy.Addr())
	}
	if err := checkFree(map[string]string{freeAddr: "the API"}); err != nil {
		t.Errorf("all free: %v", err)
	}
}
