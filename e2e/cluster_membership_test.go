package e2e_test

// Real-process tests of Raft membership following the ring (issue 10,
// problems 2 and 3): a graceful leave takes the node out of the Raft group
// too, a non-voter is promoted so the voters stay at their target, the
// README's walkthrough never loses the global tier's quorum, and a leave
// racing the node's own start-up join is never undone by it. Helpers come
// from cluster_test.go and cluster_more_test.go.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/placement"
	"google.golang.org/grpc/codes"
)

// raftRoles is what the running nodes' metrics say about the Raft
// configuration: the leader's count of voters and non-voters, and which
// running nodes see themselves as voters.
type raftRoles struct {
	leader              string
	voters, nonVoters   int
	selfVoters, members []string // running nodes that count themselves voters / all running nodes asked
}

func (rc *ringCluster) raftRoles(ctx context.Context) (raftRoles, error) {
	var r raftRoles
	leader, err := rc.Leader(ctx)
	if err != nil {
		return r, err
	}
	m, err := leader.Metrics(ctx)
	if err != nil {
		return r, err
	}
	r.leader = leader.ID
	r.voters = int(m[`lunora_global_raft_servers{suffrage="voter"}`])
	r.nonVoters = int(m[`lunora_global_raft_servers{suffrage="nonvoter"}`])
	for _, n := range rc.Running() {
		nm, err := n.Metrics(ctx)
		if err != nil {
			return r, err
		}
		r.members = append(r.members, n.ID)
		if nm["lunora_global_raft_voter"] == 1 {
			r.selfVoters = append(r.selfVoters, n.ID)
		}
	}
	slices.Sort(r.selfVoters)
	return r, nil
}

// waitRaft waits until the leader's configuration has voters voters and
// nonVoters non-voters and the running nodes that see themselves as
// voters are exactly selfVoters.
func (rc *ringCluster) waitRaft(t *testing.T, voters, nonVoters int, selfVoters ...string) {
	t.Helper()
	slices.Sort(selfVoters)
	var last raftRoles
	err := lunoratest.Poll(clusterTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := rc.raftRoles(ctx)
		if err != nil {
			return err
		}
		last = r
		if r.voters != voters || r.nonVoters != nonVoters || !slices.Equal(r.selfVoters, selfVoters) {
			return fmt.Errorf("leader %s: %d voters, %d non-voters; running voters %v; want %d, %d, %v",
				r.leader, r.voters, r.nonVoters, r.selfVoters, voters, nonVoters, selfVoters)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Raft configuration: %v", err)
	}
	t.Logf("Raft: leader %s, %d voters (running: %v), %d non-voters", last.leader, last.voters, last.selfVoters, last.nonVoters)
}

// keyOwnedBy returns a fresh shard key that ring members (ID → weight)
// place on one of want.
func keyOwnedBy(t *testing.T, prefix string, ring map[string]int, want ...string) string {
	t.Helper()
	var ms []placement.Member
	for id, w := range ring {
		ms = append(ms, placement.Member{ID: placement.NodeID(id), Weight: w})
	}
	r, err := placement.NewRing(ms)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		k := fmt.Sprintf("%s%d", prefix, i)
		if slices.Contains(want, string(r.Owner("k="+k))) {
			return k
		}
	}
	t.Fatalf("no key of %d places on %v", 1000, want)
	return ""
}

func ringWeights(t *testing.T, rc *ringCluster) (uint64, map[string]int) {
	t.Helper()
	st, err := rc.status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, n := range st.Cluster.Ring.Nodes {
		out[n.ID] = n.Weight
	}
	return st.Cluster.Ring.Epoch, out
}

