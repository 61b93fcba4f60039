package node

import (
	"context"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
)

// CallRouted runs a function on its shard's owner — this node or a peer,
// as this node's newest ring epoch places it — for calls the node makes
// itself (a queue's consumer function runs on the shard its message names,
// wherever it lives). An answer of NOT_OWNER (a ring newer than this
// node's view) refreshes the view and tries again, a few times.
func (n *Node) CallRouted(ctx context.Context, shardID, function string, args map[string]any) (*api.Result, error) {
	if shardID == schema.GlobalGroup || n.cfg.Global == nil {
		return n.Call(ctx, shardID, function, args, api.ReadOptions{})
	}
	var err error
	for range 4 {
		v := n.cluster.view.Load()
		owner := v.owner(shardID)
		var res *api.Result
		if owner == "" || owner == n.cfg.NodeID {
			res, err = n.Call(ctx, shardID, function, args, api.ReadOptions{})
		} else {
			var p Peer
			if p, err = n.peer(v.addrs[owner]); err == nil {
				res, err = p.Call(api.WithRingEpoch(ctx, v.epoch), shardID, function, args, api.ReadOptions{})
			}
		}
		if reason, _ := api.ReasonOf(err); reason != api.ReasonNotOwner {
			return res, err
		}
		if _, rerr := n.refreshRing(ctx); rerr != nil {
			return nil, err
		}
	}
	return nil, err
}
