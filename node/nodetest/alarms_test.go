package nodetest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/handoff"
	"github.com/lunora/lunora/node/nodetest"
	"github.com/lunora/lunora/schema"
)

const alarmAppSchema = `
tables:
  fired:
    shard_by: k
    columns: {k: text, n: int, tag: text}
    primary_key: [n]
queues:
  jobs:
  relay:
    consumer: alarms:run
functions:
  alarms:add:
    kind: mutation
    shard_by: k
    args: {k: text, tag: text, at: int}
    sql:
      - SELECT lunora_schedule(:at, 'alarms:run', json_object('k', :k, 'tag', :tag))
  alarms:run:
    kind: mutation
    shard_by: k
    args: {k: text, tag: text}
    sql:
      - INSERT INTO fired(k, tag) VALUES (:k, :tag)
  jobs:add:
    kind: mutation
    shard_by: k
    args: {k: text, tag: text}
    sql:
      - SELECT lunora_enqueue('jobs', json_object('k', :k, 'tag', :tag))
  relay:add:
    kind: mutation
    shard_by: k
    args: {k: text, to: text, tag: text}
    sql:
      - SELECT lunora_enqueue('relay', json_object('k', :to, 'tag', :tag))
  alarms:fired:
    kind: query
    shard_by: k
    args: {k: text}
    sql:
      - SELECT tag, count(*) FROM fired GROUP BY tag
`

