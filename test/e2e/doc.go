// Package e2e holds end-to-end tests that run the real amime binary as a
// child process, with real backends, h2spec and fortio. Everything is in
// the _test.go files; run them with `go test ./test/e2e/...` (./scripts/test
// installs the external tools first).
package e2e
