// Package client is the Go client of Lunora's public gRPC API, with
// sessions that carry the global tier's bookmark for read-your-writes.
package client

import (
	"context"
	"sync"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Client calls a Lunora gateway. It is safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	api  lunorav1.LunoraClient
}

// Dial prepares a client for the gateway's gRPC address. It connects on
// first use; opts are added after the default insecure credentials.
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, api: lunorav1.NewLunoraClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call runs a function. shardKey may be empty (the key comes from args).
// read applies to queries on global tables. Errors are *api.Error with the
// canonical code.
func (c *Client) Call(ctx context.Context, function string, args map[string]any, shardKey string, read api.ReadOptions) (*api.Result, error) {
	pargs, err := rpc.ArgsToProto(args)
	if err != nil {
		return nil, err
	}
	resp, err := c.api.Call(ctx, &lunorav1.CallRequest{Function: function, Args: pargs, ShardKey: shardKey, Read: rpc.ReadOptionsToProto(read)})
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	return rpc.ResultFromCallResponse(resp), nil
}

// Sql runs one admin statement on a shard ("" is the root shard,
// "__global__" the global tier).
func (c *Client) Sql(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	pparams, err := rpc.ArgsToProto(params)
	if err != nil {
		return nil, err
	}
	resp, err := c.api.Sql(ctx, &lunorav1.SqlRequest{ShardId: shardID, Sql: sql, Params: pparams, Read: rpc.ReadOptionsToProto(read)})
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	return rpc.ResultFromSqlResponse(resp), nil
}

// FanOut runs a query function on many shards of its group (the listed
// shard keys, or all shards) and merges their answers; see
// gateway.Gateway.FanOut for the merges and bounds. Shards that did not
// answer are in the result's Failed, not in the error.
func (c *Client) FanOut(ctx context.Context, req api.FanOutRequest) (*api.FanOutResult, error) {
	preq, err := rpc.FanOutRequestToProto(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.api.FanOut(ctx, preq)
	if err != nil {
		return nil, rpc.FromStatus(err)
	}
	return rpc.FanOutResultFromResponse(resp), nil
}

// Session is a sequence of calls that reads its own writes on the global
// tier, whichever replica serves it (D1's withSession): it remembers the
// newest bookmark any of its calls returned and sends it with every call,
// so a query on global tables waits until the serving replica has applied
// it. Shard calls are unaffected (a shard has one copy). Safe for
// concurrent use.
type Session struct {
	c        *Client
	mu       sync.Mutex
	bookmark uint64
}

// NewSession starts a session, optionally from a bookmark saved earlier
// (0 for none).
func (c *Client) NewSession(bookmark uint64) *Session { return &Session{c: c, bookmark: bookmark} }

// Bookmark is the newest bookmark the session has seen.
func (s *Session) Bookmark() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bookmark
}

func (s *Session) observe(res *api.Result) {
	if res == nil || res.Bookmark == 0 {
		return
	}
	s.mu.Lock()
	if res.Bookmark > s.bookmark {
		s.bookmark = res.Bookmark
	}
	s.mu.Unlock()
}

func (s *Session) read() api.ReadOptions {
	if b := s.Bookmark(); b > 0 {
		return api.ReadOptions{Consistency: api.Bookmark, Bookmark: b}
	}
	return api.ReadOptions{}
}

// Call runs a function within the session.
func (s *Session) Call(ctx context.Context, function string, args map[string]any, shardKey string) (*api.Result, error) {
	res, err := s.c.Call(ctx, function, args, shardKey, s.read())
	s.observe(res)
	return res, err
}

// Sql runs an admin statement within the session.
func (s *Session) Sql(ctx context.Context, shardID, sql string, params map[string]any) (*api.Result, error) {
	res, err := s.c.Sql(ctx, shardID, sql, params, s.read())
	s.observe(res)
	return res, err
}

// Subscribe starts a live query: the stream's first update is the query's
// result (or, with sinceSeq, the changes since that commit seq), then keyed
// deltas as commits change it. Refusals (unknown function, a mutation, bad
// arguments) come back here, before any update. Close the stream when done.
func (c *Client) Subscribe(ctx context.Context, function string, args map[string]any, shardKey string, sinceSeq uint64) (api.Stream, error) {
	pargs, err := rpc.ArgsToProto(args)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.api.Subscribe(sctx, &lunorav1.SubscribeRequest{Function: function, Args: pargs, ShardKey: shardKey, SinceSeq: sinceSeq})
	if err != nil {
		cancel()
		return nil, rpc.FromStatus(err)
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, rpc.FromStatus(err)
	}
	return &updateStream{stream: stream, cancel: cancel, first: first}, nil
}

type updateStream struct {
	stream grpc.ServerStreamingClient[lunorav1.SubscribeEvent]
	cancel context.CancelFunc
	first  *lunorav1.SubscribeEvent
}

// Next returns the next typed update; ctx bounds this wait only.
func (s *updateStream) Next(ctx context.Context) (*api.Update, error) {
	if ev := s.first; ev != nil {
		s.first = nil
		return rpc.UpdateFromEvent(ev), nil
	}
	type recv struct {
		ev  *lunorav1.SubscribeEvent
		err error
	}
	ch := make(chan recv, 1)
	go func() {
		ev, err := s.stream.Recv()
		ch <- recv{ev, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, rpc.FromStatus(r.err)
		}
		return rpc.UpdateFromEvent(r.ev), nil
	case <-ctx.Done():
		s.cancel() // a Recv cannot be abandoned; end the stream
		return nil, ctx.Err()
	}
}

func (s *updateStream) Close() { s.cancel() }
