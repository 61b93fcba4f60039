package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/gateway"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type consumeStream = grpc.BidiStreamingClient[lunorav1.ConsumeRequest, lunorav1.ConsumeResponse]

func startConsume(t *testing.T, ctx context.Context, c lunorav1.LunoraClient, start *lunorav1.ConsumeStart) consumeStream {
	t.Helper()
	st, err := c.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: start}}); err != nil {
		t.Fatal(err)
	}
	return st
}

// recvMessages reads n messages (and any settle answers in between,
// returned apart).
func recvMessages(t *testing.T, st consumeStream, n int) ([]*lunorav1.QueueMessage, []*lunorav1.ConsumeSettled) {
	t.Helper()
	var msgs []*lunorav1.QueueMessage
	var settled []*lunorav1.ConsumeSettled
	for len(msgs) < n {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(msgs), n, err)
		}
		if m := resp.GetMessage(); m != nil {
			msgs = append(msgs, m)
		} else {
			settled = append(settled, resp.GetSettled())
		}
	}
	return msgs, settled
}

// recvSettled reads until the answer to request id (messages in between
// are returned apart).
func recvSettled(t *testing.T, st consumeStream, id uint64) (*lunorav1.ConsumeSettled, []*lunorav1.QueueMessage) {
	t.Helper()
	var msgs []*lunorav1.QueueMessage
	for {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("waiting for the answer to settle %d: %v", id, err)
		}
		if m := resp.GetMessage(); m != nil {
			msgs = append(msgs, m)
			continue
		}
		if s := resp.GetSettled(); s.GetRequestId() == id {
			return s, msgs
		}
	}
}

func settleReq(id uint64, verb lunorav1.SettleVerb, delayMS uint64, receipts ...string) *lunorav1.ConsumeRequest {
	return &lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Settle{Settle: &lunorav1.ConsumeSettle{RequestId: id, Verb: verb, DelayMs: delayMS, Receipts: receipts}}}
}

func ids(ms []*lunorav1.QueueMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.GetId()
	}
	return out
}

// TestConsumePrefetch: a stream holds at most prefetch unsettled messages
// and gets one more for each it acks.
func TestConsumePrefetch(t *testing.T) {
	e := newEnv(t, nil)
	c := e.grpcClient(t)
	ctx := testCtx(t)
	e.backend.put("r1", "msg_1", "msg_2", "msg_3", "msg_4", "msg_5")
	st := startConsume(t, ctx, c, &lunorav1.ConsumeStart{Queue: fakeQueue, Prefetch: 2})

	msgs, _ := recvMessages(t, st, 2)
	// The stream's pullers run side by side, so two messages of this
	// fake's one queue may come in either order (the shard host never
	// leases a shard's later messages while earlier ones are out: FIFO
	// per shard holds there).
	slices.SortFunc(msgs, func(a, b *lunorav1.QueueMessage) int { return strings.Compare(a.GetId(), b.GetId()) })
	if got := ids(msgs); !slices.Equal(got, []string{"msg_1", "msg_2"}) {
		t.Fatalf("delivered %v, want msg_1 and msg_2", got)
	}
	m := msgs[0]
	if m.GetQueue() != fakeQueue || m.GetShardId() != "room_id=r1" || m.GetBody() != `{"id":"msg_1"}` || m.GetAttempt() != 1 ||
		m.GetReceipt() != api.ReceiptOf("room_id=r1", "msg_1") || m.GetVisibleUntilUnixMs() == 0 || m.GetEnqueuedUnixMs() != 1700000000000 {
		t.Fatalf("message %v", m)
	}
	// The stream holds two: the puller asks for nothing more.
	e.backend.qmu.Lock()
	left := len(e.backend.ready)
	e.backend.qmu.Unlock()
	if left != 3 {
		t.Fatalf("%d messages left at the backend with two held, want 3", left)
	}
	for _, max := range e.backend.receiveMaxes() {
		if max > 2 {
			t.Fatalf("the stream asked the backend for %d messages with a prefetch of 2", max)
		}
	}

	if err := st.Send(settleReq(1, lunorav1.SettleVerb_ACK, 0, msgs[0].GetReceipt())); err != nil {
		t.Fatal(err)
	}
	s, more := recvSettled(t, st, 1)
	if s.GetSettled() != 1 || len(s.GetFailed()) != 0 || s.GetVerb() != lunorav1.SettleVerb_ACK {
		t.Fatalf("ack answered %v", s)
	}
	if len(more) == 0 {
		more, _ = recvMessages(t, st, 1)
	}
	if got := ids(more); !slices.Equal(got, []string{"msg_3"}) {
		t.Fatalf("after one ack the stream got %v, want msg_3 only", got)
	}
}