// TestAlarmsAndQueuesMoveOnScaleOut: shards with pending alarms and queued
// messages are handed off when a fourth node joins; the alarms fire once
// each, on the new holder (the moves finish before any is due), the old
// holders drop their index entries, and every message is delivered once,
// by the new holder. A queue's consumer function runs on the shard its
// message names, wherever it lives.
func TestAlarmsAndQueuesMoveOnScaleOut(t *testing.T) {
	app, err := schema.Parse("alarms.yaml", []byte(alarmAppSchema))
	if err != nil {
		t.Fatal(err)
	}
	c := nodetest.Start(t, 3, nodetest.Config{App: app})
	ctx := ctxT(t, 120*time.Second)
	before := c.IDs(0, 1, 2)
	after := append(append([]string(nil), before...), "n3")
	var moved, stay []string
	for i := 0; len(moved) < 4 || len(stay) < 4; i++ {
		k := fmt.Sprintf("a%d", i)
		if nodetest.Owner(nodetest.ShardID(k), after...) == "n3" {
			if len(moved) < 4 {
				moved = append(moved, k)
			}
		} else if len(stay) < 4 {
			stay = append(stay, k)
		}
	}
	const perShard = 3
	due := time.Now().Add(20 * time.Second)
	keys := append(append([]string(nil), moved...), stay...)
	for _, k := range keys {
		for j := range perShard {
			at := due.Add(time.Duration(j) * 200 * time.Millisecond).UnixMilli()
			if _, err := c.Router.Call(ctx, nodetest.ShardID(k), "alarms:add", map[string]any{"k": k, "tag": fmt.Sprint(j), "at": at}, api.ReadOptions{}); err != nil {
				t.Fatalf("schedule on %s: %v", k, err)
			}
		}
	}
	for _, k := range keys {
		for j := range perShard {
			if _, err := c.Router.Call(ctx, nodetest.ShardID(k), "jobs:add", map[string]any{"k": k, "tag": fmt.Sprint(j)}, api.ReadOptions{}); err != nil {
				t.Fatalf("enqueue on %s: %v", k, err)
			}
		}
	}
	oldHolder := map[string]string{}
	reg, err := c.Registry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range moved {
		oldHolder[k] = reg[nodetest.ShardID(k)]
	}

	if id := c.Node(c.Join()).ID; id != "n3" {
		t.Fatalf("the new node is %s, want n3", id)
	}
	c.WaitFor(15*time.Second, func() error {
		reg, err := c.Registry(ctx)
		if err != nil {
			return err
		}
		for _, k := range moved {
			if h := reg[nodetest.ShardID(k)]; h != "n3" {
				return fmt.Errorf("shard %s is held by %q", k, h)
			}
		}
		return nil
	})
	if time.Now().After(due) {
		t.Fatalf("the moves finished after the alarms were due; the test proves nothing")
	}
	n3 := c.Node(3).Proc().Host
	for _, k := range moved {
		c.WaitFor(10*time.Second, func() error {
			if _, ok := n3.AlarmIndex()[nodetest.ShardID(k)]; !ok {
				return fmt.Errorf("n3's alarm index lacks moved shard %s: %v", k, n3.AlarmIndex())
			}
			return nil
		})
		c.WaitFor(10*time.Second, func() error {
			old := c.Node(index(oldHolder[k])).Proc().Host
			if _, ok := old.AlarmIndex()[nodetest.ShardID(k)]; ok {
				return fmt.Errorf("%s still indexes moved shard %s", oldHolder[k], k)
			}
			return nil
		})
	}
	c.WaitFor(60*time.Second, func() error {
		for _, k := range keys {
			res, err := c.Router.Call(ctx, nodetest.ShardID(k), "alarms:fired", map[string]any{"k": k}, api.ReadOptions{})
			if err != nil {
				return err
			}
			if len(res.Rows) != perShard {
				return fmt.Errorf("shard %s: fired %v", k, res.Rows)
			}
			for _, r := range res.Rows {
				if r[1] != int64(1) {
					return fmt.Errorf("shard %s: alarm %v fired %v times", k, r[0], r[1])
				}
			}
		}
		return nil
	})
	// The moved shards' alarms fired on n3: its index saw them and the old
	// holders no longer hold the files (checked above); n3 now holds the
	// rows.
	for _, k := range moved {
		if _, ok := n3.AlarmIndex()[nodetest.ShardID(k)]; ok {
			t.Errorf("n3 still indexes %s after its alarms fired", k)
		}
	}
	// Every queued message is delivered once, by the shard's holder now.
	delivered := map[string]int{}
	c.WaitFor(30*time.Second, func() error {
		err := receiveAndAck(ctx, c, func(i int, m api.QueueMessage) {
			k := m.ShardID[len("k="):]
			if holder := c.Node(i).ID; slices.Contains(moved, k) && holder != "n3" {
				t.Errorf("message %s of moved shard %s delivered by %s", m.ID, k, holder)
			}
			delivered[m.Body]++
		}, nil)
		if err != nil {
			return err
		}
		if len(delivered) != len(keys)*perShard {
			return fmt.Errorf("%d of %d messages delivered", len(delivered), len(keys)*perShard)
		}
		return nil
	})
	for body, n := range delivered {
		if n != 1 {
			t.Errorf("message %s delivered %d times", body, n)
		}
	}
	// A consumer function runs on the shard its message names.
	for _, k := range keys {
		if _, err := c.Router.Call(ctx, nodetest.ShardID(k), "relay:add", map[string]any{"k": k, "to": k + "-r", "tag": "relayed"}, api.ReadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitFor(30*time.Second, func() error {
		for _, k := range keys {
			res, err := c.Router.Call(ctx, nodetest.ShardID(k+"-r"), "alarms:fired", map[string]any{"k": k + "-r"}, api.ReadOptions{})
			if err != nil {
				return err
			}
			if len(res.Rows) != 1 || res.Rows[0][0] != "relayed" || res.Rows[0][1] != int64(1) {
				var dead []api.QueueMessage
				for _, i := range c.Running() {
					d, _ := c.Node(i).Proc().Host.DeadMessages(ctx, "relay", 10)
					dead = append(dead, d...)
				}
				return fmt.Errorf("shard %s-r: %v (dead letters: %+v)", k, res.Rows, dead)
			}
		}
		return nil
	})
	if err := c.CheckOneCopy(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAlarmsAndQueuesAtHandoffCrashPoints: a shard with pending alarms and
// queued messages is moved by a join, and a node is killed at each of the
// handoff's crash points (sender after the receiver's ack, sender after
// the commit, receiver after storing its copy) and restarted. Every alarm
// fires once and every message is delivered once, by the shard's holder.
func TestAlarmsAndQueuesAtHandoffCrashPoints(t *testing.T) {
	app, err := schema.Parse("alarms.yaml", []byte(alarmAppSchema))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		point    string
		receiver bool
	}{
		{handoff.FaultSendAfterAck, false},
		{handoff.FaultSendAfterCommit, false},
		{handoff.FaultRecvAfterStore, true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			gate := nodetest.NewCrashGate(tc.point)
			c := nodetest.Start(t, 3, nodetest.Config{App: app, Fault: gate.Fault})
			ctx := ctxT(t, 120*time.Second)
			leader := c.WaitForLeader(20 * time.Second)
			fi := (leader + 1) % 3 // a follower: killing it keeps the global tier's leader
			from := c.Node(fi).ID
			k := nodetest.KeyMovedBy([]string{"n0", "n1", "n2"}, []string{"n0", "n1", "n2", "n3"}, from, "n3")
			id := nodetest.ShardID(k)
			const n = 3
			due := time.Now().Add(10 * time.Second)
			for j := range n {
				at := due.Add(time.Duration(j) * 100 * time.Millisecond).UnixMilli()
				if _, err := c.Router.Call(ctx, id, "alarms:add", map[string]any{"k": k, "tag": fmt.Sprint("a", j), "at": at}, api.ReadOptions{}); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Router.Call(ctx, id, "jobs:add", map[string]any{"k": k, "tag": fmt.Sprint("m", j)}, api.ReadOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			victim := from
			if tc.receiver {
				victim = "n3"
			}
			gate.Arm(id, victim)
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
			// Delivery is at least once: a message whose ack failed (the
			// shard froze for a handoff under it) comes again once its
			// lease runs out. One delivered again after its ack succeeded
			// is the failure.
			delivered := map[string]int{}
			acked := map[string]bool{}
			c.WaitFor(60*time.Second, func() error {
				err := receiveAndAck(ctx, c, func(_ int, m api.QueueMessage) {
					if acked[m.Body] {
						t.Errorf("message %s delivered again after its ack", m.Body)
					}
					delivered[m.Body]++
				}, func(m api.QueueMessage) { acked[m.Body] = true })
				if err != nil {
					return err
				}
				if len(acked) != n {
					return fmt.Errorf("%d of %d messages delivered and acknowledged", len(acked), n)
				}
				res, err := c.Router.Call(ctx, id, "alarms:fired", map[string]any{"k": k}, api.ReadOptions{})
				if err != nil {
					return err
				}
				if len(res.Rows) != n {
					return fmt.Errorf("fired %v", res.Rows)
				}
				return c.CheckOneCopy(ctx)
			})
			for body, times := range delivered {
				if times != 1 {
					t.Logf("message %s delivered %d times (an ack failed before it was delivered again)", body, times)
				}
			}
			res, err := c.Router.Call(ctx, id, "alarms:fired", map[string]any{"k": k}, api.ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res.Rows {
				if r[1] != int64(1) {
					t.Errorf("alarm %v fired %v times", r[0], r[1])
				}
			}
		})
	}
}

// receiveAndAck receives the "jobs" messages each running node delivers
// now and acknowledges them one by one: got sees each message (and the
// index of the node that delivered it) before its ack, acked (if not nil)
// each one whose ack succeeded. It stops at the first error.
func receiveAndAck(ctx context.Context, c *nodetest.Cluster, got func(i int, m api.QueueMessage), acked func(m api.QueueMessage)) error {
	for _, i := range c.Running() {
		h := c.Node(i).Proc().Host
		msgs, err := h.ReceiveMessages(ctx, "jobs", 100, 0, 0)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			got(i, m)
			if _, err := h.SettleMessages(ctx, m.ShardID, api.Ack, []string{m.ID}, 0); err != nil {
				return err
			}
			if acked != nil {
				acked(m)
			}
		}
	}
	return nil
}
