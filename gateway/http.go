package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// callRequest is the body of POST /v1/call.
type callRequest struct {
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	ShardKey string          `json:"shard_key"`
	readJSON
}

// readJSON are the read options of a request on the global tier. The
// bookmark may also come in the x-lunora-bookmark header.
type readJSON struct {
	Consistency    string `json:"consistency"`
	Bookmark       uint64 `json:"bookmark"`
	MaxStalenessMS int64  `json:"max_staleness_ms"`
}

// BookmarkHeader carries a global-tier bookmark: answered on every write to
// global tables, accepted on reads for read-your-writes.
const BookmarkHeader = "x-lunora-bookmark"

func (rj readJSON) options(r *http.Request) (api.ReadOptions, error) {
	out := api.ReadOptions{Bookmark: rj.Bookmark, MaxStaleness: time.Duration(rj.MaxStalenessMS) * time.Millisecond}
	if h := r.Header.Get(BookmarkHeader); h != "" && out.Bookmark == 0 {
		b, err := strconv.ParseUint(h, 10, 64)
		if err != nil {
			return out, api.Errorf(codes.InvalidArgument, "header %s must be a bookmark (an unsigned integer), got %q", BookmarkHeader, clip(h))
		}
		out.Bookmark = b
	}
	switch rj.Consistency {
	case "":
	case "strong":
		out.Consistency = api.Strong
	case "bookmark":
		out.Consistency = api.Bookmark
	case "stale":
		out.Consistency = api.Stale
	default:
		return out, api.Errorf(codes.InvalidArgument, "consistency must be strong, bookmark or stale, not %q", clip(rj.Consistency))
	}
	return out, nil
}

// sqlRequest is the body of POST /v1/sql.
type sqlRequest struct {
	ShardID string          `json:"shard_id"`
	SQL     string          `json:"sql"`
	Params  json.RawMessage `json:"params"`
	readJSON
}

// resultJSON is the answer of /v1/call and /v1/sql. Blobs are base64
// strings, integers JSON numbers.
type resultJSON struct {
	Columns      []string `json:"columns"`
	Rows         [][]any  `json:"rows"`
	CommitSeq    uint64   `json:"commit_seq"`
	ShardID      string   `json:"shard_id"`
	RowsAffected int64    `json:"rows_affected"`
	Bookmark     uint64   `json:"bookmark,omitempty"`
}

// statusJSON is the answer of /v1/status.
type statusJSON struct {
	NodeID        string `json:"node_id"`
	NodeAddress   string `json:"node_address"`
	Version       string `json:"version"`
	ActiveShards  int64  `json:"active_shards"`
	ShardsOnDisk  int64  `json:"shards_on_disk"`
	InFlight      int64  `json:"in_flight"`
	UptimeSeconds int64  `json:"uptime_seconds"`
	// Cluster is the ring as the answering node knows it.
	Cluster *clusterJSON `json:"cluster,omitempty"`
}

type clusterJSON struct {
	RingEpoch     uint64            `json:"ring_epoch"`
	Nodes         []clusterNodeJSON `json:"nodes"`           // the ring
	Members       []clusterNodeJSON `json:"members"`         // every recorded node
	MovesInFlight int64             `json:"moves_in_flight"` // on every node that answered
	Moves         []shardMoveJSON   `json:"moves"`           // handoff streams under way
}

type clusterNodeJSON struct {
	ID       string `json:"id"`
	Weight   int    `json:"weight,omitempty"`
	GRPCAddr string `json:"grpc_addr"`
	// State is the cluster metadata's record (up, removed), not liveness:
	// Alive is (the gossip view: alive, suspect, dead, left; or whether
	// the node answered: reachable, unreachable).
	State  string `json:"state"`
	Shards int64  `json:"shards"`
	Alive  string `json:"alive,omitempty"`
	Raft   string `json:"raft"` // leader, voter, nonvoter or "" (not a member)
	InRing bool   `json:"in_ring"`
}

