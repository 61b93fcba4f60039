package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/handoff"
	"github.com/lunora/lunora/node/nodetest"
)

// TestHandoffCrashPoints: a node killed at each of the handoff's crash
// points (sender after the receiver's ack, sender after the commit,
// receiver after storing its copy) and restarted leaves the shard with
// exactly one copy — the registry's holder's — serving every row.
func TestHandoffCrashPoints(t *testing.T) {
	for _, tc := range []struct {
		point    string
		receiver bool // the receiver (the joining node) is the one killed
	}{
		{handoff.FaultSendAfterAck, false},
		{handoff.FaultSendAfterCommit, false},
		{handoff.FaultRecvAfterStore, true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			gate := nodetest.NewCrashGate(tc.point)
			c := nodetest.Start(t, 3, nodetest.Config{Fault: gate.Fault})
			ctx := ctxT(t, 90*time.Second)
			fi := someFollower(c)
			from := c.Node(fi).ID
			k := nodetest.KeyMovedBy(first3, first4, from, "n3")
			writeRows(t, ctx, c, k, 3)
			shard, victim := nodetest.ShardID(k), from
			if tc.receiver {
				victim = "n3"
			}
			gate.Arm(shard, victim)

			j := c.Join()
			if err := gate.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			vi := fi
			if tc.receiver {
				vi = j
			}
			c.Kill(vi)
			gate.Release()
			c.Restart(vi)
			c.WaitFor(30*time.Second, func() error {
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				res, err := c.Router.Call(rctx, shard, "items:list", args(k), api.ReadOptions{})
				if err != nil {
					return err
				}
				if rows(res) != 3 {
					return fmt.Errorf("%d rows, want 3", rows(res))
				}
				return c.CheckOneCopy(rctx)
			})
			if h := holder(ctx, c, k); h != "n3" {
				t.Fatalf("%s ends held by %s, want its owner n3", shard, h)
			}
		})
	}
}
