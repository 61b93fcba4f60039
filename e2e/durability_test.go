package e2e_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
)

const (
	// writers call messages:send concurrently, each at most perWriter
	// times; the node is killed once killAfter calls have been
	// acknowledged, while every writer is still going.
	writers   = 16
	perWriter = 2000
	killAfter = 3000
	// restartTimeout bounds how long a gateway takes to reach a restarted
	// node (gRPC reconnect backoff starts at 1s).
	restartTimeout = 45 * time.Second
)

// ack is an acknowledged messages:send.
type ack struct {
	room, body string
	id         int64
	seq        uint64
}

// roomFor spreads writer w's j-th message over its own room, a room it
// shares with one other writer and a room every writer shares.
func roomFor(w, j int) string {
	switch j % 3 {
	case 0:
		return fmt.Sprintf("own-%02d", w)
	case 1:
		return fmt.Sprintf("pair-%d", w/2)
	}
	return "all"
}

// TestKillDevNodeDuringWrites: I2 across a SIGKILL of "lunora-node dev"
// with writes in flight — every acknowledged write is there after the
// restart, once, with the id and commit sequence it was acknowledged with.
func TestKillDevNodeDuringWrites(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "dev", "-idle-timeout", "1h"))
	acks := writeUntilKilled(t, lunoratest.DialGRPC(t, node.GRPCAddr()), node.Kill)

	node.Restart()
	c := lunoratest.DialGRPC(t, node.GRPCAddr())
	checkAcked(t, c, acks)
}

// TestKillNodeBehindGateway: the same with "lunora-node serve" and
// lunora-gateway as two processes, writing through the gateway. After the
// node's restart the same gateway process serves again.
func TestKillNodeBehindGateway(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	schema := chatSchemaFile(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", schema, "-idle-timeout", "1h"))
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schema, node.GRPCAddr()))
	c := lunoratest.DialGRPC(t, gw.GRPCAddr())
	acks := writeUntilKilled(t, c, node.Kill)

	// While the node is down the gateway answers UNAVAILABLE, not garbage.
	_, err := c.Call(ctxT(t), &lunorav1.CallRequest{Function: "messages:count", Args: lunoratest.Args(map[string]any{"room_id": "all"})})
	if code := statusCode(err); code != "Unavailable" {
		t.Errorf("call through the gateway with its node down: %v (code %s), want Unavailable", err, code)
	}

	node.Restart()
	lunoratest.WaitFor(t, restartTimeout, func() error {
		_, err := c.Call(ctxT(t), &lunorav1.CallRequest{Function: "messages:count", Args: lunoratest.Args(map[string]any{"room_id": "all"})})
		return err
	})
	checkAcked(t, c, acks)
	if st, ok := gw.Wait(0); ok {
		t.Fatalf("the gateway exited (%v) while its node was down", st)
	}
}

