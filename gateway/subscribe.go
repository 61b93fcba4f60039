package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// subscribeLabel is the function label of subscriptions in metrics: the
// function name is kept, with this prefix.
const subscribePrefix = "subscribe "

// Subscribe starts a live query: it validates the function (a query on a
// shard), resolves the shard and binds the arguments like Call, then asks
// the Backend. The stream lives as long as ctx. It is rpc.Frontend's
// entry point: the subscription holds one of its client's live-connection
// slots (Config.MaxWebSocketsPerClient) until the stream is closed.
func (g *Gateway) Subscribe(ctx context.Context, function string, args map[string]any, shardKey string, sinceSeq uint64) (api.Stream, error) {
	ctx, err := g.grpcAuth(ctx)
	var release func()
	if err == nil {
		release, err = g.limits.admitSocket(grpcClientKey(ctx))
	}
	if err != nil {
		label := g.functionLabel(function)
		if label != unknownLabel {
			label = subscribePrefix + label
		}
		g.metrics.observe(protocolGRPC, label, err, 0)
		return nil, err
	}
	st, err := g.subscribe(ctx, protocolGRPC, function, args, shardKey, sinceSeq)
	if err != nil {
		release()
		return nil, err
	}
	return &releasingStream{Stream: st, release: release}, nil
}

// releasingStream gives its client's slot back when closed.
type releasingStream struct {
	api.Stream
	once    sync.Once
	release func()
}

func (s *releasingStream) Close() {
	s.Stream.Close()
	s.once.Do(s.release)
}

func (g *Gateway) subscribe(ctx context.Context, protocol, function string, args map[string]any, shardKey string, sinceSeq uint64) (st api.Stream, err error) {
	start := time.Now()
	label := g.functionLabel(function)
	if label != unknownLabel {
		label = subscribePrefix + label
	}
	defer func() { g.metrics.observe(protocol, label, err, time.Since(start)) }()
	ctx, id, err := g.identify(ctx)
	if err != nil {
		return nil, err
	}
	if function == "" {
		return nil, api.New(codes.InvalidArgument, "function must be set: name a query function declared in the app schema")
	}
	fn := g.app.Function(function)
	if fn == nil {
		return nil, &api.Error{Code: codes.NotFound, Msg: fmt.Sprintf("unknown function %q", clip(function)), Err: ErrUnknownFunction}
	}
	if fn.Kind != schema.Query {
		return nil, api.Errorf(codes.InvalidArgument, "function %s is a mutation; subscribe to a query function", fn.Name)
	}
	if fn.Global() {
		return nil, api.Errorf(codes.Unimplemented, "live queries on global tables are not supported yet; %s is global", fn.Name)
	}
	shardID, args, err := g.app.ResolveShard(fn, args, shardKey)
	if err != nil {
		return nil, err
	}
	if err := g.authorizeCall(id, fn.Name, shardID); err != nil {
		return nil, err
	}
	if !id.Expires.IsZero() && !time.Now().Before(id.Expires) {
		return nil, expiredError(id.Expires)
	}
	bound, err := fn.BindArgs(args)
	if err != nil {
		return nil, err
	}
	if id.Expires.IsZero() {
		st, err = g.backend.Subscribe(ctx, shardID, fn.Name, bound, sinceSeq)
		if err != nil {
			return nil, g.backendError(ctx, err, "subscription to "+fn.Name, shardID)
		}
		return st, nil
	}
	// A subscription never outlives its caller's credential: the stream
	// to the node is opened with the credential's expiry as deadline (a
	// node stream ends with the context it was opened with), and Next
	// says why it ended.
	sctx, cancel := context.WithDeadline(ctx, id.Expires)
	st, err = g.backend.Subscribe(sctx, shardID, fn.Name, bound, sinceSeq)
	if err != nil {
		cancel()
		return nil, g.backendError(ctx, err, "subscription to "+fn.Name, shardID)
	}
	return &expiringStream{Stream: st, expires: id.Expires, cancel: cancel}, nil
}
