package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// The fan-out types live in package api, shared with the gRPC glue and the
// Go client; these names are the gateway's view of them.
type (
	// MergeMode says how the shards' answers are merged.
	MergeMode = api.MergeMode
	// FanOutRequest is an explicit cross-shard read; see Gateway.FanOut.
	FanOutRequest = api.FanOutRequest
	// ShardFailure is a shard of a fan-out that did not answer.
	ShardFailure = api.ShardFailure
	// FanOutResult is the merged answer of a fan-out.
	FanOutResult = api.FanOutResult
)

// Merge modes; see api.MergeMode.
const (
	MergeConcat = api.MergeConcat
	MergeTopK   = api.MergeTopK
	MergeKeyset = api.MergeKeyset
)

// ShardLister is implemented by Backends that can list registered shards
// (from the cluster's shard registry). ListShards returns up to limit IDs
// of group's shards after the ID after, in ID order, and the after of the
// next page ("" at the end). FanOut with AllShards needs it.
type ShardLister interface {
	ListShards(ctx context.Context, group, after string, limit int) (ids []string, next string, err error)
}

// Defaults and bounds of a fan-out.
const (
	// DefaultMaxFanOutShards is Config.MaxFanOutShards when it is zero.
	DefaultMaxFanOutShards = 1000
	// DefaultMaxFanOutRows is Config.MaxFanOutRows when it is zero.
	DefaultMaxFanOutRows = 10000
	// DefaultFanOutConcurrency is FanOutRequest.Concurrency when zero;
	// MaxFanOutConcurrency bounds it.
	DefaultFanOutConcurrency = 16
	MaxFanOutConcurrency     = 64
	// DefaultShardTimeout is FanOutRequest.ShardTimeout when zero.
	DefaultShardTimeout = 2 * time.Second

	// listPageSize is how many shard IDs one ListShards call asks for.
	listPageSize = 1000
	// fanoutLabel is the function label of every fan-out in the metrics.
	fanoutLabel = "fanout"
)

// FanOut runs one query function of a shard_by group on many shards of the
// group — the shards of req.ShardKeys, or with req.AllShards every shard the
// Backend's ShardLister lists — and merges their answers. It is
// rpc.Frontend's entry point, counted with protocol="grpc" and
// function="fanout" as one request however many shards it asks.
//
// Each shard is asked with g's Backend.Call, the function's shard_by
// argument set to the shard's key (the caller must not set it), at most
// req.Concurrency shards at once (default 16, at most 64), each within
// req.ShardTimeout (default 2s, at most Config.RequestTimeout, which also
// bounds the whole fan-out). A shard that fails — any code, DEADLINE_EXCEEDED
// when its timeout passes, INTERNAL when it answers other columns than the
// shards before it in shard ID order — is listed in Failed, sorted by shard
// ID, and the others are merged; only a bad request (INVALID_ARGUMENT,
// NOT_FOUND, FAILED_PRECONDITION), a failure to list the shards or the
// caller's own cancellation fail the whole call.
//
// Merges, all deterministic for the same answers:
//   - MergeConcat: the shards' rows in shard ID order, each shard's in its
//     order, cut at Limit when set; without a Limit more than
//     Config.MaxFanOutRows rows are refused (FAILED_PRECONDITION).
//   - MergeTopK: the Limit rows with the least (Desc: greatest) OrderBy
//     values across all shards, in that order, ties broken by shard ID then
//     row position. Values order as in SQLite: NULL < numbers < text < blob.
//   - MergeKeyset: rows sorted by (OrderBy value, shard ID), ascending or
//     (Desc) descending, Limit rows a page. NextCursor (empty after the last
//     page) continues after the page's last row: pass it back as Cursor with
//     the same function, args, shards, OrderBy and Desc (anything else is
//     refused, INVALID_ARGUMENT). Every page runs the function in full on
//     every shard and drops the rows up to the cursor at the gateway, so
//     OrderBy must be unique within a shard (its primary key, a seq) for
//     pages to be exact: rows of one shard that share the cursor's value
//     would be skipped. A shard that fails on one page loses its rows of
//     that page only; the next page does not return them.
//
// OrderBy names a result column (INVALID_ARGUMENT if the answering shards
// have no such column) and is required by top-k and keyset. Limit is at most
// Config.MaxFanOutRows; len(ShardKeys), or the shards AllShards finds, at
// most Config.MaxFanOutShards.
func (g *Gateway) FanOut(ctx context.Context, req FanOutRequest) (*FanOutResult, error) {
	ctx, release, err := g.admitGRPC(ctx)
	if err != nil {
		g.metrics.observe(protocolGRPC, g.functionLabel(req.Function), err, 0)
		return nil, err
	}
	defer release()
	return g.fanOut(ctx, protocolGRPC, time.Now(), req)
}

