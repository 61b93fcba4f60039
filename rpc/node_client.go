package rpc

import (
	"context"
	"errors"
	"time"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Keepalive timing shared by NodeClient and ServerOptions: the client pings
// a silent connection only while calls are in flight, and never more often
// than the server's enforcement policy accepts (gRPC's default policy of 5
// minutes would answer 30s pings with GOAWAY "too_many_pings").
const (
	clientPingEvery   = 30 * time.Second
	clientPingTimeout = 10 * time.Second
	serverMinPing     = 15 * time.Second
)

// reconnectBackoff spaces a NodeClient's attempts to reconnect to a node
// that went away. gRPC's default (1 s growing 1.6× to 2 minutes) leaves a
// node that restarted after a few seconds unreachable for as long again —
// calls fail at once with the last "connection refused" until the next
// attempt. Capped at 500 ms (±20%), a restarted node is reached within
// 0.6 s of listening; an attempt on a dead loopback or LAN address costs a
// refused SYN.
var reconnectBackoff = backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond}

// streamWorkers is the number of request workers of a server built with
// ServerOptions: enough for the concurrent calls of a loaded gateway.
const streamWorkers = 64

// ServerOptions are the grpc.ServerOptions a Lunora gRPC server (node or
// gateway) should be built with so that NodeClient's keepalive pings are
// accepted and dead client connections are found.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: serverMinPing}),
		grpc.KeepaliveParams(ServerKeepalive()),
		// Requests run on long-lived workers rather than a new goroutine
		// each: a new goroutine's stack grows (morestack, copystack) on
		// every call through the handler's deep stack, which profiled at
		// ~10% of a gateway's CPU. A request finding every worker busy
		// still gets its own goroutine.
		grpc.NumStreamWorkers(streamWorkers),
	}
}

// ServerKeepalive is the keepalive of ServerOptions, for a server that
// sets more of its parameters (grpc.KeepaliveParams replaces them all).
func ServerKeepalive() keepalive.ServerParameters {
	return keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}
}

// NodeClient calls the Node service of one lunora-node. It has the methods
// of Shards (and of gateway.Backend), so a gateway can use a remote node
// and an in-process shard host alike. It is safe for concurrent use.
//
// Errors are *api.Error with the node's code, message and retry hint. A
// node that cannot be reached is UNAVAILABLE, naming its address — also when
// the caller's deadline expired before a connection was made.
type NodeClient struct {
	addr string
	conn *grpc.ClientConn
	node lunorav1.NodeClient
}

// NewNodeClient prepares a client for the node at addr ("host:port"). Like
// grpc.NewClient it does not connect until the first call. opts are added
// after the defaults (insecure transport credentials and keepalive): in a
// cluster with mutual TLS, tlsconf.DialOption of the caller's client
// configuration replaces the plaintext transport.
func NewNodeClient(addr string, opts ...grpc.DialOption) (*NodeClient, error) {
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: clientPingEvery, Timeout: clientPingTimeout}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: 5 * time.Second}),
		grpc.WithChainUnaryInterceptor(markNotSent),
	}, opts...)
	conn, err := grpc.NewClient(addr, all...)
	if err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "node address %q: %w", addr, err)
	}
	return &NodeClient{addr: addr, conn: conn, node: lunorav1.NewNodeClient(conn)}, nil
}

// Addr is the node address the client calls.
func (c *NodeClient) Addr() string { return c.addr }

// Close closes the connection; calls in flight fail with CANCELED.
func (c *NodeClient) Close() error { return c.conn.Close() }

// Call runs a function on a shard of the node, as the caller ctx carries
// (auth.FromContext), if any.
func (c *NodeClient) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	pargs, err := ArgsToProto(args)
	if err != nil {
		return nil, err
	}
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.node.Call(ctx, &lunorav1.NodeCallRequest{ShardId: shardID, Function: function, Args: pargs, Read: ReadOptionsToProto(read), Forwarded: read.Forwarded, Epoch: api.RingEpochOf(ctx), Caller: caller}, leaderHintOpts(ctx)...)
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return ResultFromCallResponse(resp), nil
}

// Exec runs one admin statement on a shard of the node, as the caller ctx
// carries, if any.
func (c *NodeClient) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	pparams, err := ArgsToProto(params)
	if err != nil {
		return nil, err
	}
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.node.Sql(ctx, &lunorav1.NodeSqlRequest{ShardId: shardID, Sql: sql, Params: pparams, Read: ReadOptionsToProto(read), Forwarded: read.Forwarded, Epoch: api.RingEpochOf(ctx), Caller: caller}, leaderHintOpts(ctx)...)
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return ResultFromSqlResponse(resp), nil
}

// Status asks the node about itself.
func (c *NodeClient) Status(ctx context.Context) (*api.Status, error) {
	resp, err := c.node.Status(ctx, &lunorav1.StatusRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return StatusFromStatusResponse(resp), nil
}

// Join asks the node to make another node a member of the global tier.
func (c *NodeClient) Join(ctx context.Context, req api.JoinRequest) (string, error) {
	resp, err := c.node.Join(ctx, &lunorav1.JoinRequest{
		NodeId: req.NodeID, RaftAddr: req.RaftAddr, GrpcAddr: req.GRPCAddr, Voter: req.Voter,
		Incarnation: req.Incarnation, Forwarded: req.Forwarded,
	})
	if err != nil {
		return "", c.fromStatus(err)
	}
	return resp.GetLeaderId(), nil
}

// RemoveNode asks the node to remove a node from the global tier.
func (c *NodeClient) RemoveNode(ctx context.Context, req api.RemoveRequest) error {
	if _, err := c.node.RemoveNode(ctx, &lunorav1.RemoveNodeRequest{NodeId: req.NodeID, Force: req.Force,
		Incarnation: req.Incarnation, Forwarded: req.Forwarded}); err != nil {
		return c.fromStatus(err)
	}
	return nil
}

// RegisterShard asks the node to record a shard in the registry as held by
// holder (the node creating it).
func (c *NodeClient) RegisterShard(ctx context.Context, shardID, holder string, forwarded bool) (bool, string, error) {
	resp, err := c.node.RegisterShard(ctx, &lunorav1.RegisterShardRequest{ShardId: shardID, Holder: holder, Forwarded: forwarded})
	if err != nil {
		return false, "", c.fromStatus(err)
	}
	return resp.GetExisted(), resp.GetHolder(), nil
}

// fromStatus is FromStatus naming the node when it could not be reached.
func (c *NodeClient) fromStatus(err error) error {
	converted := FromStatus(err)
	var e *api.Error
	if !errors.As(converted, &e) {
		return converted
	}
	switch {
	case e.Code == codes.Unavailable && e.Reason != "":
		return e // the node's own answer (NOT_OWNER, SHARD_MOVING, …)
	case e.Code == codes.Unavailable:
		if c.conn.GetState() == connectivity.TransientFailure {
			// Callers still want this node: try to connect again now
			// rather than at the end of the backoff, so a node that came
			// back is reached by the next call.
			c.conn.ResetConnectBackoff()
		}
		return &api.Error{Code: codes.Unavailable, Msg: "node " + c.addr + ": " + e.Msg, RetryAfter: e.RetryAfter, Err: e}
	case e.Code == codes.DeadlineExceeded && c.conn.GetState() != connectivity.Ready:
		// The deadline ran out while no connection was up: the node is
		// unreachable, which the caller can act on (another node, later),
		// unlike a slow answer.
		return &api.Error{Code: codes.Unavailable, Msg: "node " + c.addr + " is unreachable: " + e.Msg, Err: e}
	}
	return converted
}
