// Package shardhost runs shard actors on one node: one SQLite file per
// shard, activated on demand, hibernated when idle, with a single writer
// goroutine per shard that group-commits mutations. See DESIGN.md.
package shardhost