// fanOutPlan is a validated fan-out request.
type fanOutPlan struct {
	fn           *schema.Function
	group        string
	args         map[string]any // the caller's args, without the shard key
	targets      []shardTarget  // sorted by ID; filled after listing for AllShards
	lister       ShardLister    // AllShards only
	merge        MergeMode
	orderBy      string
	desc         bool
	limit        int
	after        *cursorPos // keyset: rows strictly after it follow
	identity     string
	concurrency  int
	shardTimeout time.Duration
}

// shardTarget is one shard to ask, with its bound arguments, or why it
// cannot be asked.
type shardTarget struct {
	id   string
	args map[string]any
	fail *ShardFailure
}

// shardAnswer is what one shard gave.
type shardAnswer struct {
	id      string
	columns []string
	rows    []*mergeRow // pruned to what the merge can use
	total   int         // rows the shard returned
	fail    *ShardFailure
}

func (g *Gateway) maxFanOutShards() int {
	if g.cfg.MaxFanOutShards > 0 {
		return g.cfg.MaxFanOutShards
	}
	return DefaultMaxFanOutShards
}

func (g *Gateway) maxFanOutRows() int {
	if g.cfg.MaxFanOutRows > 0 {
		return g.cfg.MaxFanOutRows
	}
	return DefaultMaxFanOutRows
}