// TestClusterWalkthroughKeepsQuorum runs the README's cluster walkthrough
// — up 3; add; stop n2; kill n3; start n3 — and checks the global tier
// keeps its quorum throughout: stop n2 (SIGTERM) takes n2 out of the Raft
// group and promotes n4, so with n3 killed two of the three voters are
// live, and a new shard (registered through the Raft log) is created at
// once. Before, n2 stayed a voter and the kill left 1 of 3. Restarted, n3
// takes its place back with no new ring epoch and no shard moving; n2,
// restarted, joins again as a non-voter.
func TestClusterWalkthroughKeepsQuorum(t *testing.T) {
	rc := startRingCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*clusterTimeout)
	defer cancel()
	_, want := rc.fill(t, ctx, "r%02d", 50, 1, 8, "hi")
	rc.waitRaft(t, 3, 0, "n1", "n2", "n3")

	rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	rc.waitRing(t, 4)
	rc.waitRaft(t, 3, 1, "n1", "n2", "n3")

	n2 := rc.Node("n2")
	start := time.Now()
	n2.Signal(syscall.SIGTERM)
	st, ok := n2.Wait(clusterTimeout)
	if !ok {
		t.Fatalf("n2 still running %v after SIGTERM", clusterTimeout)
	}
	leave := time.Since(start)
	if st.ExitCode() != 0 || !strings.Contains(n2.Stderr(), "left the global tier") {
		t.Fatalf("n2 exited (%v) without logging that it left the global tier", st)
	}
	rc.waitRing(t, 3)
	promoted := time.Now()
	rc.waitRaft(t, 3, 0, "n1", "n3", "n4")
	t.Logf("stop n2: handed off, left the ring and the Raft group in %v; n4 a voter %v later", leave.Round(time.Millisecond), time.Since(promoted).Round(time.Millisecond))

	rc.Node("n3").Kill()
	epoch, ring := ringWeights(t, rc)
	fresh := keyOwnedBy(t, "fresh", ring, "n1", "n4")
	start = time.Now()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if _, _, err := rc.put(wctx, fresh, 1, "after-kill"); err != nil {
		t.Fatalf("a new shard with n2 stopped and n3 killed (the global tier must keep its quorum): %v", err)
	}
	t.Logf("kill n3: new shard %s created through the Raft log in %v", fresh, time.Since(start).Round(time.Millisecond))
	want[fresh] = []int64{1}
	before := rc.holders(t)

	rc.Node("n3").Restart()
	if e := rc.waitRing(t, 3); e != epoch {
		t.Fatalf("ring epoch %d after n3 restarted, was %d: a restart must not change the ring", e, epoch)
	}
	if after := rc.holders(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("shards moved when n3 restarted:\nbefore %v\nafter  %v", before, after)
	}
	rc.waitRaft(t, 3, 0, "n1", "n3", "n4")
	rc.checkAll(t, want)

	// n2, started again (a bootstrap voter that left the Raft group: no
	// seeds, no leader to hear from), finds the tier through the nodes its
	// metadata records, joins as a non-voter (there are 3 voters) and takes
	// its share back.
	rc.Node("n2").Restart()
	rc.waitRing(t, 4)
	rc.waitRaft(t, 3, 1, "n1", "n3", "n4")
	if held := rc.shardsPerNode(t); held["n2"] == 0 {
		t.Fatalf("n2 joined again but holds no shards: %v", held)
	}
}

