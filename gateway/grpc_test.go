package gateway_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/gateway"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/rpc"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// grpcClient serves e's gateway through rpc.PublicServer on 127.0.0.1:0.
func (e *env) grpcClient(t *testing.T) lunorav1.LunoraClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(rpc.ServerOptions()...)
	rpc.RegisterPublicServer(srv, rpc.NewPublicServer(e.gw, nil))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return lunorav1.NewLunoraClient(conn)
}

func text(s string) *lunorav1.Value { return &lunorav1.Value{Kind: &lunorav1.Value_Text{Text: s}} }
func integer(i int64) *lunorav1.Value {
	return &lunorav1.Value{Kind: &lunorav1.Value_Integer{Integer: i}}
}

func TestGRPCRoundTrip(t *testing.T) {
	e := newEnv(t, nil)
	c := e.grpcClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	resp, err := c.Call(ctx, &lunorav1.CallRequest{
		Function: "messages:list",
		Args:     map[string]*lunorav1.Value{"limit": integer(9007199254740993)},
		ShardKey: "r1",
	})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	got, _ := e.backend.last()
	if got.ShardID != "room_id=r1" || got.Args["limit"] != int64(9007199254740993) || got.Args["room_id"] != "r1" {
		t.Errorf("backend got %+v", got)
	}
	if resp.GetShardId() != "room_id=r1" || resp.GetCommitSeq() != 7 || strings.Join(resp.GetColumns(), ",") != "limit,room_id" ||
		resp.GetRows()[0].GetValues()[0].GetInteger() != 9007199254740993 {
		t.Errorf("answer %v", resp)
	}

	sqlResp, err := c.Sql(ctx, &lunorav1.SqlRequest{ShardId: "room_id=r1", Sql: "SELECT :n", Params: map[string]*lunorav1.Value{"n": integer(5)}})
	if err != nil {
		t.Fatalf("Sql: %v", err)
	}
	if got, _ := e.backend.last(); got.Method != "Exec" || got.Args["n"] != int64(5) || sqlResp.GetShardId() != "room_id=r1" {
		t.Errorf("Sql: backend got %+v, answer %v", got, sqlResp)
	}

	st, err := c.Status(ctx, &lunorav1.StatusRequest{})
	if err != nil || st.GetNodeId() != "dev" || st.GetActiveShards() != 3 {
		t.Errorf("Status = %v, %v", st, err)
	}
}

func TestGRPCErrors(t *testing.T) {
	cases := []struct {
		name   string
		call   func(ctx context.Context, c lunorav1.LunoraClient) error
		answer func(context.Context, backendCall) (*api.Result, error)
		code   codes.Code
		msgHas string
		retry  time.Duration
	}{
		{name: "unknown function", code: codes.NotFound, msgHas: `unknown function "nope"`,
			call: func(ctx context.Context, c lunorav1.LunoraClient) error {
				_, err := c.Call(ctx, &lunorav1.CallRequest{Function: "nope"})
				return err
			}},
		{name: "missing arg", code: codes.InvalidArgument, msgHas: `missing required argument "author"`,
			call: func(ctx context.Context, c lunorav1.LunoraClient) error {
				_, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:send", Args: map[string]*lunorav1.Value{"room_id": text("r1"), "body": text("b")}})
				return err
			}},
		{name: "mistyped arg", code: codes.InvalidArgument, msgHas: `argument "limit"`,
			call: func(ctx context.Context, c lunorav1.LunoraClient) error {
				_, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r1"), "limit": text("ten")}})
				return err
			}},
		{name: "unknown shard group", code: codes.InvalidArgument, msgHas: "user_id",
			call: func(ctx context.Context, c lunorav1.LunoraClient) error {
				_, err := c.Sql(ctx, &lunorav1.SqlRequest{ShardId: "user_id=u1", Sql: "SELECT 1"})
				return err
			}},
		{name: "backend busy", code: codes.ResourceExhausted, msgHas: "busy", retry: 1500 * time.Millisecond,
			answer: func(context.Context, backendCall) (*api.Result, error) {
				return nil, &api.Error{Code: codes.ResourceExhausted, Msg: "shard room_id=r1 is busy", RetryAfter: 1500 * time.Millisecond}
			},
			call: func(ctx context.Context, c lunorav1.LunoraClient) error {
				_, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:count", ShardKey: "r1"})
				return err
			}},
		{name: "gateway deadline", code: codes.DeadlineExceeded, msgHas: "room_id=r1",
			answer: blockUntilDone,
			call: func(ctx context.Context, c lunorav1.LunoraClient) error {
				_, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:count", ShardKey: "r1"})
				return err
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *gateway.Config) { c.RequestTimeout = 200 * time.Millisecond })
			e.backend.setAnswer(tc.answer)
			c := e.grpcClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := tc.call(ctx, c)
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msgHas) {
				t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msgHas)
			}
			var retry time.Duration
			for _, d := range st.Details() {
				if ri, ok := d.(*errdetails.RetryInfo); ok {
					retry = ri.GetRetryDelay().AsDuration()
				}
			}
			if retry != tc.retry {
				t.Errorf("RetryInfo delay = %v, want %v", retry, tc.retry)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, nil)
	c := e.grpcClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e.do(t, "POST", "/v1/call", `{"function": "messages:count", "args": {"room_id": "r1"}}`)
	e.do(t, "POST", "/v1/call", `{"function": "messages:count", "args": {"room_id": "r2"}}`)
	e.do(t, "POST", "/v1/call", `{"function": "made:up1", "args": {}}`)
	e.do(t, "POST", "/v1/call", `{"function": "made:up2", "args": {}}`)
	e.do(t, "POST", "/v1/call", `{"function": `)
	e.do(t, "POST", "/v1/sql", `{"shard_id": "room_id=r1", "sql": "SELECT 1"}`)
	e.do(t, "GET", "/v1/status", ``)
	if _, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:count", ShardKey: "r1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, &lunorav1.CallRequest{Function: "made:up3"}); status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}

	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	histCounts := map[string]uint64{}
	key := func(m *dto.Metric) string {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		return l["protocol"] + " " + l["function"] + " " + l["code"]
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "lunora_gateway_requests_total":
				counts[key(m)] = m.GetCounter().GetValue()
			case "lunora_gateway_request_duration_seconds":
				histCounts[key(m)] = m.GetHistogram().GetSampleCount()
			}
		}
	}
	want := map[string]float64{
		"http messages:count OK":        2,
		"http unknown NOT_FOUND":        2,
		"http unknown INVALID_ARGUMENT": 1,
		"http sql OK":                   1,
		"http status OK":                1,
		"grpc messages:count OK":        1,
		"grpc unknown NOT_FOUND":        1,
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("requests_total{%s} = %v, want %v", k, counts[k], v)
		}
		if histCounts[k] != uint64(v) {
			t.Errorf("request_duration_seconds{%s} count = %v, want %v", k, histCounts[k], v)
		}
	}
	if len(counts) != len(want) {
		t.Errorf("label sets = %v, want exactly %v", counts, want)
	}
}