// TestConsumeSettleRouting: acks, nacks and extends reach the backend per
// shard with the message IDs of their receipts; a receipt that does not
// parse is answered as failed and the stream goes on.
func TestConsumeSettleRouting(t *testing.T) {
	e := newEnv(t, nil)
	c := e.grpcClient(t)
	ctx := testCtx(t)
	e.backend.put("r1", "msg_a", "msg_b")
	e.backend.put("r2", "msg_c", "msg_d")
	st := startConsume(t, ctx, c, &lunorav1.ConsumeStart{Queue: fakeQueue, Prefetch: 4, VisibilityMs: 60000})
	msgs, _ := recvMessages(t, st, 4)
	rc := map[string]string{}
	for _, m := range msgs {
		rc[m.GetId()] = m.GetReceipt()
		if until := time.UnixMilli(m.GetVisibleUntilUnixMs()); time.Until(until) < 50*time.Second {
			t.Fatalf("visibility_ms 60000 gave a lease until %v", until)
		}
	}

	steps := []struct {
		req      *lunorav1.ConsumeRequest
		settled  uint32
		failed   []string
		failCode codes.Code
		calls    []settleCall
	}{
		{req: settleReq(1, lunorav1.SettleVerb_ACK, 0, rc["msg_a"], rc["msg_c"], "nonsense"), settled: 2, failed: []string{"nonsense"}, failCode: codes.InvalidArgument,
			calls: []settleCall{{ShardID: "room_id=r1", How: api.Ack, IDs: []string{"msg_a"}}, {ShardID: "room_id=r2", How: api.Ack, IDs: []string{"msg_c"}}}},
		{req: settleReq(2, lunorav1.SettleVerb_EXTEND, 90000, rc["msg_b"]), settled: 1,
			calls: []settleCall{{ShardID: "room_id=r1", How: api.Extend, IDs: []string{"msg_b"}, Delay: 90 * time.Second}}},
		{req: settleReq(3, lunorav1.SettleVerb_EXTEND, 0, rc["msg_b"]), failed: []string{rc["msg_b"]}, failCode: codes.InvalidArgument},
		{req: settleReq(4, lunorav1.SettleVerb_SETTLE_VERB_UNSPECIFIED, 0, rc["msg_b"]), failed: []string{rc["msg_b"]}, failCode: codes.InvalidArgument},
		{req: settleReq(5, lunorav1.SettleVerb_NACK, 5000, rc["msg_b"], rc["msg_d"]), settled: 2,
			calls: []settleCall{{ShardID: "room_id=r1", How: api.Nack, IDs: []string{"msg_b"}, Delay: 5 * time.Second}, {ShardID: "room_id=r2", How: api.Nack, IDs: []string{"msg_d"}, Delay: 5 * time.Second}}},
	}
	for i, step := range steps {
		before := len(e.backend.settleCalls())
		if err := st.Send(step.req); err != nil {
			t.Fatal(err)
		}
		id := step.req.GetSettle().GetRequestId()
		s, _ := recvSettled(t, st, id)
		var failed []string
		for _, f := range s.GetFailed() {
			failed = append(failed, f.GetReceipt())
			if codes.Code(f.GetCode()) != step.failCode || f.GetMessage() == "" {
				t.Errorf("step %d: failure %v, want code %v with a message", i, f, step.failCode)
			}
		}
		if s.GetSettled() != step.settled || !slices.Equal(failed, step.failed) {
			t.Errorf("step %d: answered settled %d failed %v, want %d and %v", i, s.GetSettled(), failed, step.settled, step.failed)
		}
		calls := e.backend.settleCalls()[before:]
		slices.SortFunc(calls, func(a, b settleCall) int { return strings.Compare(a.ShardID, b.ShardID) })
		if !equalCalls(calls, step.calls) {
			t.Errorf("step %d: the backend got %+v, want %+v", i, calls, step.calls)
		}
	}
}