// TestClusterStopVoterRefusedWithoutQuorum: with n3 killed and no
// non-voter to promote, stopping n2 would leave the voters {n1, n3} with
// one live: n2 hands its shards off and leaves the ring but stays a voter,
// saying why. Started again, it restores the quorum. (Its shards that
// the ring now places on the dead n3 cannot be handed off: -leave-timeout
// bounds that part.)
func TestClusterStopVoterRefusedWithoutQuorum(t *testing.T) {
	rc := startRingCluster(t, 3, "-leave-timeout", "10s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	rc.fill(t, ctx, "q%02d", 20, 1, 8, "x")
	rc.waitRaft(t, 3, 0, "n1", "n2", "n3")
	rc.Node("n3").Kill()
	n2 := rc.Node("n2")
	n2.Signal(syscall.SIGTERM)
	if _, ok := n2.Wait(clusterTimeout); !ok {
		t.Fatalf("n2 still running %v after SIGTERM", clusterTimeout)
	}
	said := ""
	for _, line := range strings.Split(n2.Stderr(), "\n") {
		if strings.Contains(line, "without a quorum") {
			said = line
		}
	}
	if said == "" {
		t.Fatalf("n2 left without saying that leaving the Raft group was refused")
	}
	t.Logf("n2 said: %s", said)
	rc.Node("n3").Restart()
	rc.waitRaft(t, 3, 0, "n1", "n3")
	n2.Restart()
	rc.waitRaft(t, 3, 0, "n1", "n2", "n3")
}

// readIncarnation is the incarnation a node's last start recorded.
func readIncarnation(t *testing.T, n *lunoratest.ClusterNode) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.DataDir(), "incarnation"))
	if err != nil {
		t.Fatal(err)
	}
	inc, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

// TestClusterLeaveRacesStartupJoin: node 4 is sent SIGTERM right after it
// is READY — while its start-up join (Raft, then ring) may be in flight —
// several times with different delays. Each time, once it has exited and
// the global tier has settled, it is in neither the ring nor the Raft
// group. A join of that process replayed afterwards is refused. Started
// and left alone, it joins again and takes its share.
func TestClusterLeaveRacesStartupJoin(t *testing.T) {
	rc := startRingCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	rc.fill(t, ctx, "j%03d", 100, 1, 8, "x")
	base := rc.waitRing(t, 3)
	var n4 *lunoratest.ClusterNode
	for i, delay := range []time.Duration{0, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond} {
		if n4 == nil {
			n4 = rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
		} else {
			n4.Restart()
		}
		time.Sleep(delay) // the race under test: SIGTERM this long after READY
		start := time.Now()
		n4.Signal(syscall.SIGTERM)
		st, ok := n4.Wait(clusterTimeout)
		if !ok {
			t.Fatalf("run %d: n4 still running %v after SIGTERM", i+1, clusterTimeout)
		}
		t.Logf("run %d: SIGTERM %v after READY, exited (%v) in %v", i+1, delay, st, time.Since(start).Round(time.Millisecond))
		rc.WaitConverged(clusterTimeout)
		rc.waitRing(t, 3)
		rc.waitRaft(t, 3, 0, "n1", "n2", "n3")
		if s := rc.nodeState(t, "n4"); s != "left" {
			t.Fatalf("run %d: n4's recorded state after it left: %q, want left", i+1, s)
		}
	}
	epoch, _ := ringWeights(t, rc)
	t.Logf("ring epoch %d after 5 starts and leaves of n4 (was %d)", epoch, base)

	inc := readIncarnation(t, n4)
	n1 := rc.Node("n1").Client()
	_, err := n1.UpdateRing(ctxT(t), api.RingChange{NodeID: "n4", Weight: 1, Incarnation: inc})
	if api.CodeOf(err) != codes.FailedPrecondition {
		t.Fatalf("a replayed ring join of n4's last process: %v (code %v), want FAILED_PRECONDITION", err, api.CodeOf(err))
	}
	_, err = n1.Join(ctxT(t), api.JoinRequest{NodeID: "n4", RaftAddr: n4.RaftAddr, GRPCAddr: n4.GRPCAddr(), Incarnation: inc})
	if api.CodeOf(err) != codes.FailedPrecondition {
		t.Fatalf("a replayed Raft join of n4's last process: %v (code %v), want FAILED_PRECONDITION", err, api.CodeOf(err))
	}
	if e, _ := ringWeights(t, rc); e != epoch {
		t.Fatalf("ring epoch %d after the refused joins, was %d", e, epoch)
	}
	rc.waitRaft(t, 3, 0, "n1", "n2", "n3")

	n4.Restart()
	rc.waitRing(t, 4)
	if held := rc.shardsPerNode(t); held["n4"] == 0 {
		t.Fatalf("n4 joined again but holds no shards: %v", held)
	}
	rc.waitRaft(t, 3, 1, "n1", "n2", "n3")
	if s := rc.nodeState(t, "n4"); s != "up" {
		t.Fatalf("n4's recorded state after it joined again: %q, want up", s)
	}
}

