package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// consumerChildEnv makes the test binary a queue consumer (in
// TestQueueConsumerChild): it receives over gRPC Consume from the address
// in the variable, prints each message's ID, and never acknowledges.
const consumerChildEnv = "LUNORA_E2E_CONSUMER_ADDR"

// TestQueueConsumerChild is the consumer process of TestQueueConsumerKilled;
// on its own it does nothing.
func TestQueueConsumerChild(t *testing.T) {
	addr := os.Getenv(consumerChildEnv)
	if addr == "" {
		t.Skip("the consumer process of TestQueueConsumerKilled")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println("ERR", err)
		return
	}
	st, err := lunorav1.NewLunoraClient(conn).Consume(context.Background())
	if err == nil {
		err = st.Send(&lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{Queue: "room-events", Prefetch: 4, VisibilityMs: 600_000}}})
	}
	for err == nil {
		var resp *lunorav1.ConsumeResponse
		if resp, err = st.Recv(); err == nil {
			if m := resp.GetMessage(); m != nil {
				fmt.Println("MSG", m.GetId(), m.GetAttempt())
			}
		}
	}
	fmt.Println("ERR", err)
	select {} // held until killed
}

// TestQueueConsumerKilled: a consumer process holding unacknowledged
// messages (its lease is 10 minutes) is SIGKILLed; the messages come again
// to the next consumer at once, at their second attempt, and every message
// is delivered.
func TestQueueConsumerKilled(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "dev"))
	c := lunoratest.DialGRPC(t, node.GRPCAddr())
	const rooms = 10
	for i := range rooms {
		if _, err := c.Call(ctxT(t), &lunorav1.CallRequest{Function: "rooms:create", Args: lunoratest.Args(map[string]any{"room_id": fmt.Sprint("q", i), "title": "t"})}); err != nil {
			t.Fatal(err)
		}
	}
	child := exec.Command(os.Args[0], "-test.run=^TestQueueConsumerChild$", "-test.v")
	child.Env = append(os.Environ(), consumerChildEnv+"="+node.GRPCAddr())
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	held := map[string]bool{}
	lines := bufio.NewScanner(out)
	for len(held) < 4 && lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) > 0 && f[0] == "ERR" {
			t.Fatalf("consumer process: %s", lines.Text())
		}
		if len(f) == 3 && f[0] == "MSG" {
			held[f[1]] = true
		}
	}
	if len(held) != 4 {
		t.Fatalf("the consumer process received %d messages, want its prefetch of 4", len(held))
	}
	go io.Copy(io.Discard, out)
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	st, err := c.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{Queue: "room-events", Prefetch: 32}}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	start := time.Now()
	for len(got) < rooms {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		m := resp.GetMessage()
		if m == nil {
			continue
		}
		var body struct{ Type, RoomID string }
		if err := json.Unmarshal([]byte(m.GetBody()), &body); err != nil || body.Type != "room.created" {
			t.Fatalf("message body %s: %v", m.GetBody(), err)
		}
		got[m.GetId()] = int64(m.GetAttempt())
		if err := st.Send(&lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Settle{Settle: &lunorav1.ConsumeSettle{
			Verb: lunorav1.SettleVerb_ACK, Receipts: []string{m.GetReceipt()}}}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("all %d messages received %s after the kill", rooms, time.Since(start))
	for id := range held {
		if got[id] != 2 {
			t.Errorf("message %s held by the killed consumer came at attempt %d, want 2", id, got[id])
		}
	}
	for id, attempt := range got {
		if !held[id] && attempt != 1 {
			t.Errorf("message %s, never held, came at attempt %d", id, attempt)
		}
	}
}

// TestQueuePoisonMessageRedriven: over the HTTP API, a message nacked on
// every delivery lands in the dead-letter list after the queue's
// max_attempts (room-events: 10); a redrive delivers it again.
func TestQueuePoisonMessageRedriven(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "dev"))
	h := lunoratest.NewHTTPClient(t, node.HTTPAddr())
	if r, err := h.Call(ctxT(t), "rooms:create", map[string]any{"room_id": "poison", "title": "p"}); err != nil || r.Status != 200 {
		t.Fatalf("rooms:create: %v %v", r, err)
	}
	post := func(path, body string) map[string]any {
		t.Helper()
		r, err := h.Post(ctxT(t), path, []byte(body))
		if err != nil || r.Status != 200 {
			t.Fatalf("POST %s: %v %v", path, r, err)
		}
		var m map[string]any
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	receive := func() map[string]any {
		t.Helper()
		for range 100 {
			msgs, _ := post("/v1/queues/room-events/receive", `{"max":1,"wait_ms":1000}`)["messages"].([]any)
			if len(msgs) == 1 {
				return msgs[0].(map[string]any)
			}
		}
		t.Fatal("no message within 100 receives")
		return nil
	}
	var id string
	for attempt := 1; attempt <= 10; attempt++ {
		m := receive()
		if id == "" {
			id = m["id"].(string)
		}
		if m["id"] != id || m["attempt"] != float64(attempt) {
			t.Fatalf("delivery %d: %v", attempt, m)
		}
		if n := post("/v1/queues/room-events/nack", `{"receipts":["`+m["receipt"].(string)+`"],"delay_ms":1}`)["settled"]; n != float64(1) {
			t.Fatalf("nack settled %v", n)
		}
	}
	r, err := h.Get(ctxT(t), "/v1/admin/queues/room-events/dead")
	if err != nil || r.Status != 200 || !strings.Contains(string(r.Body), id) {
		t.Fatalf("dead letters after 10 nacks: %v %v", r, err)
	}
	if n := post("/v1/admin/queues/room-events/redrive", `{}`)["redriven"]; n != float64(1) {
		t.Fatalf("redriven %v", n)
	}
	if m := receive(); m["id"] != id || m["attempt"] != float64(1) {
		t.Fatalf("after the redrive: %v", m)
	}
}