func equalCalls(a, b []settleCall) bool {
	return slices.EqualFunc(a, b, func(x, y settleCall) bool {
		return x.ShardID == y.ShardID && x.How == y.How && slices.Equal(x.IDs, y.IDs) && x.Delay == y.Delay
	})
}

// TestConsumeEndReleasesHeld: when the client goes away, the messages
// its stream held unsettled are nacked for redelivery at once; the ones
// it acked are not.
func TestConsumeEndReleasesHeld(t *testing.T) {
	e := newEnv(t, nil)
	c := e.grpcClient(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	e.backend.put("r1", "msg_1", "msg_2", "msg_3")
	st := startConsume(t, ctx, c, &lunorav1.ConsumeStart{Queue: fakeQueue, Prefetch: 3})
	msgs, _ := recvMessages(t, st, 3)
	slices.SortFunc(msgs, func(a, b *lunorav1.QueueMessage) int { return strings.Compare(a.GetId(), b.GetId()) })
	if err := st.Send(settleReq(1, lunorav1.SettleVerb_ACK, 0, msgs[1].GetReceipt())); err != nil {
		t.Fatal(err)
	}
	recvSettled(t, st, 1)
	cancel() // the client is gone

	want := settleCall{ShardID: "room_id=r1", How: api.Nack, IDs: []string{"msg_1", "msg_3"}, Delay: time.Millisecond}
	var nacks []settleCall
	waitFor(t, "the held messages to be released", func() bool {
		nacks = nil
		for _, call := range e.backend.settleCalls() {
			if call.How == api.Nack {
				slices.Sort(call.IDs)
				nacks = append(nacks, call)
			}
		}
		return len(nacks) > 0
	})
	if !equalCalls(nacks, []settleCall{want}) {
		t.Fatalf("released with %+v, want %+v", nacks, want)
	}
}

// TestConsumeRefusals: a stream needs a start first, a known queue and
// sensible bounds.
func TestConsumeRefusals(t *testing.T) {
	e := newEnv(t, nil)
	c := e.grpcClient(t)
	cases := []struct {
		name  string
		first *lunorav1.ConsumeRequest
		code  codes.Code
	}{
		{"unknown queue", &lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{Queue: "nope"}}}, codes.NotFound},
		{"no queue", &lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{}}}, codes.InvalidArgument},
		{"settle first", settleReq(1, lunorav1.SettleVerb_ACK, 0, "x"), codes.InvalidArgument},
		{"prefetch too large", &lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{Queue: fakeQueue, Prefetch: 100000}}}, codes.InvalidArgument},
		{"visibility too long", &lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{Queue: fakeQueue, VisibilityMs: uint64(13 * time.Hour / time.Millisecond)}}}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := c.Consume(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(tc.first); err != nil {
				t.Fatal(err)
			}
			_, err = st.Recv()
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
		})
	}
	// A second start ends a running stream.
	st := startConsume(t, testCtx(t), c, &lunorav1.ConsumeStart{Queue: fakeQueue})
	if err := st.Send(&lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{Queue: fakeQueue}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a second start: %v, want INVALID_ARGUMENT", err)
	}
}

