// Package nodeproc assembles a lunora-node process: the shard host, the
// global tier, the node router, the gRPC and HTTP servers and — in dev
// mode — the gateway, and shuts them down in order. cmd/lunora-node, the
// test helpers and the load generator all start Lunora through it.
package nodeproc