func (g *Gateway) fanOut(ctx context.Context, protocol string, start time.Time, req FanOutRequest) (res *FanOutResult, err error) {
	defer func() { g.metrics.observe(protocol, fanoutLabel, err, time.Since(start)) }()

	ctx, id, err := g.identify(ctx)
	if err != nil {
		return nil, err
	}
	p, err := g.planFanOut(req)
	if err != nil {
		return nil, err
	}
	if err := g.authorizeFanOut(id, p); err != nil {
		return nil, err
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	if p.lister != nil {
		if err := g.listTargets(ctx, p); err != nil {
			return nil, err
		}
	}
	answers := g.askShards(ctx, p)
	if err := caller.Err(); err != nil {
		// The caller is gone or out of time: no answer reaches it.
		return nil, g.backendError(caller, err, "fan-out of function "+p.fn.Name, "")
	}
	return g.mergeAnswers(p, answers)
}

// planFanOut validates req without any I/O.
func (g *Gateway) planFanOut(req FanOutRequest) (*fanOutPlan, error) {
	if req.Function == "" {
		return nil, api.New(codes.InvalidArgument, "function must be set: name a query function of a shard_by group")
	}
	fn := g.app.Function(req.Function)
	if fn == nil {
		return nil, &api.Error{Code: codes.NotFound, Msg: fmt.Sprintf("unknown function %q", clip(req.Function)), Err: ErrUnknownFunction}
	}
	switch {
	case fn.Kind != schema.Query:
		return nil, api.Errorf(codes.InvalidArgument, "function %s is a %s: a fan-out only runs query functions (cross-shard writes do not exist; call a mutation on one shard)", fn.Name, fn.Kind)
	case fn.Global():
		return nil, api.Errorf(codes.InvalidArgument, "function %s runs on the global tier, which is one database: call it directly instead of fanning out", fn.Name)
	case fn.ShardBy == schema.RootShard:
		return nil, api.Errorf(codes.InvalidArgument, "function %s runs in the root shard, which is one database: call it directly instead of fanning out", fn.Name)
	}
	p := &fanOutPlan{fn: fn, group: fn.ShardBy, merge: req.Merge, orderBy: req.OrderBy, desc: req.Desc, limit: req.Limit}
	maxShards, maxRows := g.maxFanOutShards(), g.maxFanOutRows()

	switch req.Merge {
	case MergeConcat:
		if req.OrderBy != "" || req.Desc {
			return nil, api.New(codes.InvalidArgument, "order_by and desc apply to the top_k and keyset merges; concat keeps the shards' own row order")
		}
	case MergeTopK, MergeKeyset:
		if req.OrderBy == "" {
			return nil, api.Errorf(codes.InvalidArgument, "merge %s needs order_by: name a column of %s's result", req.Merge, fn.Name)
		}
		if req.Limit == 0 {
			what := "k, the number of rows to keep"
			if req.Merge == MergeKeyset {
				what = "the page size"
			}
			return nil, api.Errorf(codes.InvalidArgument, "merge %s needs limit (%s), between 1 and %d", req.Merge, what, maxRows)
		}
	default:
		return nil, api.Errorf(codes.InvalidArgument, "merge must be concat, top_k or keyset (got mode %d)", int(req.Merge))
	}
	if req.Cursor != "" && req.Merge != MergeKeyset {
		return nil, api.Errorf(codes.InvalidArgument, "cursor applies to the keyset merge only, not %s", req.Merge)
	}
	if req.Limit < 0 || req.Limit > maxRows {
		return nil, api.Errorf(codes.InvalidArgument, "limit must be between 0 and %d, got %d", maxRows, req.Limit)
	}
	switch c := req.Concurrency; {
	case c < 0 || c > MaxFanOutConcurrency:
		return nil, api.Errorf(codes.InvalidArgument, "concurrency must be between 1 and %d (0 for the default of %d), got %d", MaxFanOutConcurrency, DefaultFanOutConcurrency, c)
	case c == 0:
		p.concurrency = DefaultFanOutConcurrency
	default:
		p.concurrency = c
	}
	switch t := req.ShardTimeout; {
	case t < 0:
		return nil, api.Errorf(codes.InvalidArgument, "shard timeout must not be negative, got %s", t)
	case t == 0:
		p.shardTimeout = DefaultShardTimeout
	default:
		p.shardTimeout = t
	}
	p.shardTimeout = min(p.shardTimeout, g.cfg.RequestTimeout)

	// The arguments: everything but the shard key, which is per shard.
	if _, ok := req.Args[p.group]; ok {
		return nil, api.Errorf(codes.InvalidArgument, "argument %q is the shard key, which a fan-out sets for each shard: name the shards with shard_keys or all_shards instead", p.group)
	}
	p.args = make(map[string]any, len(req.Args))
	for k, v := range req.Args {
		p.args[k] = v
	}
	// Bind once with a stand-in key, so bad arguments fail the request
	// instead of every shard, and the cursor identity sees the arguments
	// as the shards will (defaults filled in, types exact).
	var standIn any = ""
	if g.app.GroupKeyType(p.group) == schema.Int {
		standIn = int64(0)
	}
	probe := make(map[string]any, len(p.args)+1)
	for k, v := range p.args {
		probe[k] = v
	}
	if fn.Arg(p.group) != nil {
		probe[p.group] = standIn
	}
	bound, err := fn.BindArgs(probe)
	if err != nil {
		return nil, err
	}
	delete(bound, p.group)

	// The shards.
	var shardSpec string
	switch {
	case req.AllShards && len(req.ShardKeys) > 0:
		return nil, api.New(codes.InvalidArgument, "shard_keys and all_shards are exclusive: name the shards or ask for all of them")
	case req.AllShards:
		lister, ok := g.backend.(ShardLister)
		if !ok {
			return nil, api.Errorf(codes.FailedPrecondition, "all_shards needs the shard registry, which this gateway's backend cannot list: name the shards with shard_keys")
		}
		p.lister = lister
		shardSpec = "all"
	case len(req.ShardKeys) == 0:
		return nil, api.Errorf(codes.InvalidArgument, "name the shards to read with shard_keys (values of %s), or set all_shards", p.group)
	case len(req.ShardKeys) > maxShards:
		return nil, api.Errorf(codes.InvalidArgument, "%d shard_keys is over the fan-out bound of %d shards: split the read", len(req.ShardKeys), maxShards)
	default:
		seen := make(map[string]bool, len(req.ShardKeys))
		for _, key := range req.ShardKeys {
			if key == "" {
				return nil, api.New(codes.InvalidArgument, "shard_keys must not hold an empty key")
			}
			t, err := g.target(fn, p.args, key)
			if err != nil {
				return nil, err
			}
			if seen[t.id] {
				return nil, api.Errorf(codes.InvalidArgument, "shard_keys names shard %s twice", t.id)
			}
			seen[t.id] = true
			p.targets = append(p.targets, t)
		}
		sort.Slice(p.targets, func(i, j int) bool { return p.targets[i].id < p.targets[j].id })
		ids := make([]string, len(p.targets))
		for i, t := range p.targets {
			ids[i] = t.id
		}
		shardSpec = "keys\x00" + strings.Join(ids, "\x00")
	}

	p.identity = fanOutIdentity(fn.Name, bound, shardSpec, req.OrderBy, req.Desc)
	if req.Cursor != "" {
		if p.after, err = decodeCursor(req.Cursor, p.identity); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// target resolves one shard key of fn's group into the shard and its bound
// arguments.
func (g *Gateway) target(fn *schema.Function, args map[string]any, key string) (shardTarget, error) {
	id, filled, err := g.app.ResolveShard(fn, args, key)
	if err != nil {
		return shardTarget{}, err
	}
	bound, err := fn.BindArgs(filled)
	if err != nil {
		return shardTarget{}, err
	}
	return shardTarget{id: id, args: bound}, nil
}

// listTargets pages through the Backend's shard registry for p's group.
func (g *Gateway) listTargets(ctx context.Context, p *fanOutPlan) error {
	bound := g.maxFanOutShards()
	var ids []string
	after := ""
	for pages := 0; ; pages++ {
		want := min(bound+1-len(ids), listPageSize)
		page, next, err := p.lister.ListShards(ctx, p.group, after, want)
		if err != nil {
			return g.backendError(ctx, err, "listing the shards of group "+p.group, "")
		}
		ids = append(ids, page...)
		if len(ids) > bound {
			return api.Errorf(codes.FailedPrecondition, "group %s has more than %d shards, the fan-out bound (Config.MaxFanOutShards): name at most %d shards a request with shard_keys (keyset paging bounds rows, not shards)", p.group, bound, bound)
		}
		if next == "" {
			break
		}
		if next == after || pages > bound {
			g.log.ErrorContext(ctx, "shard registry listing does not advance", "group", p.group, "after", after)
			return api.Errorf(codes.Internal, "internal error: the shard registry's listing of group %s did not advance", p.group)
		}
		after = next
	}
	sort.Strings(ids)
	ids = slices.Compact(ids)
	p.targets = make([]shardTarget, 0, len(ids))
	for _, id := range ids {
		group, key, ok := strings.Cut(id, "=")
		var t shardTarget
		var err error
		if ok && group == p.group {
			t, err = g.target(p.fn, p.args, key)
		}
		switch {
		case !ok || group != p.group:
			t = shardTarget{id: id, fail: &ShardFailure{ShardID: id, Code: codes.Internal, Message: fmt.Sprintf("the shard registry listed %q as a shard of group %s", clip(id), p.group)}}
		case err != nil:
			t = shardTarget{id: id, fail: &ShardFailure{ShardID: id, Code: api.CodeOf(err), Message: err.Error()}}
		case t.id != id:
			t = shardTarget{id: id, fail: &ShardFailure{ShardID: id, Code: codes.Internal, Message: fmt.Sprintf("the shard registry listed %q, which is not a canonical shard ID (%s)", clip(id), t.id)}}
		}
		p.targets = append(p.targets, t)
	}
	return nil
}

// askShards asks every target with at most p.concurrency calls in flight
// and returns the answers in target (shard ID) order.
func (g *Gateway) askShards(ctx context.Context, p *fanOutPlan) []shardAnswer {
	answers := make([]shardAnswer, len(p.targets))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(p.concurrency, len(p.targets)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(p.targets) {
					return
				}
				answers[i] = g.askShard(ctx, p, p.targets[i])
			}
		})
	}
	wg.Wait()
	return answers
}