type shardMoveJSON struct {
	ShardID   string `json:"shard_id"`
	From      string `json:"from"`
	To        string `json:"to"`
	Bytes     int64  `json:"bytes"`
	Size      int64  `json:"size"`
	ElapsedMS int64  `json:"elapsed_ms"`
}

func clusterToJSON(c *api.ClusterStatus) *clusterJSON {
	if c == nil {
		return nil
	}
	conv := func(ns []api.RingNode) []clusterNodeJSON {
		out := make([]clusterNodeJSON, len(ns))
		for i, n := range ns {
			out[i] = clusterNodeJSON{ID: n.ID, Weight: n.Weight, GRPCAddr: n.GRPCAddr, State: n.State, Shards: n.Shards, Alive: n.Alive, Raft: n.Raft, InRing: n.InRing}
		}
		return out
	}
	moves := make([]shardMoveJSON, len(c.Moves))
	for i, m := range c.Moves {
		moves[i] = shardMoveJSON{ShardID: m.ShardID, From: m.From, To: m.To, Bytes: m.Bytes, Size: m.Size, ElapsedMS: m.Elapsed.Milliseconds()}
	}
	return &clusterJSON{RingEpoch: c.Ring.Epoch, Nodes: conv(c.Ring.Nodes), Members: conv(c.Ring.Members), MovesInFlight: c.MovesInFlight, Moves: moves}
}

type errorJSON struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Handler serves the public API over HTTP/JSON:
//
//	POST /v1/call    {"function": "...", "args": {...}, "shard_key": "...",
//	                  "consistency": "strong|bookmark|stale", "bookmark": N, "max_staleness_ms": N}
//	POST /v1/sql     {"shard_id": "room_id=r1", "sql": "...", "params": {...}, (read options)}
//	POST /v1/fanout  {"function": "...", "args": {...}, "shard_keys": [...] | "all_shards": true,
//	                  "merge": "concat|top_k|keyset", "order_by": "...", "desc": bool, "limit": N,
//	                  "cursor": "...", "concurrency": N, "shard_timeout_ms": N}
//	                 → {"columns", "rows", "shards", "failed": [{"shard_id", "code", "message"}],
//	                    "next_cursor"}; see Gateway.FanOut
//	GET  /v1/status
//	GET  /v1/subscribe (WebSocket; see websocket.go)
//	POST /v1/admin/keys, GET /v1/admin/keys, DELETE /v1/admin/keys/{id}
//	                 (API keys; admin only; see auth.go)
//	POST /v1/queues/{queue}/receive|ack|nack|extend (service, admin; queues.go)
//	GET  /v1/admin/queues/{queue}/dead, POST /v1/admin/queues/{queue}/redrive,
//	GET  /v1/admin/alarms (admin only; queues.go)
//
// Every request needs "Authorization: Bearer <API key or JWT>" (auth.go)
// unless Config.AuthOff: without it the answer is 401.
//
// Errors are {"error": {"code": "INVALID_ARGUMENT", "message": "..."}} with
// the status HTTPStatus gives, and a Retry-After header when the error
// carries a retry hint. Requests are counted with protocol="http". Every
// answer carries the security headers, and browser requests pass the
// origin check, of edge.go; the per-client limits of limits.go apply
// before a request's body is read.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/call", g.only(http.MethodPost, g.serveCall))
	mux.Handle("/v1/sql", g.only(http.MethodPost, g.serveSQL))
	mux.Handle("/v1/fanout", g.only(http.MethodPost, g.serveFanOut))
	mux.Handle("/v1/status", g.only(http.MethodGet, g.serveStatus))
	mux.Handle("/v1/subscribe", g.only(http.MethodGet, g.serveSubscribe))
	mux.HandleFunc("/v1/admin/keys", g.serveKeys)
	mux.HandleFunc("/v1/admin/keys/", g.serveKeys)
	mux.HandleFunc("/v1/queues/", g.serveQueues)
	mux.HandleFunc("/v1/admin/queues/", g.serveAdminQueues)
	mux.HandleFunc("/v1/admin/alarms", g.serveAdminAlarms)
	g.handleBlobs(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		g.writeError(w, r, api.Errorf(codes.NotFound, "no endpoint %s: use POST /v1/call, POST /v1/sql or GET /v1/status", clip(r.URL.Path)))
	})
	return g.edge(g.withAuth(g.limitHTTP(mux))) // edge.go, auth.go, limits.go: the limiter sees the identity
}

