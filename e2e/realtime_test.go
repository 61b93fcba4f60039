package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSubscribeOverGRPC: a live query through the gateway's gRPC stream
// gets its snapshot, then one insert per message in seq order; after a
// disconnect, resuming with since_seq yields exactly the missed messages.
func TestSubscribeOverGRPC(t *testing.T) {
	dev := lunoratest.StartDev(t, shardhost.DefaultLocalConfig())
	c := lunoratest.DialGRPC(t, dev.GRPCAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	send := func(body string) uint64 {
		t.Helper()
		res, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:send", Args: lunoratest.Args(map[string]any{"room_id": "live", "author": "a", "body": body})})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetCommitSeq()
	}
	send("before")

	sctx, scancel := context.WithCancel(ctx)
	stream, err := c.Subscribe(sctx, &lunorav1.SubscribeRequest{Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": "live", "limit": 1000})})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetKind() != lunorav1.SubscribeEvent_SNAPSHOT || len(ev.GetRows()) != 1 || !ev.GetKeyed() || ev.GetSeq() != 1 {
		t.Fatalf("first event = %v, %v", ev, err)
	}
	last := ev.GetSeq()
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		send(fmt.Sprintf("live-%d", i))
	}
	for len(seen) < 3 {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetKind() != lunorav1.SubscribeEvent_DELTA || ev.GetSeq() <= last {
			t.Fatalf("event out of order after seq %d: %v", last, ev)
		}
		last = ev.GetSeq()
		for _, ch := range ev.GetChanges() {
			if ch.GetOp() != lunorav1.RowChange_INSERT {
				t.Fatalf("unexpected change %v", ch)
			}
			seen[ch.GetRow().GetValues()[2].GetText()] = true
		}
	}
	scancel()

	// Missed while disconnected.
	send("missed-1")
	want := send("missed-2")
	stream, err = c.Subscribe(ctx, &lunorav1.SubscribeRequest{Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": "live", "limit": 1000}), SinceSeq: last})
	if err != nil {
		t.Fatal(err)
	}
	ev, err = stream.Recv()
	if err != nil || ev.GetKind() != lunorav1.SubscribeEvent_DELTA || ev.GetReset_() || ev.GetSeq() != want {
		t.Fatalf("resume event = %v, %v (want one delta at seq %d)", ev, err, want)
	}
	var got []string
	for _, ch := range ev.GetChanges() {
		got = append(got, ch.GetRow().GetValues()[2].GetText())
	}
	if fmt.Sprint(got) != "[missed-1 missed-2]" {
		t.Fatalf("resume delivered %v, want exactly the two missed messages", got)
	}

	// Bad input answers with a status, before any event.
	for name, req := range map[string]*lunorav1.SubscribeRequest{
		"mutation": {Function: "messages:send", Args: lunoratest.Args(map[string]any{"room_id": "r", "author": "a", "body": "b"})},
		"unknown":  {Function: "nope:nope"},
		"bad args": {Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": "r", "limit": "ten"})},
	} {
		st, err := c.Subscribe(ctx, req)
		if err == nil {
			_, err = st.Recv()
		}
		code := status.Code(err)
		if (name == "unknown" && code != codes.NotFound) || (name != "unknown" && code != codes.InvalidArgument) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