func (g *Gateway) askShard(ctx context.Context, p *fanOutPlan, t shardTarget) shardAnswer {
	if t.fail != nil {
		return shardAnswer{id: t.id, fail: t.fail}
	}
	failed := func(c codes.Code, msg string) shardAnswer {
		return shardAnswer{id: t.id, fail: &ShardFailure{ShardID: t.id, Code: c, Message: msg}}
	}
	if err := ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return failed(codes.DeadlineExceeded, fmt.Sprintf("shard %s was not asked: the fan-out's deadline passed first (the gateway allows %s)", t.id, g.cfg.RequestTimeout))
		}
		return failed(codes.Canceled, "request canceled")
	}
	sctx, cancel := context.WithTimeout(ctx, p.shardTimeout)
	defer cancel()
	res, err := g.backend.Call(sctx, t.id, p.fn.Name, t.args, api.ReadOptions{})
	if err != nil {
		e := g.shardError(ctx, sctx, err, t.id, p.shardTimeout)
		return failed(e.Code, e.Msg)
	}
	if res == nil {
		return failed(codes.Internal, "internal error: the backend returned no result")
	}
	a := shardAnswer{id: t.id, columns: res.Columns, total: len(res.Rows)}
	keyCol := -1
	if p.orderBy != "" {
		keyCol = slices.Index(res.Columns, p.orderBy)
	}
	for i, row := range res.Rows {
		if len(row) != len(res.Columns) {
			return failed(codes.Internal, fmt.Sprintf("internal error: row %d has %d values for %d columns", i, len(row), len(res.Columns)))
		}
		r := &mergeRow{shard: t.id, pos: i, row: row}
		if keyCol >= 0 {
			r.key = row[keyCol]
			if p.after != nil && keysetPosCompare(r.key, t.id, p.after.key, p.after.shard, p.desc) <= 0 {
				continue // at or before the cursor
			}
		}
		a.rows = append(a.rows, r)
	}
	// Keep only what the merge can use, so memory is bounded by the
	// shard count times the limit.
	switch {
	case p.merge == MergeConcat && p.limit > 0:
		a.rows = a.rows[:min(len(a.rows), p.limit)]
	case p.merge == MergeConcat:
		a.rows = a.rows[:min(len(a.rows), g.maxFanOutRows()+1)]
	case keyCol >= 0:
		sortRows(a.rows, p.merge, p.desc)
		a.rows = a.rows[:min(len(a.rows), p.limit+1)]
	}
	return a
}

