package node

import (
	"context"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// Subscribe starts a live query on a shard of this node.
func (n *Node) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	if shardID == schema.GlobalGroup {
		return nil, api.Errorf(codes.Unimplemented, "live queries on global tables are not supported yet; subscribe to a query on a shard")
	}
	var sub *shardhost.Subscription
	err := n.onShard(ctx, shardID, func() (err error) {
		sub, err = n.cfg.Shards.Subscribe(ctx, shardID, function, args, sinceSeq)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &subStream{sub: sub, shardID: shardID}, nil
}

// subStream adapts a shard subscription to api.Stream.
type subStream struct {
	sub     *shardhost.Subscription
	shardID string
}

func (s *subStream) Next(ctx context.Context) (*api.Update, error) {
	select {
	case u, ok := <-s.sub.Updates():
		if !ok {
			return nil, api.Errorf(codes.Unavailable, "subscription on %s ended", s.shardID)
		}
		if u.Kind == shardhost.UpdateError {
			return nil, u.Err
		}
		return toAPI(s.shardID, u), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *subStream) Close() { s.sub.Close() }

func toAPI(shardID string, u shardhost.Update) *api.Update {
	out := &api.Update{Seq: u.Seq, ShardID: shardID, Columns: u.Columns, Rows: u.Rows, Reset: u.Reset, Keyed: u.Keyed}
	switch u.Kind {
	case shardhost.UpdateSnapshot:
		out.Kind = api.UpdateSnapshot
	case shardhost.UpdateDelta:
		out.Kind = api.UpdateDelta
	}
	out.Changes = u.Changes // shared by every subscriber of the query: read-only
	return out
}
