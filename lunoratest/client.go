package lunoratest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// HTTPClient calls Lunora's public HTTP/JSON API at one address.
type HTTPClient struct {
	Addr   string // host:port
	Client *http.Client
	Scheme string // "http" when empty (see NewHTTPSClient)
}

// NewHTTPClient returns a client of the API at addr whose idle connections
// are closed when the test ends.
func NewHTTPClient(t testing.TB, addr string) *HTTPClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	t.Cleanup(tr.CloseIdleConnections)
	return &HTTPClient{Addr: addr, Client: &http.Client{Transport: tr}}
}

// Response is an answer of the HTTP API. Result is set for status 200,
// Error otherwise (when the body is Lunora's error object).
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Result *CallResult
	Error  *ErrorBody
}

// CallResult is the JSON answer of /v1/call and /v1/sql. Numbers are
// json.Number, so integers stay exact.
type CallResult struct {
	Columns      []string `json:"columns"`
	Rows         [][]any  `json:"rows"`
	CommitSeq    uint64   `json:"commit_seq"`
	ShardID      string   `json:"shard_id"`
	RowsAffected int64    `json:"rows_affected"`
}

// Column returns the index of column name, or -1.
func (r *CallResult) Column(name string) int {
	for i, c := range r.Columns {
		if c == name {
			return i
		}
	}
	return -1
}

// ErrorBody is {"error": {"code": ..., "message": ...}}.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// StatusResult is the JSON answer of /v1/status.
type StatusResult struct {
	NodeID       string `json:"node_id"`
	ActiveShards int64  `json:"active_shards"`
	ShardsOnDisk int64  `json:"shards_on_disk"`
	InFlight     int64  `json:"in_flight"`
}

// Code is the error code of the answer, or "OK".
func (r *Response) Code() string {
	if r.Error != nil {
		return r.Error.Code
	}
	if r.Status == http.StatusOK {
		return "OK"
	}
	return fmt.Sprintf("HTTP %d without an error body", r.Status)
}

func (r *Response) String() string {
	return fmt.Sprintf("HTTP %d %s", r.Status, bytes.TrimSpace(r.Body))
}

// Call posts {"function", "args"} to /v1/call.
func (c *HTTPClient) Call(ctx context.Context, function string, args map[string]any) (*Response, error) {
	body, err := json.Marshal(map[string]any{"function": function, "args": args})
	if err != nil {
		return nil, err
	}
	return c.Post(ctx, "/v1/call", body)
}

// SQL posts {"shard_id", "sql", "params"} to /v1/sql.
func (c *HTTPClient) SQL(ctx context.Context, shardID, sql string, params map[string]any) (*Response, error) {
	body, err := json.Marshal(map[string]any{"shard_id": shardID, "sql": sql, "params": params})
	if err != nil {
		return nil, err
	}
	return c.Post(ctx, "/v1/sql", body)
}

// Post sends body as is to path and decodes the answer. An error means no
// HTTP answer at all.
func (c *HTTPClient) Post(ctx context.Context, path string, body []byte) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(path), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req)
}

// Get gets path and decodes the answer. An error means no HTTP answer at
// all.
func (c *HTTPClient) Get(ctx context.Context, path string) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(path), nil)
	if err != nil {
		return nil, err
	}
	return c.do(req)
}

// Status gets /v1/status.
func (c *HTTPClient) Status(ctx context.Context) (*StatusResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v1/status"), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	if resp.Status != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/status: %v", resp)
	}
	var st StatusResult
	if err := json.Unmarshal(resp.Body, &st); err != nil {
		return nil, fmt.Errorf("GET /v1/status: %w in %s", err, resp.Body)
	}
	return &st, nil
}

func (c *HTTPClient) do(req *http.Request) (*Response, error) {
	hr, err := c.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer hr.Body.Close()
	body, err := io.ReadAll(hr.Body)
	if err != nil {
		return nil, err
	}
	resp := &Response{Status: hr.StatusCode, Header: hr.Header, Body: body}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if hr.StatusCode == http.StatusOK {
		if req.URL.Path == "/v1/status" {
			return resp, nil
		}
		var res CallResult
		if err := dec.Decode(&res); err != nil {
			return nil, fmt.Errorf("%s %s: HTTP 200 with an undecodable body: %w: %s", req.Method, req.URL.Path, err, body)
		}
		resp.Result = &res
		return resp, nil
	}
	var e struct {
		Error *ErrorBody `json:"error"`
	}
	if dec.Decode(&e) == nil {
		resp.Error = e.Error
	}
	return resp, nil
}

// DialGRPC returns a client of the public gRPC API at addr; the
// connection is closed when the test ends.
func DialGRPC(t testing.TB, addr string) lunorav1.LunoraClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return lunorav1.NewLunoraClient(conn)
}

// Args converts Go values (string, int, int64, float64, bool, []byte, nil)
// to gRPC call arguments; it panics on any other type, a bug in the test.
func Args(args map[string]any) map[string]*lunorav1.Value {
	out := make(map[string]*lunorav1.Value, len(args))
	for k, v := range args {
		out[k] = Value(v)
	}
	return out
}

// Value converts one Go value as Args does.
func Value(v any) *lunorav1.Value {
	switch x := v.(type) {
	case nil:
		return &lunorav1.Value{Kind: &lunorav1.Value_Null{Null: true}}
	case string:
		return &lunorav1.Value{Kind: &lunorav1.Value_Text{Text: x}}
	case int:
		return &lunorav1.Value{Kind: &lunorav1.Value_Integer{Integer: int64(x)}}
	case int64:
		return &lunorav1.Value{Kind: &lunorav1.Value_Integer{Integer: x}}
	case float64:
		return &lunorav1.Value{Kind: &lunorav1.Value_Real{Real: x}}
	case bool:
		return &lunorav1.Value{Kind: &lunorav1.Value_Boolean{Boolean: x}}
	case []byte:
		return &lunorav1.Value{Kind: &lunorav1.Value_Blob{Blob: x}}
	}
	panic(fmt.Sprintf("lunoratest.Value: unsupported type %T", v))
}
