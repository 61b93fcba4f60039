// Package rpc is the thin gRPC glue of Lunora: it converts protobuf messages and statuses to and from the plain Go types of package api and calls plain Go interfaces (Shards on a node, Frontend on a gateway).
package rpc
