// Package gateway is Lunora's front door: it validates a call against the app schema, computes its shard and forwards it to the Backend that runs it, serving the public API over HTTP/JSON (Handler) and, through rpc.PublicServer, over gRPC.
package gateway