// only answers 405 to any method but method.
func (g *Gateway) only(method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			g.writeError(w, r, &api.Error{
				Code: codes.Unimplemented,
				Msg:  fmt.Sprintf("method %s is not allowed on %s: use %s", clip(r.Method), r.URL.Path, method),
				Err:  ErrMethodNotAllowed,
			})
			return
		}
		h(w, r)
	})
}

func (g *Gateway) serveCall(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req callRequest
	err := g.decodeBody(w, r, &req)
	var args map[string]any
	if err == nil {
		args, err = schema.DecodeJSONArgs(req.Args)
	}
	var read api.ReadOptions
	if err == nil {
		read, err = req.options(r)
	}
	if err != nil {
		g.metrics.observe(protocolHTTP, g.functionLabel(req.Function), err, time.Since(start))
		g.writeError(w, r, err)
		return
	}
	res, err := g.call(r.Context(), protocolHTTP, start, req.Function, args, req.ShardKey, read)
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	g.writeResult(w, r, res)
}

func (g *Gateway) serveSQL(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req sqlRequest
	err := g.decodeBody(w, r, &req)
	var params map[string]any
	if err == nil {
		params, err = decodeParams(req.Params)
	}
	var read api.ReadOptions
	if err == nil {
		read, err = req.options(r)
	}
	if err != nil {
		g.metrics.observe(protocolHTTP, sqlLabel, err, time.Since(start))
		g.writeError(w, r, err)
		return
	}
	res, err := g.sql(r.Context(), protocolHTTP, start, req.ShardID, req.SQL, params, read)
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	g.writeResult(w, r, res)
}

func (g *Gateway) serveStatus(w http.ResponseWriter, r *http.Request) {
	st, err := g.status(r.Context(), protocolHTTP, time.Now())
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	g.writeJSON(w, r, http.StatusOK, statusJSON{
		NodeID:        st.NodeID,
		NodeAddress:   st.NodeAddress,
		Version:       st.Version,
		ActiveShards:  st.ActiveShards,
		ShardsOnDisk:  st.ShardsOnDisk,
		InFlight:      st.InFlight,
		UptimeSeconds: st.UptimeSeconds,
		Cluster:       clusterToJSON(st.Cluster),
	})
}

// discardBody closes the connection after the answer and, when the body's
// declared length is at most max, first reads and drops it (for at most
// 2 s): a server that closes a connection with unread data resets it, and
// the client, still writing, often never reads the answer.
func discardBody(w http.ResponseWriter, r *http.Request, max int64) {
	w.Header().Set("Connection", "close")
	if r.ContentLength <= 0 || r.ContentLength > max {
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(2 * time.Second))
	io.CopyN(io.Discard, r.Body, r.ContentLength)
}

// decodeBody decodes exactly one JSON object of at most MaxBodyBytes into
// dst, refusing unknown fields. Any content type is accepted.
func (g *Gateway) decodeBody(w http.ResponseWriter, r *http.Request, dst any) error {
	if r.ContentLength > g.cfg.MaxBodyBytes {
		// Refused before a byte of it is decoded. A body a few times the
		// limit is read and dropped, so the client, still sending it,
		// reads the 413 rather than a connection reset; a larger one is
		// not, and the connection closes either way.
		discardBody(w, r, 4*g.cfg.MaxBodyBytes)
		return g.bodyError(r.Context(), &http.MaxBytesError{Limit: g.cfg.MaxBodyBytes})
	}
	body := http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		return g.bodyError(r.Context(), err)
	}
	// One object and nothing after it but white space.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return g.bodyError(r.Context(), err)
		}
		return api.New(codes.InvalidArgument, "request body must hold exactly one JSON object, found more after it")
	}
	return nil
}

