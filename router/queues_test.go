package router_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/placement"
	"github.com/lunora/lunora/router"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// queueNode is a node API over one node of a cluster of them (Ring
// answers them all) whose shards hold queue messages.
type queueNode struct {
	fakeNode
	ring *api.Ring

	mu       sync.Mutex
	ready    []api.QueueMessage
	dead     []api.QueueMessage
	due      []api.AlarmDue
	asked    []int // the max of each receive
	settles  []string
	alarmsOf []string
	fail     error // answers every queue method when set
}

func (q *queueNode) Ring(context.Context, uint64) (*api.Ring, error) { return q.ring, nil }

func (q *queueNode) ReceiveMessages(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]api.QueueMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return nil, q.fail
	}
	q.asked = append(q.asked, max)
	n := min(max, len(q.ready))
	out := q.ready[:n:n]
	q.ready = q.ready[n:]
	return out, nil
}

func (q *queueNode) SettleMessages(ctx context.Context, shardID string, how api.Settle, ids []string, delay time.Duration) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.settles = append(q.settles, fmt.Sprintf("%s %s %v %s", how, shardID, ids, delay))
	return len(ids), nil
}

func (q *queueNode) DeadMessages(ctx context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return nil, q.fail
	}
	return q.dead[:min(limit, len(q.dead))], nil
}

func (q *queueNode) Redrive(ctx context.Context, queue string, ids []string) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return 0, q.fail
	}
	return len(q.dead), nil
}

func (q *queueNode) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.alarmsOf = append(q.alarmsOf, shardID)
	return []api.Alarm{{ID: "alm_" + q.id, ShardID: shardID}}, nil
}

func (q *queueNode) AlarmsDue(ctx context.Context, limit int) ([]api.AlarmDue, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return nil, q.fail
	}
	return q.due, nil
}

func (q *queueNode) ReceiveHandoff(context.Context, api.HandoffHeader, io.Reader, []byte) error {
	return errUnimplemented
}

// startQueueCluster serves n queue nodes sharing one ring and returns
// them with a router that knows the first as its seed.
func startQueueCluster(t *testing.T, n int) ([]*queueNode, *router.Router) {
	t.Helper()
	ring := &api.Ring{Epoch: 1}
	nodes := make([]*queueNode, n)
	lns := make([]net.Listener, n)
	for i := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		nodes[i] = &queueNode{fakeNode: fakeNode{id: fmt.Sprintf("n%d", i+1), addr: ln.Addr().String()}, ring: ring}
		rn := api.RingNode{ID: nodes[i].id, Weight: 1, GRPCAddr: nodes[i].addr, State: "up"}
		ring.Nodes = append(ring.Nodes, rn)
		ring.Members = append(ring.Members, rn)
	}
	for i, q := range nodes {
		s := grpc.NewServer(rpc.ServerOptions()...)
		rpc.RegisterNodeServer(s, rpc.NewNodeServer(q, nil))
		go s.Serve(lns[i])
		t.Cleanup(s.Stop)
	}
	return nodes, newRouter(t, nodes[0].addr)
}

func msgs(node string, n int, died time.Time) []api.QueueMessage {
	out := make([]api.QueueMessage, n)
	for i := range out {
		out[i] = api.QueueMessage{ID: fmt.Sprintf("msg_%s_%d", node, i), ShardID: "k=" + node, Died: died.Add(time.Duration(i) * time.Second)}
	}
	return out
}

