// Package server holds what every Lunora process serves besides its own
// API: the gRPC server with health and reflection, /metrics, /healthz and
// /readyz, and graceful shutdown of its listeners.
package server
