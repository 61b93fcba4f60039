package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// maxNameInError bounds how much of a client-sent function name an error
// message echoes.
const maxNameInError = 128

// Gateway validates calls against the app schema and forwards them to the
// Backend. It implements rpc.Frontend and is safe for concurrent use.
type Gateway struct {
	app     *schema.App
	backend Backend
	log     *slog.Logger
	cfg     Config
	metrics *metrics

	limits    *clientLimits       // per-client limits (limits.go)
	schemaLim schema.Limits       // Config.SchemaLimits, defaulted
	origins   []string            // Config.CORSOrigins, normalized (edge.go)
	originSet map[string]struct{} // origins as a set
}

// New returns a Gateway for a valid cfg and registers its metrics.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	g := &Gateway{app: cfg.App, backend: cfg.Backend, log: cfg.Logger, cfg: cfg, metrics: m, schemaLim: cfg.schemaLimits()}
	if g.limits, err = newClientLimits(cfg, cfg.Registerer); err != nil {
		return nil, err
	}
	g.origins, _ = ParseOrigins(cfg.CORSOrigins) // checked by Validate
	g.originSet = make(map[string]struct{}, len(g.origins))
	for _, o := range g.origins {
		g.originSet[o] = struct{}{}
	}
	return g, nil
}

// Call runs a declared function: it validates the arguments, computes the
// shard from them (or from shardKey) and forwards to the Backend within
// Config.RequestTimeout. It is rpc.Frontend's entry point, so its requests
// are counted with protocol="grpc"; Handler counts its own as "http".
func (g *Gateway) Call(ctx context.Context, function string, args map[string]any, shardKey string, read api.ReadOptions) (*api.Result, error) {
	ctx, release, err := g.admitGRPC(ctx)
	if err != nil {
		g.metrics.observe(protocolGRPC, g.functionLabel(function), err, 0)
		return nil, err
	}
	defer release()
	return g.call(ctx, protocolGRPC, time.Now(), function, args, shardKey, read)
}

// Sql runs one admin statement on the shard named by shardID ("" or
// schema.RootShard for the root shard). Counted with protocol="grpc".
func (g *Gateway) Sql(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	ctx, release, err := g.admitGRPC(ctx)
	if err != nil {
		g.metrics.observe(protocolGRPC, sqlLabel, err, 0)
		return nil, err
	}
	defer release()
	return g.sql(ctx, protocolGRPC, time.Now(), shardID, sql, params, read)
}

// Status reports the Backend's status. Counted with protocol="grpc".
func (g *Gateway) Status(ctx context.Context) (*api.Status, error) {
	ctx, release, err := g.admitGRPC(ctx)
	if err != nil {
		g.metrics.observe(protocolGRPC, statusLabel, err, 0)
		return nil, err
	}
	defer release()
	return g.status(ctx, protocolGRPC, time.Now())
}

func (g *Gateway) call(ctx context.Context, protocol string, start time.Time, function string, args map[string]any, shardKey string, read api.ReadOptions) (res *api.Result, err error) {
	label := g.functionLabel(function)
	defer func() { g.metrics.observe(protocol, label, err, time.Since(start)) }()

	if function == "" {
		return nil, api.New(codes.InvalidArgument, "function must be set: name a function declared in the app schema")
	}
	ctx, id, err := g.identify(ctx)
	if err != nil {
		return nil, err
	}
	fn := g.app.Function(function)
	if fn == nil {
		return nil, &api.Error{Code: codes.NotFound, Msg: fmt.Sprintf("unknown function %q", clip(function)), Err: ErrUnknownFunction}
	}
	shardID, args, err := g.app.ResolveShard(fn, args, shardKey)
	if err != nil {
		return nil, err
	}
	if err := g.authorizeCall(id, fn.Name, shardID); err != nil {
		return nil, err
	}
	bound, err := fn.BindArgs(args)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	if err := checkRead(read); err != nil {
		return nil, err
	}
	read.Forwarded = false
	res, err = g.backend.Call(ctx, shardID, fn.Name, bound, read)
	if err != nil {
		return nil, g.backendError(ctx, err, "function "+fn.Name, shardID)
	}
	return fillShard(res, shardID)
}

