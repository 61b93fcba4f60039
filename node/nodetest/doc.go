// Package nodetest runs a Lunora cluster of N nodes inside one test process
// — each a real shard host, Raft member of the global tier (on
// hashicorp/raft's in-memory transport) and node router — over an
// in-memory node network with fault hooks (partition, drop, delay, node
// down), plus a gateway router on loopback gRPC and checkers for the
// cluster's invariants (ARCHITECTURE.md I3, I4, voters at target).
//
// It is exported, non-test code (STYLE.md 11) so that the tests of any
// package can use it: node, router and the randomized cluster test here.
//
//	c := nodetest.Start(t, 3, nodetest.Config{})
//	c.Kill(1)
//	c.Restart(1)
//	c.Partition(0)   // node 0 alone on one side
//	c.Heal()
//	c.CheckOneCopy(ctx)
package nodetest