func (g *Gateway) bodyError(ctx context.Context, err error) error {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return &api.Error{
			Code: codes.ResourceExhausted,
			Msg:  "request body exceeds the " + byteSize(tooLarge.Limit) + " limit",
			Err:  ErrBodyTooLarge,
		}
	case errors.Is(err, io.EOF):
		return api.New(codes.InvalidArgument, "request body is empty: send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return api.New(codes.InvalidArgument, "malformed JSON in request body: unexpected end of input")
	case errors.As(err, &syntax):
		return api.Errorf(codes.InvalidArgument, "malformed JSON in request body at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return api.Errorf(codes.InvalidArgument, "request body must be a JSON object, got %s", typ.Value)
		}
		return api.Errorf(codes.InvalidArgument, "field %q of the request body must be %s, got %s", typ.Field, jsonKind(typ.Type), typ.Value)
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The server's body timeout (server.Config.BodyTimeout) passed;
		// net/http has canceled the request's context for it too.
		return api.New(codes.InvalidArgument, "request body not received within the server's time limit for it")
	case ctx.Err() != nil:
		return &api.Error{Code: codes.Canceled, Msg: "request canceled while reading its body", Err: ctx.Err()}
	}
	// Unknown fields and the decoder's other complaints.
	return api.Errorf(codes.InvalidArgument, "invalid request body: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// decodeParams decodes the params object of /v1/sql like
// schema.DecodeJSONArgs decodes args: numbers stay exact json.Numbers.
func decodeParams(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, api.Errorf(codes.InvalidArgument, "params must be a JSON object of named parameters: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return m, nil
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int64, reflect.Uint64, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "a boolean"
	}
	return t.String()
}

// byteSize writes a limit the way a person would: "1 MiB", "64 KiB".
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " byte"
}

func (g *Gateway) writeResult(w http.ResponseWriter, r *http.Request, res *api.Result) {
	out := resultJSON{
		Columns:      res.Columns,
		Rows:         make([][]any, len(res.Rows)),
		CommitSeq:    res.Seq,
		ShardID:      res.ShardID,
		RowsAffected: res.RowsAffected,
		Bookmark:     res.Bookmark,
	}
	if res.Bookmark > 0 {
		w.Header().Set(BookmarkHeader, strconv.FormatUint(res.Bookmark, 10))
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
	g.writeJSON(w, r, http.StatusOK, out)
}

// jsonValue makes a result value encodable: JSON has no infinities or NaN,
// so those become the strings protobuf's JSON mapping uses. []byte is left
// to encoding/json, which writes base64.
func jsonValue(v any) any {
	if f, ok := v.(float64); ok {
		switch {
		case math.IsInf(f, 1):
			return "Infinity"
		case math.IsInf(f, -1):
			return "-Infinity"
		case math.IsNaN(f):
			return "NaN"
		}
	}
	return v
}

func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		// Everything the gateway returns is coded; this is a bug.
		g.log.ErrorContext(r.Context(), "uncoded error", "path", r.URL.Path, "err", err)
		err = &api.Error{Code: codes.Internal, Msg: "internal error", Err: err}
		ae = err.(*api.Error)
	}
	if d := ae.RetryAfter; d > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10))
	}
	g.writeJSON(w, r, HTTPStatus(err), errorJSON{Error: errorBody{Code: codeName(err), Message: ae.Msg}})
}

func (g *Gateway) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		g.log.ErrorContext(r.Context(), "encode response", "path", r.URL.Path, "err", err)
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":"INTERNAL","message":"internal error"}}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
