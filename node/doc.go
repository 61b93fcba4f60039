// Package node is one lunora-node's request router and ring admin: calls on
// shards go to the shard host (pulling a shard this node owns but another
// holds, through package handoff), calls on global tables to the Raft global
// tier — forwarded to its leader when this node is not the leader — and the
// ring's joins, leaves and rebalancing run here.
package node
