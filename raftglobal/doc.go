// Package raftglobal is Lunora's global tier: a hashicorp/raft group whose
// replicated state machine is one SQLite database holding the global tables
// and the cluster metadata (ring epochs, node states, shard registry). See
// DESIGN.md.
package raftglobal