// shardError gives a shard's failure a code and a message: coded errors
// keep theirs, the shard timeout and the request deadline say which one
// passed, anything else is logged and reported as INTERNAL.
func (g *Gateway) shardError(ctx, sctx context.Context, err error, shardID string, timeout time.Duration) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(sctx.Err(), context.DeadlineExceeded) && errors.Is(err, context.Canceled):
		if ctx.Err() != nil {
			return &api.Error{Code: codes.DeadlineExceeded, Msg: fmt.Sprintf("shard %s did not answer before the fan-out's deadline (the gateway allows %s)", shardID, g.cfg.RequestTimeout), Err: err}
		}
		return &api.Error{Code: codes.DeadlineExceeded, Msg: fmt.Sprintf("shard %s did not answer within the shard timeout of %s", shardID, timeout), Err: err}
	case errors.Is(err, context.Canceled):
		return &api.Error{Code: codes.Canceled, Msg: "request canceled", Err: err}
	}
	g.log.ErrorContext(ctx, "fan-out shard failed", "shard", shardID, "err", err)
	return &api.Error{Code: codes.Internal, Msg: "internal error", Err: err}
}

// mergeAnswers merges the shards' answers as p says.
func (g *Gateway) mergeAnswers(p *fanOutPlan, answers []shardAnswer) (*FanOutResult, error) {
	out := &FanOutResult{Failed: []ShardFailure{}}
	var ok []*shardAnswer
	for i := range answers {
		a := &answers[i]
		switch {
		case a.fail != nil:
			out.Failed = append(out.Failed, *a.fail)
		case out.Columns == nil:
			out.Columns = a.columns
			if out.Columns == nil {
				out.Columns = []string{}
			}
			ok = append(ok, a)
		case !slices.Equal(a.columns, out.Columns):
			out.Failed = append(out.Failed, ShardFailure{ShardID: a.id, Code: codes.Internal, Message: fmt.Sprintf(
				"shard answered columns [%s] where the shards before it answered [%s]: the shards' schemas differ (a migration may be under way)",
				strings.Join(a.columns, ", "), strings.Join(out.Columns, ", "))})
		default:
			ok = append(ok, a)
		}
	}
	sort.SliceStable(out.Failed, func(i, j int) bool { return out.Failed[i].ShardID < out.Failed[j].ShardID })
	out.Shards = len(ok)
	if out.Columns == nil {
		out.Columns = []string{}
	}
	if p.orderBy != "" && len(ok) > 0 && !slices.Contains(out.Columns, p.orderBy) {
		return nil, api.Errorf(codes.InvalidArgument, "order_by %q is not a column of %s's result (its columns: %s)", clip(p.orderBy), p.fn.Name, strings.Join(out.Columns, ", "))
	}

	var rows []*mergeRow
	total := 0
	for _, a := range ok {
		rows = append(rows, a.rows...)
		total += a.total
	}
	switch p.merge {
	case MergeConcat:
		// Already in shard ID order, each shard's rows in its order.
		if p.limit > 0 {
			rows = rows[:min(len(rows), p.limit)]
		} else if total > g.maxFanOutRows() {
			return nil, api.Errorf(codes.FailedPrecondition, "the shards answered %d rows, over the fan-out bound of %d: set limit, or page through them with merge keyset", total, g.maxFanOutRows())
		}
	case MergeTopK:
		sortRows(rows, MergeTopK, p.desc)
		rows = rows[:min(len(rows), p.limit)]
	case MergeKeyset:
		sortRows(rows, MergeKeyset, p.desc)
		if len(rows) > p.limit {
			rows = rows[:p.limit]
			cur, err := encodeCursor(p.identity, rows[len(rows)-1])
			if err != nil {
				return nil, err
			}
			out.NextCursor = cur
		}
	}
	out.Rows = make([][]any, len(rows))
	for i, r := range rows {
		out.Rows[i] = r.row
	}
	return out, nil
}