// writeUntilKilled runs the writers against c, calls kill once killAfter
// writes are acknowledged, lets every writer run into the failure and
// returns the acknowledged writes.
func writeUntilKilled(t *testing.T, c lunorav1.LunoraClient, kill func()) []ack {
	t.Helper()
	var (
		mu          sync.Mutex
		acks        []ack
		unexpected  []error
		acked       atomic.Int64
		killed      atomic.Bool
		failedAfter atomic.Int64
		killNow     = make(chan struct{})
		wg          sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perWriter {
				room, body := roomFor(w, j), fmt.Sprintf("writer %02d message %04d", w, j)
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				resp, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:send", Args: lunoratest.Args(map[string]any{"room_id": room, "author": fmt.Sprint(w), "body": body})})
				cancel()
				if err != nil {
					if killed.Load() {
						failedAfter.Add(1)
					} else {
						mu.Lock()
						unexpected = append(unexpected, fmt.Errorf("writer %d message %d before the kill: %w", w, j, err))
						mu.Unlock()
					}
					return
				}
				a := ack{room: room, body: body, seq: resp.GetCommitSeq()}
				if rows := resp.GetRows(); len(rows) == 1 && len(rows[0].GetValues()) == 1 {
					a.id = rows[0].GetValues()[0].GetInteger()
				}
				mu.Lock()
				acks = append(acks, a)
				mu.Unlock()
				if acked.Add(1) == killAfter {
					close(killNow)
				}
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-killNow:
	case <-allDone:
		t.Fatalf("writers stopped after %d acknowledged writes, before the kill at %d: %v", acked.Load(), killAfter, unexpected)
	}
	killed.Store(true)
	kill()
	<-allDone

	mu.Lock()
	defer mu.Unlock()
	for _, err := range unexpected {
		t.Errorf("unexpected failure: %v", err)
	}
	// Every writer was still writing when the node died (perWriter is far
	// more than it gets to), so each ends on a failed call.
	if n := failedAfter.Load(); n != writers {
		t.Errorf("%d writers saw their call fail after the kill, want all %d (were writes in flight?)", n, writers)
	}
	t.Logf("%d writes acknowledged (kill requested at %d), %d writers cut off", len(acks), killAfter, failedAfter.Load())
	return append([]ack(nil), acks...)
}

// checkAcked reads back every room written and checks, per room: every
// acknowledged body is present exactly once with its acknowledged id; no
// body is duplicated; the acknowledged commit sequence numbers are
// distinct and increase with the id (commit order); the shard's sequence
// number has not gone back; a new write gets a higher one.
func checkAcked(t *testing.T, c lunorav1.LunoraClient, acks []ack) {
	t.Helper()
	byRoom := map[string][]ack{}
	for _, a := range acks {
		byRoom[a.room] = append(byRoom[a.room], a)
	}
	present := 0
	for room, as := range byRoom {
		list := mustGRPC(t, c, "messages:list", map[string]any{"room_id": room, "limit": 10000})
		rows := messagesFromGRPC(t, list)
		if len(rows) >= 10000 {
			t.Fatalf("room %s: %d rows, the read-back limit; lower perWriter", room, len(rows))
		}
		present += len(rows)
		ids := map[string][]int64{}
		for _, m := range rows {
			ids[m.body] = append(ids[m.body], m.id)
		}
		for body, got := range ids {
			if len(got) > 1 {
				t.Errorf("room %s: %q stored %d times (ids %v)", room, body, len(got), got)
			}
		}
		seqs := map[uint64]string{}
		var maxSeq uint64
		for _, a := range as {
			got := ids[a.body]
			switch {
			case len(got) == 0:
				t.Errorf("room %s: acknowledged write %q (id %d, seq %d) is lost", room, a.body, a.id, a.seq)
			case got[0] != a.id:
				t.Errorf("room %s: %q has id %d, acknowledged with id %d", room, a.body, got[0], a.id)
			}
			if other, dup := seqs[a.seq]; dup {
				t.Errorf("room %s: %q and %q were both acknowledged with commit seq %d", room, other, a.body, a.seq)
			}
			seqs[a.seq] = a.body
			maxSeq = max(maxSeq, a.seq)
		}
		sort.Slice(as, func(i, j int) bool { return as[i].id < as[j].id })
		for i := 1; i < len(as); i++ {
			if as[i].seq <= as[i-1].seq {
				t.Errorf("room %s: id %d has seq %d but the earlier id %d has seq %d; seqs must follow commit order", room, as[i].id, as[i].seq, as[i-1].id, as[i-1].seq)
				break
			}
		}
		if list.GetCommitSeq() < maxSeq {
			t.Errorf("room %s: after the restart the shard is at commit seq %d, below the acknowledged %d", room, list.GetCommitSeq(), maxSeq)
		}
		next := mustGRPC(t, c, "messages:send", map[string]any{"room_id": room, "author": "check", "body": "after restart"})
		if next.GetCommitSeq() <= list.GetCommitSeq() {
			t.Errorf("room %s: the first write after the restart got commit seq %d, not above %d", room, next.GetCommitSeq(), list.GetCommitSeq())
		}
	}
	t.Logf("%d acknowledged writes in %d rooms all present; %d rows in all (the rest committed but not acknowledged before the kill)", len(acks), len(byRoom), present)
}
