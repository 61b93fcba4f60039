package rpc

import (
	"context"
	"errors"
	"io"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
)

// EventFromUpdate converts a live query's update for the wire.
func EventFromUpdate(u *api.Update) (*lunorav1.SubscribeEvent, error) {
	ev := &lunorav1.SubscribeEvent{Seq: u.Seq, Columns: u.Columns, Reset_: u.Reset, Keyed: u.Keyed, ShardId: u.ShardID}
	switch u.Kind {
	case api.UpdateSnapshot:
		ev.Kind = lunorav1.SubscribeEvent_SNAPSHOT
	case api.UpdateDelta:
		ev.Kind = lunorav1.SubscribeEvent_DELTA
	}
	rows, err := rowsToProto(u.Rows)
	if err != nil {
		return nil, err
	}
	ev.Rows = rows
	for _, c := range u.Changes {
		key, err := rowsToProto([][]any{c.Key})
		if err != nil {
			return nil, err
		}
		pc := &lunorav1.RowChange{Key: key[0].GetValues()}
		switch c.Op {
		case api.ChangeInsert:
			pc.Op = lunorav1.RowChange_INSERT
		case api.ChangeUpdate:
			pc.Op = lunorav1.RowChange_UPDATE
		case api.ChangeDelete:
			pc.Op = lunorav1.RowChange_DELETE
		}
		if c.Row != nil {
			row, err := rowsToProto([][]any{c.Row})
			if err != nil {
				return nil, err
			}
			pc.Row = row[0]
		}
		ev.Changes = append(ev.Changes, pc)
	}
	return ev, nil
}

// UpdateFromEvent converts a wire event back.
func UpdateFromEvent(ev *lunorav1.SubscribeEvent) *api.Update {
	u := &api.Update{Seq: ev.GetSeq(), ShardID: ev.GetShardId(), Columns: ev.GetColumns(), Rows: rowsFromProto(ev.GetRows()), Reset: ev.GetReset_(), Keyed: ev.GetKeyed()}
	switch ev.GetKind() {
	case lunorav1.SubscribeEvent_SNAPSHOT:
		u.Kind = api.UpdateSnapshot
	case lunorav1.SubscribeEvent_DELTA:
		u.Kind = api.UpdateDelta
	}
	for _, pc := range ev.GetChanges() {
		c := api.RowChange{Key: rowsFromProto([]*lunorav1.Row{{Values: pc.GetKey()}})[0]}
		switch pc.GetOp() {
		case lunorav1.RowChange_INSERT:
			c.Op = api.ChangeInsert
		case lunorav1.RowChange_UPDATE:
			c.Op = api.ChangeUpdate
		case lunorav1.RowChange_DELETE:
			c.Op = api.ChangeDelete
		}
		if pc.GetRow() != nil {
			c.Row = rowsFromProto([]*lunorav1.Row{pc.GetRow()})[0]
		}
		u.Changes = append(u.Changes, c)
	}
	return u
}

// pump sends a stream's updates until it ends, then returns its error as a
// status (nil when the client went away).
func pump(ctx context.Context, st api.Stream, send func(*lunorav1.SubscribeEvent) error) error {
	defer st.Close()
	for {
		u, err := st.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return ToStatus(err)
		}
		ev, err := EventFromUpdate(u)
		if err != nil {
			return ToStatus(err)
		}
		if err := send(ev); err != nil {
			return err
		}
	}
}

// Subscribe implements lunorav1.NodeServer.
func (s *NodeServer) Subscribe(req *lunorav1.NodeSubscribeRequest, out grpc.ServerStreamingServer[lunorav1.SubscribeEvent]) error {
	ctx, err := withCaller(api.WithRingEpoch(out.Context(), req.GetEpoch()), req.GetCaller())
	if err != nil {
		return statusFor(ctx, s.log, "Node.Subscribe", err)
	}
	st, err := s.shards.Subscribe(ctx, req.GetShardId(), req.GetFunction(), ArgsFromProto(req.GetArgs()), req.GetSinceSeq())
	if err != nil {
		return statusFor(ctx, s.log, "Node.Subscribe", err)
	}
	return pump(ctx, st, out.Send)
}

// Subscribe implements lunorav1.LunoraServer.
func (s *PublicServer) Subscribe(req *lunorav1.SubscribeRequest, out grpc.ServerStreamingServer[lunorav1.SubscribeEvent]) error {
	ctx := out.Context()
	st, err := s.front.Subscribe(ctx, req.GetFunction(), ArgsFromProto(req.GetArgs()), req.GetShardKey(), req.GetSinceSeq())
	if err != nil {
		return ToStatus(err)
	}
	return pump(ctx, st, out.Send)
}

// Subscribe starts a live query on a shard of the node, as the caller ctx
// carries, if any.
func (c *NodeClient) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	pargs, err := ArgsToProto(args)
	if err != nil {
		return nil, err
	}
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.node.Subscribe(sctx, &lunorav1.NodeSubscribeRequest{ShardId: shardID, Function: function, Args: pargs, SinceSeq: sinceSeq, Epoch: api.RingEpochOf(ctx), Caller: caller})
	if err != nil {
		cancel()
		return nil, c.fromStatus(err)
	}
	// The first event (or the refusal) arrives before we return, so bad
	// input fails the call itself rather than the first Next.
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, c.fromStatus(err)
	}
	return &clientStream{c: c, stream: stream, cancel: cancel, first: first}, nil
}

type clientStream struct {
	c      *NodeClient
	stream grpc.ServerStreamingClient[lunorav1.SubscribeEvent]
	cancel context.CancelFunc
	first  *lunorav1.SubscribeEvent
}

// Next waits for the next event. The wait is bounded by the context the
// stream was opened with (Subscribe's ctx); ctx is only checked first, so
// callers pass that same context or one derived from it.
func (s *clientStream) Next(ctx context.Context) (*api.Update, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ev := s.first; ev != nil {
		s.first = nil
		return UpdateFromEvent(ev), nil
	}
	ev, err := s.stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, s.c.fromStatus(err)
	}
	return UpdateFromEvent(ev), nil
}

func (s *clientStream) Close() { s.cancel() }