// nodeState reads a node's recorded state (__lunora_nodes) with a strong
// read through n1.
func (rc *ringCluster) nodeState(t *testing.T, id string) string {
	t.Helper()
	var state string
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		res, err := rc.Node("n1").Client().Exec(ctxT(t), global, "SELECT state FROM __lunora_nodes WHERE id = :id",
			map[string]any{"id": id}, api.ReadOptions{Consistency: api.Strong})
		if err != nil {
			return err
		}
		if len(res.Rows) != 1 {
			return fmt.Errorf("no __lunora_nodes row for %s", id)
		}
		state, _ = res.Rows[0][0].(string)
		return nil
	})
	return state
}

// removeNode runs lunora-node remove-node through node via and returns
// its exit code and output.
func (rc *ringCluster) removeNode(t *testing.T, via *lunoratest.ClusterNode, args ...string) (int, string) {
	t.Helper()
	b := lunoratest.Build(t)
	all := []string{"remove-node", "-node", via.GRPCAddr()}
	if rc.TLS != nil {
		all = append(all, rc.TLS.ClientArgs()...)
	}
	if rc.Secret != nil {
		all = append(all, rc.Secret.Args()...)
	}
	r := lunoratest.Run(t, lunoratest.Spec{Name: "lunora-node remove-node", Path: b.Node,
		Args: append(all, args...), CheckRace: b.Race}, 60*time.Second)
	return r.ExitCode, r.Stdout + r.Stderr
}

// TestClusterRemoveDeadVoter: "lunora-node remove-node" of a dead voter
// takes it out of the ring and the Raft group and promotes the non-voter,
// so the global tier survives one more death; removing a live voter when
// that would leave no quorum of live voters is refused, saying so. It runs
// in plaintext, with mutual TLS (the CLI with an operator certificate) and
// with a cluster secret (the CLI given its file).
func TestClusterRemoveDeadVoter(t *testing.T) {
	forEachTransport(t, testClusterRemoveDeadVoter)
}

