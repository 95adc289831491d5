//go:build tools

// Package deps pins modules that code in progress is about to import, so
// `go mod tidy` keeps them meanwhile. Remove an import once real code uses it.
package deps

import (
	_ "github.com/chromedp/chromedp"
	_ "go.opentelemetry.io/contrib/propagators/b3"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	_ "go.opentelemetry.io/otel/exporters/zipkin"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)