func (g *Gateway) sql(ctx context.Context, protocol string, start time.Time, shardID, sql string, params map[string]any, read api.ReadOptions) (res *api.Result, err error) {
	defer func() { g.metrics.observe(protocol, sqlLabel, err, time.Since(start)) }()

	ctx, id, err := g.identify(ctx)
	if err != nil {
		return nil, err
	}
	if err := auth.AuthorizeSQL(id); err != nil {
		return nil, err
	}
	if _, _, err := g.app.ParseShardID(shardID); err != nil {
		return nil, err
	}
	if shardID == "" {
		shardID = schema.RootShard
	}
	if strings.TrimSpace(sql) == "" {
		return nil, api.New(codes.InvalidArgument, "sql must not be empty: send exactly one statement")
	}
	if len(sql) > g.schemaLim.MaxSQLLen {
		return nil, api.Errorf(codes.InvalidArgument, "sql is %d bytes, over the limit of %d", len(sql), g.schemaLim.MaxSQLLen)
	}
	if len(params) > g.schemaLim.MaxParams {
		return nil, api.Errorf(codes.InvalidArgument, "params has %d entries, over the limit of %d per statement", len(params), g.schemaLim.MaxParams)
	}
	params, err = normalizeParams(params)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	if err := checkRead(read); err != nil {
		return nil, err
	}
	read.Forwarded = false
	res, err = g.backend.Exec(ctx, shardID, sql, params, read)
	if err != nil {
		return nil, g.backendError(ctx, err, "statement", shardID)
	}
	return fillShard(res, shardID)
}

func (g *Gateway) status(ctx context.Context, protocol string, start time.Time) (st *api.Status, err error) {
	defer func() { g.metrics.observe(protocol, statusLabel, err, time.Since(start)) }()

	ctx, _, err = g.identify(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	st, err = g.backend.Status(ctx)
	if err != nil {
		return nil, g.backendError(ctx, err, "status", "")
	}
	if st == nil {
		return nil, g.backendError(ctx, errors.New("backend returned no status"), "status", "")
	}
	return st, nil
}

// functionLabel bounds the function label to the declared names.
func (g *Gateway) functionLabel(function string) string {
	if function != "" && g.app.Function(function) != nil {
		return function
	}
	return unknownLabel
}

// backendError gives every Backend failure a canonical code: coded errors
// pass unchanged, context errors say what timed out, anything else is
// logged and answered as a generic INTERNAL.
func (g *Gateway) backendError(ctx context.Context, err error, what, shardID string) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	where := ""
	if shardID != "" {
		where = " on shard " + shardID
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &api.Error{Code: codes.DeadlineExceeded, Msg: fmt.Sprintf("%s%s did not finish before the deadline (the gateway allows %s)", what, where, g.cfg.RequestTimeout), Err: err}
	case errors.Is(err, context.Canceled):
		return &api.Error{Code: codes.Canceled, Msg: "request canceled", Err: err}
	}
	g.log.ErrorContext(ctx, "backend failed", "what", what, "shard", shardID, "err", err)
	return &api.Error{Code: codes.Internal, Msg: "internal error", Err: err}
}

func fillShard(res *api.Result, shardID string) (*api.Result, error) {
	if res == nil {
		return nil, api.New(codes.Internal, "internal error: the backend returned no result")
	}
	if res.ShardID == "" {
		res.ShardID = shardID
	}
	return res, nil
}

// normalizeParams makes JSON numbers exact Go values (int64 when integral,
// else float64) and refuses values SQL cannot bind.
func normalizeParams(params map[string]any) (map[string]any, error) {
	if len(params) == 0 {
		return params, nil
	}
	out := make(map[string]any, len(params))
	for name, v := range params {
		switch x := v.(type) {
		case nil, int64, float64, string, []byte, bool:
			out[name] = x
		case json.Number:
			if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
				out[name] = i
				continue
			}
			f, err := x.Float64()
			if err != nil {
				return nil, api.Errorf(codes.InvalidArgument, "parameter %q: number %s is out of range", clip(name), x)
			}
			out[name] = f
		default:
			return nil, api.Errorf(codes.InvalidArgument, "parameter %q must be null, a number, a string or a boolean, got %s", clip(name), kindOf(v))
		}
	}
	return out, nil
}

func kindOf(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// clip shortens a client-sent name for an error message.
func clip(s string) string {
	if len(s) <= maxNameInError {
		return s
	}
	return s[:maxNameInError] + "…"
}

// checkRead refuses read options that cannot be served.
func checkRead(r api.ReadOptions) error {
	if r.Consistency == api.Bookmark && r.Bookmark == 0 {
		return api.New(codes.InvalidArgument, "consistency bookmark needs the bookmark a write returned (x-lunora-bookmark)")
	}
	if r.MaxStaleness < 0 {
		return api.New(codes.InvalidArgument, "max_staleness_ms must not be negative")
	}
	return nil
}