func testClusterRemoveDeadVoter(t *testing.T, tr transport) {
	rc := startRingClusterWith(t, tr, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	rc.fill(t, ctx, "d%02d", 20, 1, 8, "x")
	rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	rc.waitRing(t, 4)
	rc.waitRaft(t, 3, 1, "n1", "n2", "n3")

	rc.Node("n3").Kill()
	n1 := rc.Node("n1")
	start := time.Now()
	if code, out := rc.removeNode(t, n1, "n3"); code != 0 {
		t.Fatalf("remove-node n3 (dead): exit %d: %s", code, out)
	}
	t.Logf("remove-node n3 (dead voter) took %v", time.Since(start).Round(time.Millisecond))
	// Out of the ring (its shards stay with it, unavailable, until it is
	// back: README "Not built yet") and out of the Raft group.
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		if _, ring := ringWeights(t, rc); len(ring) != 3 || ring["n3"] != 0 {
			return fmt.Errorf("ring %v, want n1, n2, n4", ring)
		}
		return nil
	})
	rc.waitRaft(t, 3, 0, "n1", "n2", "n4")
	if s := rc.nodeState(t, "n3"); s != "removed" {
		t.Fatalf("n3's recorded state after remove-node: %q, want removed", s)
	}

	// One more voter dies: n1 and n4 are two of three.
	rc.Node("n2").Kill()
	_, ring := ringWeights(t, rc)
	fresh := keyOwnedBy(t, "fresh", ring, "n1", "n4")
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if _, _, err := rc.put(wctx, fresh, 1, "x"); err != nil {
		t.Fatalf("a new shard with n3 removed and n2 killed: %v", err)
	}

	// Removing the live n4 now would leave {n1, n2} with n2 dead: refused.
	code, out := rc.removeNode(t, n1, "n4")
	if code == 0 || !strings.Contains(out, "quorum") {
		t.Fatalf("remove-node n4 (live) with n2 dead: exit %d: %s; want a refusal naming the quorum", code, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	rc.waitRaft(t, 3, 0, "n1", "n4")
	if _, ring := ringWeights(t, rc); ring["n4"] == 0 {
		t.Fatalf("the refused removal took n4 out of the ring: %v", ring)
	}
}

// TestScriptsClusterWalkthrough runs the README's cluster walkthrough with
// scripts/cluster, as written — up 3; 50 messages; add; stop n2; kill n3;
// start n3 — and checks that the global tier keeps its quorum: after the
// kill a global write (users:register) and a message in a new room (a new
// shard, registered through the Raft log) succeed at once.
func TestScriptsClusterWalkthrough(t *testing.T) {
	b := lunoratest.Build(t)
	dir := t.TempDir()
	var base, gw int
	for range 20 { // n4's ports too
		base, gw = freeBase(t)
		free := true
		for k := 0; k < 4; k++ {
			if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+40+k)); err != nil {
				free = false
			} else {
				ln.Close()
			}
		}
		if free {
			break
		}
	}
	script := filepath.Join(b.ModuleRoot, "scripts", "cluster")
	env := append(os.Environ(), "LUNORA_CLUSTER_DIR="+dir+"/c",
		fmt.Sprintf("LUNORA_CLUSTER_PORT=%d", base), fmt.Sprintf("LUNORA_GATEWAY_PORT=%d", gw))
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, script, args...)
		cmd.Dir, cmd.Env = dir, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("scripts/cluster %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		t.Logf("scripts/cluster %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
		return out.String()
	}
	t.Cleanup(func() {
		cmd := exec.Command(script, "kill-all")
		cmd.Env = env
		cmd.Run()
	})
	hc := lunoratest.NewHTTPClient(t, fmt.Sprintf("127.0.0.1:%d", gw))
	call := func(what string, fn string, args map[string]any, log bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		for {
			resp, err := hc.Call(ctx, fn, args)
			if err == nil && resp.Status == 200 {
				if log {
					t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
				}
				return
			}
			if ctx.Err() != nil || (err == nil && resp.Code() != "UNAVAILABLE") {
				t.Fatalf("%s: %v %v", what, resp, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	run("up", "3")
	for i := 1; i <= 50; i++ {
		call(fmt.Sprintf("message %d", i), "messages:send", map[string]any{"room_id": fmt.Sprintf("r%d", i), "author": "ada", "body": "hi"}, false)
	}
	run("add")
	run("stop", "n2")
	run("kill", "n3")
	call("a global write with n2 stopped and n3 killed", "users:register", map[string]any{"user_id": "ada", "name": "Ada"}, true)
	// A new room whose shard does not land on the killed n3 (the gateway
	// answers UNAVAILABLE naming n3 for those, by design).
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, err := hc.Call(ctx, "messages:send", map[string]any{"room_id": fmt.Sprintf("new%d", i), "author": "ada", "body": "hi"})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status == 200 {
			t.Logf("a new shard (room new%d) with n2 stopped and n3 killed", i)
			break
		}
		if !strings.Contains(fmt.Sprint(resp), "n3") || i > 20 {
			t.Fatalf("a new room with n2 stopped and n3 killed: %v", resp)
		}
	}
	run("start", "n3")
	out := run("status")
	if !regexp.MustCompile(`(?m)^n4\s+\S+\s+alive\s+(leader|voter)\s`).MatchString(out) || regexp.MustCompile(`(?m)^n2\s+\S+\s+\S+\s+(leader|voter)\s`).MatchString(out) {
		t.Fatalf("after the walkthrough, want n4 a voter and n2 out of the Raft group:\n%s", out)
	}
	t.Logf("status:\n%s", out)
}