// TestQueueAuth: consuming and settling need role service or admin, the
// dead-letter and alarm admin API role admin; no credential is
// UNAUTHENTICATED (401) as everywhere.
func TestQueueAuth(t *testing.T) {
	e := newAuthEnv(t, time.Minute)
	service := e.createKey(t, "worker", "service")
	client := e.createKey(t, "app", "client")
	e.backend.put("r1", "msg_1")

	c := e.grpcClient(t)
	for _, tc := range []struct {
		token string
		code  codes.Code
	}{{"", codes.Unauthenticated}, {client, codes.PermissionDenied}} {
		st := startConsume(t, bearer(testCtx(t), tc.token), c, &lunorav1.ConsumeStart{Queue: fakeQueue})
		if _, err := st.Recv(); status.Code(err) != tc.code {
			t.Errorf("Consume with token %q: %v, want %v", tc.token, err, tc.code)
		}
	}
	st := startConsume(t, bearer(testCtx(t), service), c, &lunorav1.ConsumeStart{Queue: fakeQueue})
	if msgs, _ := recvMessages(t, st, 1); msgs[0].GetId() != "msg_1" {
		t.Fatalf("a service key consumed %v", msgs)
	}

	receipt := api.ReceiptOf("room_id=r1", "msg_1")
	for _, tc := range []struct {
		token, method, path, body string
		status                    int
	}{
		{"", "POST", "/v1/queues/room-events/receive", `{}`, http.StatusUnauthorized},
		{client, "POST", "/v1/queues/room-events/receive", `{}`, http.StatusForbidden},
		{client, "POST", "/v1/queues/room-events/ack", `{"receipts":["` + receipt + `"]}`, http.StatusForbidden},
		{service, "POST", "/v1/queues/room-events/ack", `{"receipts":["` + receipt + `"]}`, http.StatusOK},
		{service, "GET", "/v1/admin/queues/room-events/dead", ``, http.StatusForbidden},
		{service, "POST", "/v1/admin/queues/room-events/redrive", ``, http.StatusForbidden},
		{service, "GET", "/v1/admin/alarms", ``, http.StatusForbidden},
		{"", "GET", "/v1/admin/alarms", ``, http.StatusUnauthorized},
		{e.admin, "GET", "/v1/admin/queues/room-events/dead", ``, http.StatusOK},
		{e.admin, "GET", "/v1/admin/alarms", ``, http.StatusOK},
	} {
		if a := e.do(t, tc.token, tc.method, tc.path, tc.body); a.status != tc.status {
			t.Errorf("%s %s (token %.8q): %d %s, want %d", tc.method, tc.path, tc.token, a.status, a.raw, tc.status)
		}
	}
}

