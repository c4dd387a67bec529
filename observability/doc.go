// Package observability builds Pacer's telemetry: the Prometheus metrics (on
// an injected registry, never the global one), the OpenTelemetry tracer
// provider, the sanitized slog logger, and correlation IDs.
//
// Instrumentation lives here, in one struct per signal, rather than as fields
// sprinkled through the runner's domain types.
package observability
