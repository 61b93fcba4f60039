package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/placement"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// ringGlobal is a global tier whose ring is n1, n2 and n3 at epoch 4.
// Methods these tests do not reach are left to the embedded nil interface.
type ringGlobal struct{ Global }

func (ringGlobal) Ring(context.Context) (uint64, []raftglobal.RingNode, error) {
	return 4, []raftglobal.RingNode{{ID: "n1", Weight: 1}, {ID: "n2", Weight: 1}, {ID: "n3", Weight: 1}}, nil
}

func (ringGlobal) Nodes(context.Context) ([]raftglobal.NodeInfo, error) {
	return []raftglobal.NodeInfo{{ID: "n1", GRPCAddr: "n1:1", State: "up"}, {ID: "n2", GRPCAddr: "n2:1", State: "up"}, {ID: "n3", GRPCAddr: "n3:1", State: "up"}}, nil
}

// queueShards records the settles and alarm listings that reach the
// shard runtime.
type queueShards struct {
	noShards
	got []string
}

func (q *queueShards) SettleMessages(_ context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	q.got = append(q.got, fmt.Sprintf("%s %s %v %s", how, shardID, ids, delay))
	return len(ids), nil
}

func (q *queueShards) Alarms(_ context.Context, shardID string, limit int) ([]api.Alarm, error) {
	q.got = append(q.got, fmt.Sprintf("alarms %s %d", shardID, limit))
	return nil, nil
}

// TestQueueCallsServedByTheOwner: a settle or an alarm listing for a
// shard another node owns is refused NOT_OWNER naming it (the router
// sends it there), one for a shard this node owns reaches the shard
// runtime, and the global tier has neither.
func TestQueueCallsServedByTheOwner(t *testing.T) {
	app, err := schema.Parse("lunora.yaml", []byte(forwardTestSchema))
	if err != nil {
		t.Fatal(err)
	}
	shards := &queueShards{}
	n, err := New(Config{App: app, Shards: shards, Global: ringGlobal{}, NodeID: "n1", GRPCAddr: "n1:1",
		Dial: func(string) (Peer, error) { return nil, api.New(codes.Unavailable, "no peers in this test") }})
	if err != nil {
		t.Fatal(err)
	}
	ring, err := placement.NewRing([]placement.Member{{ID: "n1", Weight: 1}, {ID: "n2", Weight: 1}, {ID: "n3", Weight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mine, theirs string
	for i := 0; mine == "" || theirs == ""; i++ {
		id := fmt.Sprintf("k=s%d", i)
		if ring.Owner(id) == "n1" {
			mine = id
		} else {
			theirs = id
		}
	}

	if k, err := n.SettleMessages(ctx, mine, api.Ack, []string{"msg_1"}, 0); err != nil || k != 1 {
		t.Fatalf("settle on its own shard: %d, %v", k, err)
	}
	if _, err := n.Alarms(ctx, mine, 7); err != nil {
		t.Fatal(err)
	}
	owner := string(ring.Owner(theirs))
	if _, err := n.SettleMessages(ctx, theirs, api.Nack, []string{"msg_2"}, time.Second); !isNotOwner(err, owner) {
		t.Fatalf("settle on %s's shard: %v, want NOT_OWNER naming it", owner, err)
	}
	if _, err := n.Alarms(ctx, theirs, 7); !isNotOwner(err, owner) {
		t.Fatalf("alarms of %s's shard: %v, want NOT_OWNER naming it", owner, err)
	}
	if _, err := n.SettleMessages(ctx, schema.GlobalGroup, api.Ack, []string{"msg_1"}, 0); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("settle on the global tier: %v", err)
	}
	want := []string{fmt.Sprintf("ack %s [msg_1] 0s", mine), fmt.Sprintf("alarms %s 7", mine)}
	if fmt.Sprint(shards.got) != fmt.Sprint(want) {
		t.Fatalf("the shard runtime got %q, want %q", shards.got, want)
	}
}

func isNotOwner(err error, owner string) bool {
	reason, meta := api.ReasonOf(err)
	return reason == api.ReasonNotOwner && meta["owner"] == owner
}
