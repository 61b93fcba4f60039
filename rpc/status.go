package rpc

import (
	"context"
	"sort"
	"time"

	"github.com/lunora/lunora/api"
)

// What GatherCluster says of a node that the answering process's gossip
// does not know (api.RingNode.Alive).
const (
	Reachable   = "reachable"
	Unreachable = "unreachable"
)

// GatherCluster completes one node's status with what every other node the
// cluster records says, so that a status tells the truth about the whole
// cluster rather than one node's view of it: each node's handoff streams
// under way (with their progress) and moves in flight are added up, and
// each node's liveness is checked by asking it: a node no gossip view
// vouches for is marked Reachable or Unreachable, and where gossip and the
// answer disagree the answer wins (gossip takes seconds to notice a death
// or a return). status asks the node at a node-API address; each call is
// bounded by timeout and all run at once.
func GatherCluster(ctx context.Context, st *api.Status, timeout time.Duration, status func(ctx context.Context, addr string) (*api.Status, error)) {
	if st == nil || st.Cluster == nil {
		return
	}
	c := st.Cluster
	type answer struct {
		id string
		st *api.Status
	}
	asked := 0
	answers := make(chan answer, len(c.Ring.Members))
	for _, m := range c.Ring.Members {
		if m.ID == st.NodeID || m.GRPCAddr == "" {
			continue
		}
		asked++
		go func(id, addr string) {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			s, err := status(cctx, addr)
			if err != nil || s.NodeID != id {
				s = nil // (another process on a recorded address is not that node)
			}
			answers <- answer{id, s}
		}(m.ID, m.GRPCAddr)
	}
	reached := map[string]bool{st.NodeID: true}
	type moveKey struct{ shard, from, to string }
	moves := map[moveKey]api.ShardMove{}
	addMoves := func(reporter string, ms []api.ShardMove) {
		for _, mv := range ms {
			k := moveKey{mv.ShardID, mv.From, mv.To}
			// Both ends report a stream; the sender's count wins.
			if _, seen := moves[k]; !seen || reporter == mv.From {
				moves[k] = mv
			}
		}
	}
	addMoves(st.NodeID, c.Moves)
	for range asked {
		a := <-answers
		if a.st == nil {
			continue
		}
		reached[a.id] = true
		if a.st.Cluster != nil {
			c.MovesInFlight += a.st.Cluster.MovesInFlight
			addMoves(a.id, a.st.Cluster.Moves)
		}
	}
	c.Moves = c.Moves[:0]
	for _, mv := range moves {
		c.Moves = append(c.Moves, mv)
	}
	sort.Slice(c.Moves, func(i, j int) bool { return c.Moves[i].Elapsed > c.Moves[j].Elapsed })
	for _, list := range [][]api.RingNode{c.Ring.Nodes, c.Ring.Members} {
		for i := range list {
			list[i].Alive = liveness(list[i].Alive, reached[list[i].ID])
		}
	}
}

// liveness combines a gossip view with whether the node answered just
// now: gossip is seconds late to notice a death (and a return), so an
// answer, or its absence, wins where they disagree.
func liveness(gossip string, answered bool) string {
	switch {
	case gossip == "":
		if answered {
			return Reachable
		}
		return Unreachable
	case gossip == "alive" && !answered:
		return Unreachable
	case gossip != "alive" && answered:
		return Reachable
	}
	return gossip
}