// TestRouterReceiveFanOut: a receive asks every node for a share of max
// and the nodes that filled theirs for what is still missing, never more
// than max in all; a failing node is left out unless every node fails.
func TestRouterReceiveFanOut(t *testing.T) {
	nodes, r := startQueueCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, q := range nodes {
		q.ready = msgs(q.id, 5, time.Time{})
	}
	got, err := r.ReceiveMessages(ctx, "jobs", 7, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 {
		t.Fatalf("received %d messages, want 7", len(got))
	}
	asked := 0
	for _, q := range nodes {
		for _, a := range q.asked {
			asked += a
		}
	}
	if asked != 7 {
		t.Fatalf("the nodes were asked for %d messages in all, want 7", asked)
	}

	// One node has them all: the others' shares go to it next round.
	for i, q := range nodes {
		q.asked, q.ready = nil, nil
		if i == 1 {
			q.ready = msgs(q.id, 20, time.Time{})
		}
	}
	got, err = r.ReceiveMessages(ctx, "jobs", 9, 0, 0)
	if err != nil || len(got) != 9 {
		t.Fatalf("received %d messages (%v) from the one node holding them, want 9", len(got), err)
	}
	for _, m := range got {
		if m.ShardID != "k=n2" {
			t.Fatalf("message %+v is not n2's", m)
		}
	}

	// A failing node is left out; all failing fails the receive.
	nodes[0].fail = api.New(codes.Unavailable, "node n1 is restarting")
	if got, err = r.ReceiveMessages(ctx, "jobs", 3, 0, 0); err != nil || len(got) != 3 {
		t.Fatalf("with n1 failing: %d messages, %v; want 3 from n2", len(got), err)
	}
	for _, q := range nodes {
		q.fail = api.New(codes.NotFound, `unknown queue "nope"`)
	}
	if _, err := r.ReceiveMessages(ctx, "nope", 3, 0, 0); api.CodeOf(err) != codes.NotFound {
		t.Fatalf("every node answering NOT_FOUND: %v", err)
	}
}

// TestRouterSettleRoutesToOwner: a shard's settles and alarm listing go
// to the node that owns it on the ring.
func TestRouterSettleRoutesToOwner(t *testing.T) {
	nodes, r := startQueueCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ring, err := placement.NewRing([]placement.Member{{ID: "n1", Weight: 1}, {ID: "n2", Weight: 1}, {ID: "n3", Weight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]bool{}
	for i := 0; i < 40 && len(owners) < 3; i++ {
		shard := fmt.Sprintf("k=s%d", i)
		owner := string(ring.Owner(shard))
		owners[owner] = true
		n, err := r.SettleMessages(ctx, shard, api.Nack, []string{"msg_1", "msg_2"}, 2*time.Second)
		if err != nil || n != 2 {
			t.Fatalf("settle on %s: %d, %v", shard, n, err)
		}
		if _, err := r.Alarms(ctx, shard, 10); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("nack %s [msg_1 msg_2] 2s", shard)
		for _, q := range nodes {
			q.mu.Lock()
			gotSettle := slices.Contains(q.settles, want)
			gotAlarms := slices.Contains(q.alarmsOf, shard)
			q.mu.Unlock()
			if gotSettle != (q.id == owner) || gotAlarms != (q.id == owner) {
				t.Fatalf("shard %s (owner %s): node %s got the settle %v, the alarm listing %v", shard, owner, q.id, gotSettle, gotAlarms)
			}
		}
	}
	if len(owners) != 3 {
		t.Fatalf("the shards tried are owned by %v only", owners)
	}
}

// TestRouterQueueAdminMerge: dead letters and the alarm index merge
// every node's by time, up to the limit; redrive sums; a node that fails
// fails the listing, named.
func TestRouterQueueAdminMerge(t *testing.T) {
	nodes, r := startQueueCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := time.Unix(1700000000, 0)
	for i, q := range nodes {
		q.dead = msgs(q.id, 3, base.Add(time.Duration(i)*500*time.Millisecond))
		q.due = []api.AlarmDue{{ShardID: "k=" + q.id, Node: q.id, Due: base.Add(time.Duration(3-i) * time.Minute)}}
	}
	dead, err := r.DeadMessages(ctx, "jobs", 4)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range dead {
		order = append(order, m.ID)
	}
	// n1 died at +0s, +1s, +2s; n2 at +0.5s, …; n3 at +1s, …
	if want := []string{"msg_n1_0", "msg_n2_0", "msg_n1_1", "msg_n3_0"}; !slices.Equal(order, want) {
		t.Fatalf("dead letters %v, want %v", order, want)
	}
	if n, err := r.Redrive(ctx, "jobs", nil); err != nil || n != 9 {
		t.Fatalf("redrive: %d, %v; want 9", n, err)
	}
	due, err := r.AlarmsDue(ctx, 10)
	if err != nil || len(due) != 3 || due[0].Node != "n3" || due[2].Node != "n1" {
		t.Fatalf("alarm index %+v, %v", due, err)
	}

	nodes[2].fail = api.New(codes.Unavailable, "n3 is down")
	if _, err := r.DeadMessages(ctx, "jobs", 4); api.CodeOf(err) != codes.Unavailable || !containsAll(err.Error(), "n3") {
		t.Fatalf("dead letters with n3 failing: %v", err)
	}
	if n, err := r.Redrive(ctx, "jobs", nil); api.CodeOf(err) != codes.Unavailable || n != 6 || !containsAll(err.Error(), "n3", "redrove 6") {
		t.Fatalf("redrive with n3 failing: %d, %v", n, err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
