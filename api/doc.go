// Package api holds the plain Go types of Lunora's request path — results,
// values and coded errors — shared by the gateway, the node and the shard
// runtime so that none of them needs to see a protobuf message.
package api
