package gateway

import (
	"encoding/json"
	"math"
	"net/http"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// fanOutJSON is the body of POST /v1/fanout.
type fanOutJSON struct {
	Function       string          `json:"function"`
	Args           json.RawMessage `json:"args"`
	ShardKeys      []string        `json:"shard_keys"`
	AllShards      bool            `json:"all_shards"`
	Merge          string          `json:"merge"`
	OrderBy        string          `json:"order_by"`
	Desc           bool            `json:"desc"`
	Limit          int             `json:"limit"`
	Cursor         string          `json:"cursor"`
	Concurrency    int             `json:"concurrency"`
	ShardTimeoutMS int64           `json:"shard_timeout_ms"`
}

// fanOutResultJSON is the answer of POST /v1/fanout.
type fanOutResultJSON struct {
	Columns    []string           `json:"columns"`
	Rows       [][]any            `json:"rows"`
	Shards     int                `json:"shards"`
	Failed     []shardFailureJSON `json:"failed"`
	NextCursor string             `json:"next_cursor"`
}

type shardFailureJSON struct {
	ShardID string `json:"shard_id"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// parseMergeMode reads a merge mode as the HTTP API writes it: "concat"
// (or ""), "top_k" or "keyset".
func parseMergeMode(s string) (MergeMode, error) {
	switch s {
	case "", "concat":
		return MergeConcat, nil
	case "top_k":
		return MergeTopK, nil
	case "keyset":
		return MergeKeyset, nil
	}
	return 0, api.Errorf(codes.InvalidArgument, "merge must be concat, top_k or keyset, not %q", clip(s))
}

// durationMS converts a millisecond count from a request, saturating
// instead of overflowing (a fan-out clamps its shard timeout anyway).
func durationMS(ms int64) time.Duration {
	const maxMS = math.MaxInt64 / int64(time.Millisecond)
	switch {
	case ms > maxMS:
		ms = maxMS
	case ms < -maxMS:
		ms = -maxMS
	}
	return time.Duration(ms) * time.Millisecond
}

// serveFanOut serves POST /v1/fanout; see Gateway.FanOut.
func (g *Gateway) serveFanOut(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var body fanOutJSON
	err := g.decodeBody(w, r, &body)
	req := FanOutRequest{
		Function:     body.Function,
		ShardKeys:    body.ShardKeys,
		AllShards:    body.AllShards,
		OrderBy:      body.OrderBy,
		Desc:         body.Desc,
		Limit:        body.Limit,
		Cursor:       body.Cursor,
		Concurrency:  body.Concurrency,
		ShardTimeout: durationMS(body.ShardTimeoutMS),
	}
	if err == nil {
		req.Args, err = schema.DecodeJSONArgs(body.Args)
	}
	if err == nil {
		req.Merge, err = parseMergeMode(body.Merge)
	}
	if err != nil {
		g.metrics.observe(protocolHTTP, fanoutLabel, err, time.Since(start))
		g.writeError(w, r, err)
		return
	}
	res, err := g.fanOut(r.Context(), protocolHTTP, start, req)
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	out := fanOutResultJSON{
		Columns:    res.Columns,
		Rows:       make([][]any, len(res.Rows)),
		Shards:     res.Shards,
		Failed:     make([]shardFailureJSON, len(res.Failed)),
		NextCursor: res.NextCursor,
	}
	if out.Columns == nil {
		out.Columns = []string{}
	}
	for i, row := range res.Rows {
		vals := make([]any, len(row))
		for j, v := range row {
			vals[j] = jsonValue(v)
		}
		out.Rows[i] = vals
	}
	for i, f := range res.Failed {
		out.Failed[i] = shardFailureJSON{ShardID: f.ShardID, Code: codeName(&api.Error{Code: f.Code}), Message: f.Message}
	}
	g.writeJSON(w, r, http.StatusOK, out)
}
