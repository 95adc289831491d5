//go:build race

package e2e

// Under `go test -race` the proxy binary is built with -race too, so data
// races on its request path fail these tests (exit code 66, "DATA RACE").
func init() { raceEnabled = true }
