// Package node is one lunora-node's request router: calls on shards go to
// the shard host, calls on global tables to the Raft global tier —
// forwarded to its leader when this node is not the leader.
package node