// TestHTTPQueues: receive, ack, nack and extend over HTTP, with their
// refusals.
func TestHTTPQueues(t *testing.T) {
	e := newEnv(t, nil)
	e.backend.put("r1", "msg_1", "msg_2")
	e.backend.put("r2", "msg_3")

	a := e.do(t, "POST", "/v1/queues/room-events/receive", `{"max": 10, "visibility_ms": 30000, "wait_ms": 1000}`)
	if a.status != 200 {
		t.Fatalf("receive: %d %s", a.status, a.raw)
	}
	var got struct {
		Messages []struct {
			ID, Queue, ShardID, Receipt, Enqueued, VisibleUntil string
			Body                                                map[string]any
			Attempt                                             int
		}
	}
	if err := json.Unmarshal([]byte(strings.NewReplacer("shard_id", "ShardID", "visible_until", "VisibleUntil").Replace(a.raw)), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != 3 || got.Messages[0].ID != "msg_1" || got.Messages[0].Body["id"] != "msg_1" || got.Messages[0].Attempt != 1 ||
		got.Messages[0].ShardID != "room_id=r1" || got.Messages[0].Enqueued != "2023-11-14T22:13:20Z" || got.Messages[0].VisibleUntil == "" {
		t.Fatalf("receive answered %s", a.raw)
	}
	r1, r3 := got.Messages[0].Receipt, got.Messages[2].Receipt

	before := len(e.backend.settleCalls())
	for _, step := range []struct {
		path, body string
		call       settleCall
	}{
		{"ack", `{"receipts":["` + r1 + `"]}`, settleCall{ShardID: "room_id=r1", How: api.Ack, IDs: []string{"msg_1"}}},
		{"nack", `{"receipts":["` + r3 + `"],"delay_ms":2500}`, settleCall{ShardID: "room_id=r2", How: api.Nack, IDs: []string{"msg_3"}, Delay: 2500 * time.Millisecond}},
		{"extend", `{"receipts":["` + r3 + `"],"visibility_ms":60000}`, settleCall{ShardID: "room_id=r2", How: api.Extend, IDs: []string{"msg_3"}, Delay: time.Minute}},
	} {
		a := e.do(t, "POST", "/v1/queues/room-events/"+step.path, step.body)
		if a.status != 200 || a.body["settled"] != json.Number("1") {
			t.Fatalf("%s: %d %s", step.path, a.status, a.raw)
		}
		calls := e.backend.settleCalls()
		if len(calls) != before+1 || !equalCalls(calls[before:], []settleCall{step.call}) {
			t.Fatalf("%s: the backend got %+v, want %+v", step.path, calls[before:], step.call)
		}
		before++
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
		msgHas             string
	}{
		{"POST", "/v1/queues/nope/receive", `{}`, 404, `queue "nope" is not declared`},
		{"POST", "/v1/queues/room-events/receive", `{"max": 1000}`, 400, "max must be between 1 and 100"},
		{"POST", "/v1/queues/room-events/receive", `{"wait_ms": 60000}`, 400, "wait_ms is 60000, over the limit"},
		{"POST", "/v1/queues/room-events/receive", `{"visibility_ms": -1}`, 400, "visibility_ms must not be negative"},
		{"POST", "/v1/queues/room-events/receive", `{"maximum": 1}`, 400, "unknown field"},
		{"POST", "/v1/queues/room-events/receive", `not json`, 400, "malformed JSON"},
		{"POST", "/v1/queues/room-events/ack", `{"receipts":[]}`, 400, "ack needs receipts"},
		{"POST", "/v1/queues/room-events/ack", `{"receipts":["` + r1 + `","bogus"]}`, 400, "receipts[1]: receipt \"bogus\" is not one Lunora issued"},
		{"POST", "/v1/queues/room-events/ack", `{"receipts":["` + r1 + `"],"delay_ms":5}`, 400, "ack takes receipts only"},
		{"POST", "/v1/queues/room-events/extend", `{"receipts":["` + r1 + `"]}`, 400, "extend needs visibility_ms"},
		{"POST", "/v1/queues/room-events/nack", `{"receipts":["` + r1 + `"],"visibility_ms":5}`, 400, "nack takes delay_ms"},
		{"POST", "/v1/queues/room-events/purge", `{}`, 404, "no endpoint"},
		{"GET", "/v1/queues/room-events/receive", ``, 405, "use POST"},
		{"POST", "/v1/queues/a%20b/receive", `{}`, 400, "is not a queue name"},
	} {
		a := e.do(t, tc.method, tc.path, tc.body)
		_, msg := a.errorOf(t)
		if a.status != tc.status || !strings.Contains(msg, tc.msgHas) {
			t.Errorf("%s %s %s: %d %q, want %d with %q", tc.method, tc.path, tc.body, a.status, msg, tc.status, tc.msgHas)
		}
	}
}

// TestHTTPQueueAdmin: the dead-letter list, redrive and the alarm
// listings.
func TestHTTPQueueAdmin(t *testing.T) {
	e := newEnv(t, nil)
	e.backend.dead = []api.QueueMessage{{ID: "msg_9", Queue: fakeQueue, ShardID: "room_id=r1", Body: "not json", Attempt: 5, Error: "handler failed", Died: time.Unix(1700000000, 0)}}

	a := e.do(t, "GET", "/v1/admin/queues/room-events/dead?limit=5", "")
	if a.status != 200 || !strings.Contains(a.raw, `"id":"msg_9"`) || !strings.Contains(a.raw, `"body":"not json"`) ||
		!strings.Contains(a.raw, `"error":"handler failed"`) || !strings.Contains(a.raw, `"died":"2023-11-14T22:13:20Z"`) {
		t.Fatalf("dead: %d %s", a.status, a.raw)
	}
	if a := e.do(t, "POST", "/v1/admin/queues/room-events/redrive", ""); a.status != 200 || a.body["redriven"] != json.Number("1") {
		t.Fatalf("redrive all: %d %s", a.status, a.raw)
	}
	if a := e.do(t, "POST", "/v1/admin/queues/room-events/redrive", `{"ids":["msg_9","msg_8"]}`); a.status != 200 || a.body["redriven"] != json.Number("2") {
		t.Fatalf("redrive two: %d %s", a.status, a.raw)
	}
	e.backend.qmu.Lock()
	redrives := e.backend.redrives
	e.backend.qmu.Unlock()
	if len(redrives) != 2 || len(redrives[0]) != 0 || !slices.Equal(redrives[1], []string{"msg_9", "msg_8"}) {
		t.Fatalf("the backend was asked to redrive %v", redrives)
	}

	a = e.do(t, "GET", "/v1/admin/alarms?shard=room_id%3Dr1", "")
	if a.status != 200 || !strings.Contains(a.raw, `"id":"alm_1"`) || !strings.Contains(a.raw, `"args":{"room_id":"r1"}`) ||
		!strings.Contains(a.raw, `"dead":true`) || !strings.Contains(a.raw, `"error":"boom"`) {
		t.Fatalf("alarms of a shard: %d %s", a.status, a.raw)
	}
	a = e.do(t, "GET", "/v1/admin/alarms", "")
	if a.status != 200 || !strings.Contains(a.raw, `{"due":[{"shard_id":"room_id=r1","node":"dev","due":"2027-01-15T08:00:00Z"}]}`) {
		t.Fatalf("alarm index: %d %s", a.status, a.raw)
	}

	for _, tc := range []struct {
		method, path, body string
		status             int
		msgHas             string
	}{
		{"GET", "/v1/admin/queues/nope/dead", "", 404, `queue "nope" is not declared`},
		{"POST", "/v1/admin/queues/nope/redrive", "", 404, `queue "nope" is not declared`},
		{"GET", "/v1/admin/queues/room-events/dead?limit=0", "", 400, "limit must be a number between 1 and 1000"},
		{"GET", "/v1/admin/queues/room-events/dead?limit=x", "", 400, "limit must be a number"},
		{"POST", "/v1/admin/queues/room-events/redrive", `{"ids":["nope"]}`, 400, "is not a message ID"},
		{"POST", "/v1/admin/queues/room-events/dead", "", 405, "use GET"},
		{"GET", "/v1/admin/queues/room-events", "", 404, "no endpoint"},
		{"GET", "/v1/admin/alarms?shard=user_id%3Du1", "", 400, "user_id"},
		{"GET", "/v1/admin/alarms?limit=-1", "", 400, "limit must be"},
		{"DELETE", "/v1/admin/alarms", "", 405, "use GET"},
	} {
		a := e.do(t, tc.method, tc.path, tc.body)
		_, msg := a.errorOf(t)
		if a.status != tc.status || !strings.Contains(msg, tc.msgHas) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, a.status, msg, tc.status, tc.msgHas)
		}
	}
}

