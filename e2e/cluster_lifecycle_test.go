package e2e_test

// Real-process regression tests for issue 10's availability problems:
// a shard a crash left with an unclean write-ahead log must still move
// (problem 1), a forward pointer must not outlive the registry (problem
// 4), and status must tell the truth (problem 5).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/placement"
)

// ringOwner is the shard's owner on a ring of the given node IDs, all of
// weight 1 (what the nodes compute).
func ringOwner(t *testing.T, shardID string, ids ...string) string {
	t.Helper()
	ms := make([]placement.Member, len(ids))
	for i, id := range ids {
		ms[i] = placement.Member{ID: placement.NodeID(id), Weight: 1}
	}
	r, err := placement.NewRing(ms)
	if err != nil {
		t.Fatal(err)
	}
	return string(r.Owner(shardID))
}

// waitPlaced waits until every shard of keys is held by its owner on the
// ring of ids (the registry's holder, as every running node reads it).
func (rc *ringCluster) waitPlaced(t *testing.T, keys []string, ids ...string) {
	t.Helper()
	err := lunoratest.Poll(clusterTimeout, func() error {
		holders := rc.holders(t)
		for _, k := range keys {
			id := "k=" + k
			if want := ringOwner(t, id, ids...); holders[id] != want {
				return fmt.Errorf("shard %s is held by %q, its owner is %s", id, holders[id], want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fillKeys writes items 1..rows (value v) to the shards of keys through
// the gateway with workers callers and returns what each shard then holds.
func (rc *ringCluster) fillKeys(t *testing.T, ctx context.Context, keys []string, rows, workers int, v string) map[string][]int64 {
	t.Helper()
	want := map[string][]int64{}
	for _, k := range keys {
		for id := 1; id <= rows; id++ {
			want[k] = append(want[k], int64(id))
		}
	}
	if err := parallel(len(keys), workers, func(i int) error {
		for id := 1; id <= rows; id++ {
			if _, _, err := rc.put(ctx, keys[i], id, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return want
}

// TestClusterCrashedShardsMoveAfterRestart (issue 10, problem 1): a node
// is SIGKILLed right after writes, so its shards' write-ahead logs are not
// checkpointed, and restarted; nothing opens those shards before node 4
// joins and takes its share of them. Every share must move with every
// acknowledged row; then the node's graceful leave hands off the rest.
func TestClusterCrashedShardsMoveAfterRestart(t *testing.T) {
	rc := startRingCluster(t, 3, "-leave-timeout", "30s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*clusterTimeout)
	defer cancel()
	// Keys chosen so that n2 holds 24 shards, 8 of which node 4 will own,
	// and the other nodes 16.
	var keys, onN2 []string
	toN4, others := 0, 0
	for i := 0; len(onN2) < 24 || others < 16; i++ {
		k := fmt.Sprintf("w%04d", i)
		switch {
		case ringOwner(t, "k="+k, "n1", "n2", "n3") != "n2":
			if others == 16 {
				continue
			}
			others++
		case ringOwner(t, "k="+k, "n1", "n2", "n3", "n4") == "n4":
			if toN4 == 8 {
				continue
			}
			toN4++
			onN2 = append(onN2, k)
		default:
			if len(onN2)-toN4 == 16 {
				continue
			}
			onN2 = append(onN2, k)
		}
		keys = append(keys, k)
	}
	want := rc.fillKeys(t, ctx, keys, 3, 8, "v")
	rc.waitRing(t, 3)

	n2 := rc.Node("n2")
	unclean := 0
	n2.Kill()
	for _, k := range onN2 {
		if st, err := os.Stat(shardFile(n2.DataDir(), "k="+k) + "-wal"); err == nil && st.Size() > 0 {
			unclean++
		}
	}
	t.Logf("n2 killed holding %d shards, %d with a non-empty WAL", len(onN2), unclean)
	if unclean == 0 {
		t.Fatal("no shard on n2 was left with a WAL to recover; the test proves nothing")
	}
	n2.Restart()
	rc.waitRing(t, 3)

	// Node 4 joins; n2 must hand it the crashed shards it now owns.
	rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	rc.waitRing(t, 4)
	rc.waitPlaced(t, keys, "n1", "n2", "n3", "n4")
	t.Logf("%d of n2's crashed shards moved to n4", toN4)
	rc.checkAll(t, want)

	// A graceful leave of the restarted node hands everything off.
	start := time.Now()
	n2.Signal(syscall.SIGTERM)
	if _, ok := n2.Wait(clusterTimeout); !ok {
		t.Fatal("n2 did not exit after SIGTERM")
	}
	if strings.Contains(n2.Stderr(), "not handed off") || !strings.Contains(n2.Stderr(), "every shard handed off") {
		t.Fatalf("n2's leave did not hand off every shard:\n%s", n2.Stderr())
	}
	t.Logf("n2 left in %v", time.Since(start).Round(time.Millisecond))
	rc.waitRing(t, 3)
	rc.waitPlaced(t, keys, "n1", "n3", "n4")
	rc.checkAll(t, want)
}

// TestClusterStalePointerNeverOutlivesTheRegistry (issue 10, problem 4):
// shards move X → n4 → n5 (X keeps a forward pointer to n4), n4 leaves,
// then n5 leaves and hands them back to X — slowly (-move-rate), so that
// requests reach X while the streams are under way. X must never answer
// that the shard is held by n4 (which is gone): the registry says n5, so
// X asks n5 (SHARD_MOVING: retry) or serves. Meanwhile n5's status shows
// its streams with their progress.
func TestClusterStalePointerNeverOutlivesTheRegistry(t *testing.T) {
	rc := startRingCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*clusterTimeout)
	defer cancel()
	// Keys whose owner is n4 once n4 joins and n5 once n5 joins.
	var keys []string
	home := map[string]string{} // key → its owner on n1..n3 (X)
	for i := 0; len(keys) < 6; i++ {
		k := fmt.Sprintf("p%04d", i)
		if ringOwner(t, "k="+k, "n1", "n2", "n3", "n4") == "n4" && ringOwner(t, "k="+k, "n1", "n2", "n3", "n4", "n5") == "n5" {
			keys = append(keys, k)
			home[k] = ringOwner(t, "k="+k, "n1", "n2", "n3")
		}
	}
	want := rc.fillKeys(t, ctx, keys, 20, 6, strings.Repeat("v", 2000))
	rc.waitRing(t, 3)

	seed := rc.Nodes[0].GRPCAddr()
	n4 := rc.AddNode("n4", seed)
	rc.waitRing(t, 4)
	rc.waitPlaced(t, keys, "n1", "n2", "n3", "n4")
	// n5 streams slowly: its handoffs back to X take seconds.
	n5 := rc.AddNodeArgs("n5", []string{"-move-rate", "65536"}, seed)
	rc.waitRing(t, 5)
	rc.waitPlaced(t, keys, "n1", "n2", "n3", "n4", "n5")
	t.Logf("shards %v moved X → n4 → n5", keys)

	n4.Signal(syscall.SIGTERM)
	if _, ok := n4.Wait(clusterTimeout); !ok {
		t.Fatal("n4 did not exit after SIGTERM")
	}
	rc.waitRing(t, 4)

	// n5's status, watched while it leaves: its streams and their bytes.
	progress := make(chan string, 1)
	watchDone := make(chan struct{})
	go func() {
		defer close(progress)
		for {
			select {
			case <-watchDone:
				return
			case <-n5.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
			st, err := n5.Client().Status(ctx)
			if err != nil || st.Cluster == nil {
				continue
			}
			for _, m := range st.Cluster.Moves {
				if m.From == "n5" && m.Bytes > 0 && m.Bytes < m.Size {
					progress <- fmt.Sprintf("%s → %s, %d of %d bytes after %v", m.ShardID, m.To, m.Bytes, m.Size, m.Elapsed)
					return
				}
			}
		}
	}()
	n5.Signal(syscall.SIGTERM)
	left := time.Now()
	var stale []string
	served := map[string]bool{}
	err := lunoratest.Poll(clusterTimeout, func() error {
		for _, k := range keys {
			if served[k] {
				continue
			}
			x := rc.Node(home[k])
			_, err := x.Client().Call(ctx, "k="+k, "items:list", map[string]any{"k": k}, api.ReadOptions{})
			if err != nil && strings.Contains(err.Error(), "n4") {
				stale = append(stale, fmt.Sprintf("%s on %s: %v", k, x.ID, err))
			}
			resp, gerr := rc.http.Call(ctx, "items:list", map[string]any{"k": k})
			if gerr == nil && resp.Status != 200 && strings.Contains(resp.String(), "n4") {
				stale = append(stale, fmt.Sprintf("%s through the gateway: %s", k, resp))
			}
			if err == nil {
				served[k] = true
			}
		}
		if len(served) < len(keys) {
			return fmt.Errorf("%d of %d shards served by their home node", len(served), len(keys))
		}
		return nil
	})
	if len(stale) > 0 {
		t.Fatalf("%d answers named n4, which left before the shards moved on from it; first: %s", len(stale), stale[0])
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("every shard served by its home node %v after n5's SIGTERM", time.Since(left).Round(time.Millisecond))
	if _, ok := n5.Wait(clusterTimeout); !ok {
		t.Fatal("n5 did not exit after SIGTERM")
	}
	close(watchDone)
	if p, ok := <-progress; ok {
		t.Logf("n5's status during its leave: %s", p)
	} else {
		t.Error("n5's status never showed a handoff stream in progress during its slow leave")
	}
	rc.waitRing(t, 3)
	rc.waitPlaced(t, keys, "n1", "n2", "n3")
	rc.checkAll(t, want)
}

// nodeStatus runs `lunora-node status -node addr args...` and returns its
// output and, by node ID, the fields of its table rows (NODE ADDRESS ALIVE
// RAFT IN-RING WEIGHT SHARDS).
func nodeStatus(t *testing.T, b *lunoratest.Binaries, addr string, args ...string) (string, map[string][]string) {
	t.Helper()
	res := lunoratest.Run(t, lunoratest.Spec{Name: "lunora-node status", Path: b.Node, Args: append([]string{"status", "-node", addr}, args...)}, 30*time.Second)
	if res.ExitCode != 0 {
		t.Fatalf("lunora-node status exited %d:\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	rows := map[string][]string{}
	header := false
	for _, line := range strings.Split(res.Stdout, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "NODE":
			header = true
		case header && len(f) >= 7 && strings.HasPrefix(f[0], "n"):
			rows[f[0]] = f
		case header:
			header = false
		}
	}
	return res.Stdout, rows
}

// TestClusterStatusTellsTheTruth (issue 10, problem 5): status names each
// node's liveness, Raft role and ring membership; a SIGKILLed node is not
// shown alive (also before gossip notices), a node that left is out of
// the ring holding nothing, and -shard says who owns and holds a shard.
// The gateway's /v1/status says the same.
func TestClusterStatusTellsTheTruth(t *testing.T) {
	rc := startRingCluster(t, 3)
	b := lunoratest.Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	keys := []string{"s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"}
	want := rc.fillKeys(t, ctx, keys, 1, 4, "v")
	rc.waitRing(t, 3)
	n1 := rc.Node("n1")

	out, rows := nodeStatus(t, b, n1.GRPCAddr(), "-wait-ring", "3")
	leaders := 0
	for _, id := range []string{"n1", "n2", "n3"} {
		r := rows[id]
		if r == nil || r[2] != "reachable" || r[4] != "yes" || (r[3] != "leader" && r[3] != "voter") {
			t.Fatalf("node %s: row %v, want reachable, a voter, in the ring:\n%s", id, r, out)
		}
		if r[3] == "leader" {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders:\n%s", leaders, out)
	}

	// -shard: owner and holder, as the registry has them.
	holders := rc.holders(t)
	k := keys[0]
	out, _ = nodeStatus(t, b, n1.GRPCAddr(), "-shard", "k="+k)
	line := fmt.Sprintf("shard k=%s: owner %s (ring epoch", k, ringOwner(t, "k="+k, "n1", "n2", "n3"))
	if !strings.Contains(out, line) || !strings.Contains(out, "holder "+holders["k="+k]) {
		t.Fatalf("status -shard k=%s, want %q and holder %s:\n%s", k, line, holders["k="+k], out)
	}

	// A SIGKILLed node is not alive, at once.
	n3 := rc.Node("n3")
	n3.Kill()
	out, rows = nodeStatus(t, b, n1.GRPCAddr())
	if r := rows["n3"]; r == nil || r[2] == "alive" || r[2] == "reachable" {
		t.Fatalf("n3 SIGKILLed: row %v:\n%s", r, out)
	}
	var onN3 string
	for _, k := range keys {
		if holders["k="+k] == "n3" {
			onN3 = k
		}
	}
	if onN3 != "" {
		out, _ = nodeStatus(t, b, n1.GRPCAddr(), "-shard", "k="+onN3)
		if !strings.Contains(out, "holder n3") || !strings.Contains(out, "unavailable until it is back") {
			t.Fatalf("status -shard of a shard on the killed n3:\n%s", out)
		}
	}
	gst := gatewayStatus(t, rc)
	if a := gst.member("n3").Alive; a == "alive" || a == "reachable" || a == "" {
		t.Fatalf("gateway /v1/status: n3 SIGKILLed is %q", a)
	}
	n3.Restart()
	rc.waitRing(t, 3)

	// A node that left: out of the ring, holding nothing, not alive.
	n2 := rc.Node("n2")
	n2.Signal(syscall.SIGTERM)
	if _, ok := n2.Wait(clusterTimeout); !ok {
		t.Fatal("n2 did not exit after SIGTERM")
	}
	rc.waitRing(t, 2)
	out, rows = nodeStatus(t, b, n1.GRPCAddr())
	if r := rows["n2"]; r == nil || r[2] == "alive" || r[2] == "reachable" || r[4] != "no" || r[len(r)-1] != "0" {
		t.Fatalf("n2 left: row %v:\n%s", r, out)
	}
	gst = gatewayStatus(t, rc)
	if m := gst.member("n2"); m.InRing || m.Alive == "alive" || m.Alive == "reachable" {
		t.Fatalf("gateway /v1/status: n2 left: %+v", m)
	}
	if m := gst.member("n1"); !m.InRing || m.Alive != "reachable" || m.Raft == "" {
		t.Fatalf("gateway /v1/status: n1: %+v", m)
	}
	rc.checkAll(t, want)
}

type gatewayStatusJSON struct {
	Cluster struct {
		Members []gatewayMemberJSON `json:"members"`
	} `json:"cluster"`
}

type gatewayMemberJSON struct {
	ID     string `json:"id"`
	Alive  string `json:"alive"`
	Raft   string `json:"raft"`
	InRing bool   `json:"in_ring"`
	Shards int64  `json:"shards"`
}

func (s *gatewayStatusJSON) member(id string) gatewayMemberJSON {
	for _, m := range s.Cluster.Members {
		if m.ID == id {
			return m
		}
	}
	return gatewayMemberJSON{}
}

func gatewayStatus(t *testing.T, rc *ringCluster) *gatewayStatusJSON {
	t.Helper()
	resp, err := http.Get("http://" + rc.gw.HTTPAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st gatewayStatusJSON
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/status: %d %v", resp.StatusCode, err)
	}
	return &st
}

// TestClusterGatewayReconnectsAfterRestart (issue 10, problem 5): a node
// SIGKILLed and restarted several seconds later serves its shards through
// the gateway within a second of its READY line (gRPC's default reconnect
// backoff, grown while the node was away, kept answering "connection
// refused" for seconds), and an error while it is down names it. It runs
// in plaintext, with mutual TLS and with a cluster secret (forEachTransport).
func TestClusterGatewayReconnectsAfterRestart(t *testing.T) {
	forEachTransport(t, testClusterGatewayReconnectsAfterRestart)
}

func testClusterGatewayReconnectsAfterRestart(t *testing.T, tr transport) {
	rc := startRingClusterWith(t, tr, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	var k string
	for i := 0; k == ""; i++ {
		if c := fmt.Sprintf("g%03d", i); ringOwner(t, "k="+c, "n1", "n2", "n3") == "n3" {
			k = c
		}
	}
	rc.fillKeys(t, ctx, []string{k}, 1, 1, "v")
	rc.waitRing(t, 3)
	n3 := rc.Node("n3")
	n3.Kill()
	// Away for 8 s, with reads failing against it meanwhile.
	away := time.Now()
	for time.Since(away) < 8*time.Second {
		resp, err := rc.http.Call(ctx, "items:list", map[string]any{"k": k})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status == 200 {
			t.Fatal("a shard of the killed n3 was served")
		}
		if !strings.Contains(resp.String(), "n3") {
			t.Fatalf("the error for a shard of the killed n3 does not name it: %s", resp)
		}
	}
	n3.Restart() // returns at its LUNORA_READY
	ready := time.Now()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 200*time.Millisecond)
		resp, err := rc.http.Call(cctx, "items:list", map[string]any{"k": k})
		ccancel()
		if err == nil && resp.Status == 200 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("n3's shard never served again: %v %v", resp, err)
		}
	}
	took := time.Since(ready)
	t.Logf("n3's shard served through the gateway %v after n3's READY", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("n3's shard served %v after its READY, want within 1s", took)
	}
}