// TestConsumeHoldsAConnectionSlot: a Consume stream holds one of its
// client's live-connection slots (MaxWebSocketsPerClient) until it ends,
// as a subscription does.
func TestConsumeHoldsAConnectionSlot(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.MaxWebSocketsPerClient = 1 })
	c := e.grpcClient(t)
	e.backend.put("r1", "msg_1")
	ctx, cancel := context.WithCancel(testCtx(t))
	first := startConsume(t, ctx, c, &lunorav1.ConsumeStart{Queue: fakeQueue})
	recvMessages(t, first, 1) // admitted and running

	second := startConsume(t, testCtx(t), c, &lunorav1.ConsumeStart{Queue: fakeQueue})
	if _, err := second.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a second stream past the limit: %v, want RESOURCE_EXHAUSTED", err)
	}
	cancel()
	// Its slot is given back when it has released what it held.
	waitFor(t, "the first stream to release its message", func() bool {
		for _, call := range e.backend.settleCalls() {
			if call.How == api.Nack {
				return true
			}
		}
		return false
	})
	e.backend.put("r1", "msg_2")
	waitFor(t, "the first stream's slot to be given back", func() bool {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		st := startConsume(t, ctx, c, &lunorav1.ConsumeStart{Queue: fakeQueue})
		resp, err := st.Recv()
		return err == nil && resp.GetMessage().GetId() == "msg_2"
	})
}
