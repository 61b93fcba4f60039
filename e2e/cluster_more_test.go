package e2e_test

// More real-process cluster tests: scaling 3→5→3 under continuous writes,
// a request routed at a stale (and at a future) ring epoch, and a handoff
// stream with a bad checksum. Helpers come from cluster_test.go.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/placement"
	"google.golang.org/grpc/codes"
)

// holders reads the shard registry (shard ID → holder) from every running
// node and waits until all of them agree, so a lagging replica is never
// mistaken for the registry's answer.
func (rc *ringCluster) holders(t *testing.T) map[string]string {
	t.Helper()
	var agreed map[string]string
	err := lunoratest.Poll(clusterTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		running := rc.Running()
		var first map[string]string
		var firstID string
		for _, asked := range running {
			m := map[string]string{}
			for _, holder := range rc.Nodes {
				after := ""
				for {
					ids, next, err := asked.Client().ListShards(ctx, "", holder.ID, after, 500)
					if err != nil {
						return fmt.Errorf("%s: shards held by %s: %w", asked.ID, holder.ID, err)
					}
					for _, id := range ids {
						m[id] = holder.ID
					}
					if next == "" {
						break
					}
					after = next
				}
			}
			if first == nil {
				first, firstID = m, asked.ID
				continue
			}
			if fmt.Sprint(m) != fmt.Sprint(first) {
				return fmt.Errorf("the registry replicas of %s (%d shards) and %s (%d shards) differ", firstID, len(first), asked.ID, len(m))
			}
		}
		agreed = first
		return nil
	})
	if err != nil {
		t.Fatalf("registry holders: %v", err)
	}
	return agreed
}

// deepReason walks err's whole chain and returns the first non-empty
// reason and its facts (api.ReasonOf stops at the first *api.Error).
func deepReason(err error) (string, map[string]string) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if ae, ok := e.(*api.Error); ok && ae.Reason != "" {
			return ae.Reason, ae.Meta
		}
	}
	return "", nil
}

// checkNotOwner checks that err is UNAVAILABLE with reason NOT_OWNER
// naming owner at epoch, as seen by a caller of rpc.NodeClient.
func checkNotOwner(t *testing.T, what string, err error, owner string, epoch uint64) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want UNAVAILABLE/NOT_OWNER (owner %s, epoch %d)", what, owner, epoch)
		return
	}
	if c := api.CodeOf(err); c != codes.Unavailable {
		t.Errorf("%s: code %v (%v), want UNAVAILABLE", what, c, err)
		return
	}
	reason, meta := api.ReasonOf(err)
	t.Logf("%s: %v; api.ReasonOf: %q %v", what, err, reason, meta)
	if reason != api.ReasonNotOwner {
		dr, dm := deepReason(err)
		t.Errorf("%s: api.ReasonOf(err) = %q %v, want %q; deeper in the error chain: reason %q meta %v (%v)", what, reason, meta, api.ReasonNotOwner, dr, dm, err)
		reason, meta = dr, dm
		if reason != api.ReasonNotOwner {
			return
		}
	}
	if meta["owner"] != owner || meta["epoch"] != fmt.Sprint(epoch) {
		t.Errorf("%s: NOT_OWNER meta %v, want owner %s epoch %d", what, meta, owner, epoch)
	}
}

// TestClusterScale3To5To3UnderWrites: 200 writers, one per shard, write
// continuously through the gateway while the cluster grows from 3 nodes to
// 5 and shrinks back to 3 (both new nodes leave with SIGTERM). Only
// retryable errors may appear; every acknowledged write must be there at
// the end and each shard's commit seqs must only increase.
func TestClusterScale3To5To3UnderWrites(t *testing.T) {
	testStart := time.Now()
	rc := startRingCluster(t, 3)
	e3 := rc.waitRing(t, 3)
	t.Logf("3 nodes up at epoch %d in %v", e3, time.Since(testStart).Round(time.Millisecond))

	const shards = 200
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	stop := make(chan struct{})
	var writers []*seqWriter
	var wg sync.WaitGroup
	for i := range shards {
		w := &seqWriter{k: fmt.Sprintf("w%03d", i)}
		writers = append(writers, w)
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx, rc, stop) }()
	}
	stopped := false
	stopWriters := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer func() {
		cancel() // a writer stuck retrying ends now
		stopWriters()
	}()

	// tally sums the writers' figures; it fails if one stopped on an error.
	tally := func() (acked []int, total, retries int) {
		t.Helper()
		acked = make([]int, len(writers))
		for i, w := range writers {
			w.mu.Lock()
			err := w.err
			acked[i] = len(w.acked)
			total += len(w.acked)
			retries += w.retries
			w.mu.Unlock()
			if err != nil {
				t.Fatalf("writer %s: %v", w.k, err)
			}
		}
		return acked, total, retries
	}
	// progress waits until every writer has acknowledged a write more than
	// base says it had.
	progress := func(phase string, base []int) {
		t.Helper()
		err := lunoratest.Poll(clusterTimeout, func() error {
			acked, _, _ := tally()
			behind := 0
			for i := range acked {
				if acked[i] <= base[i] {
					behind++
				}
			}
			if behind > 0 {
				return fmt.Errorf("%s: %d of %d writers have acknowledged no new write", phase, behind, len(acked))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	phase := time.Now()
	progress("warm-up", make([]int, shards))
	base, total, retries := tally()
	t.Logf("phase warm-up: every one of %d writers acknowledged a write in %v; %d acked, %d retries; holders %v",
		shards, time.Since(phase).Round(time.Millisecond), total, retries, rc.shardsPerNode(t))

	// Scale out: 3 → 5.
	phase = time.Now()
	rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	rc.AddNode("n5", rc.Nodes[0].GRPCAddr())
	e5 := rc.waitRing(t, 5)
	if e5 <= e3 {
		t.Fatalf("epoch %d with 5 nodes, was %d with 3", e5, e3)
	}
	held := rc.shardsPerNode(t)
	base, total, retries = tally()
	t.Logf("phase scale-out 3→5: ring of 5 at epoch %d in %v; holders %v; %d acked, %d retries so far",
		e5, time.Since(phase).Round(time.Millisecond), held, total, retries)
	if held["n4"] == 0 || held["n5"] == 0 {
		t.Fatalf("the new nodes took no shards: %v", held)
	}
	phase = time.Now()
	progress("after scale-out", base)
	t.Logf("phase writes-on-5: every writer acknowledged a new write in %v", time.Since(phase).Round(time.Millisecond))

	// Scale in: SIGTERM n4, then n5; each hands its shards off first.
	for _, id := range []string{"n4", "n5"} {
		n := rc.Node(id)
		phase = time.Now()
		n.Signal(syscall.SIGTERM)
		st, ok := n.Wait(clusterTimeout)
		if !ok {
			t.Fatalf("%s did not exit within %v of SIGTERM", id, clusterTimeout)
		}
		if !strings.Contains(n.Stderr(), "every shard handed off") {
			t.Errorf("%s exited (%v) without logging that it handed every shard off", id, st)
		}
		_, total, retries = tally()
		t.Logf("phase leave %s: exited (%v) %v after SIGTERM; %d acked, %d retries so far", id, st, time.Since(phase).Round(time.Millisecond), total, retries)
	}
	phase = time.Now()
	e3b := rc.waitRing(t, 3)
	held = rc.shardsPerNode(t)
	base, _, _ = tally()
	t.Logf("phase settle: ring of 3 at epoch %d in %v; holders %v", e3b, time.Since(phase).Round(time.Millisecond), held)
	if held["n4"] != 0 || held["n5"] != 0 {
		t.Fatalf("nodes that left still hold shards: %v", held)
	}
	phase = time.Now()
	progress("after scale-in", base)
	t.Logf("phase writes-on-3: every writer acknowledged a new write in %v", time.Since(phase).Round(time.Millisecond))

	stopWriters()
	want := map[string][]int64{}
	_, total, retries = tally()
	for _, w := range writers {
		ids := make([]int64, len(w.acked))
		for i, id := range w.acked {
			if id != i+1 {
				t.Fatalf("writer %s: acknowledged ids %v are not 1..n", w.k, w.acked)
			}
			ids[i] = int64(id)
		}
		want[w.k] = ids
	}
	phase = time.Now()
	rc.checkAll(t, want)
	t.Logf("phase check: %d shards read back with all %d acknowledged writes in %v; %d retries of retryable errors (UNAVAILABLE/RESOURCE_EXHAUSTED), no other error; total %v",
		shards, total, time.Since(phase).Round(time.Millisecond), retries, time.Since(testStart).Round(time.Millisecond))
}

// TestClusterStaleEpoch: a node asked for a shard that moved away, at the
// epoch before the move, refuses with NOT_OWNER naming the new owner and
// epoch; asked at an epoch it has not seen, it waits (bounded) then
// answers UNAVAILABLE and keeps serving.
func TestClusterStaleEpoch(t *testing.T) {
	rc := startRingCluster(t, 3)
	const shards = 50
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	_, want := rc.fill(t, ctx, "e%02d", shards, 3, 8, "v")
	e1 := rc.waitRing(t, 3)
	before := rc.holders(t)
	if len(before) != shards {
		t.Fatalf("registry has %d shards, want %d: %v", len(before), shards, before)
	}

	rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	e2 := rc.waitRing(t, 4)
	if e2 <= e1 {
		t.Fatalf("epoch %d after n4 joined, was %d", e2, e1)
	}
	after := rc.holders(t)
	var moved []string
	for id, h := range after {
		if h == "n4" {
			moved = append(moved, id)
		}
	}
	sort.Strings(moved)
	t.Logf("epochs: E1=%d (3 nodes), E2=%d (4 nodes); %d of %d shards moved to n4", e1, e2, len(moved), shards)
	if len(moved) == 0 {
		t.Fatalf("no shard moved to n4: %v", after)
	}
	shard := moved[0]
	key := strings.TrimPrefix(shard, "k=")
	prev := rc.Node(before[shard])
	t.Logf("shard %s moved %s → n4", shard, prev.ID)

	// The old holder, asked at E1: NOT_OWNER, owner n4 at E2.
	_, err := prev.Client().Call(api.WithRingEpoch(ctxT(t), e1), shard, "items:list", map[string]any{"k": key}, api.ReadOptions{})
	checkNotOwner(t, fmt.Sprintf("%s asked for %s at stale epoch %d", prev.ID, shard, e1), err, "n4", e2)

	// The new owner serves it even to a request routed at E1.
	res, err := rc.Node("n4").Client().Call(api.WithRingEpoch(ctxT(t), e1), shard, "items:list", map[string]any{"k": key}, api.ReadOptions{})
	if err != nil || len(res.Rows) != 3 {
		t.Fatalf("n4 asked for %s at stale epoch %d: %v %v", shard, e1, res, err)
	}
	t.Logf("n4 asked for %s at stale epoch %d: %d rows", shard, e1, len(res.Rows))

	// A future epoch: the node waits for it (up to 5 s), then refuses.
	var own string // a shard prev holds at E2, so only the epoch is wrong
	for id, h := range after {
		if h == prev.ID && (own == "" || id < own) {
			own = id
		}
	}
	if own == "" {
		t.Fatalf("%s holds no shard at epoch %d: %v", prev.ID, e2, after)
	}
	future := e2 + 100
	start := time.Now()
	_, err = prev.Client().Call(api.WithRingEpoch(ctxT(t), future), own, "items:list", map[string]any{"k": strings.TrimPrefix(own, "k=")}, api.ReadOptions{})
	took := time.Since(start)
	t.Logf("%s asked for %s at future epoch %d: answered in %v: %v", prev.ID, own, future, took.Round(time.Millisecond), err)
	if api.CodeOf(err) != codes.Unavailable {
		t.Errorf("future epoch %d: code %v (%v), want UNAVAILABLE", future, api.CodeOf(err), err)
	}
	if took >= 10*time.Second {
		t.Errorf("future epoch %d: answered after %v, want under 10s", future, took)
	}
	// The node keeps serving, and its ring did not move.
	res, err = prev.Client().Call(api.WithRingEpoch(ctxT(t), e2), own, "items:list", map[string]any{"k": strings.TrimPrefix(own, "k=")}, api.ReadOptions{})
	if err != nil || len(res.Rows) != 3 {
		t.Fatalf("%s serving %s at epoch %d after the future-epoch request: %v %v", prev.ID, own, e2, res, err)
	}
	r, err := prev.Client().Ring(ctxT(t), 0)
	if err != nil || r.Epoch != e2 {
		t.Fatalf("%s ring after the future-epoch request: %+v %v, want epoch %d", prev.ID, r, err, e2)
	}
	t.Logf("%s still serves %s at epoch %d (%d rows)", prev.ID, own, r.Epoch, len(res.Rows))

	// Through the gateway the moved shard reads fine, and so does the rest.
	got, err := rc.list(ctx, key)
	if err != nil || fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("gateway list %s: %v %v", key, got, err)
	}
	rc.checkAll(t, want)
}

// TestClusterHandoffBadChecksum: handoff streams a node must refuse — to
// a node that does not own the shard (NOT_OWNER), and to the owner with a
// wrong SHA-256 or size (DATA_LOSS) — change nothing: no file, no
// journal, no registry entry, every shard still served as before.
func TestClusterHandoffBadChecksum(t *testing.T) {
	rc := startRingCluster(t, 3)
	const shards = 20
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	keys, _ := rc.fill(t, ctx, "b%02d", shards, 3, 8, "v")
	epoch := rc.waitRing(t, 3)
	before := rc.holders(t)
	shard := "k=" + keys[0]
	a := rc.Node(before[shard])
	var b *lunoratest.ClusterNode
	for _, n := range rc.Running() {
		if n.ID != a.ID {
			b = n
			break
		}
	}
	t.Logf("epoch %d; shard %s held by %s; bogus handoff goes to %s", epoch, shard, a.ID, b.ID)

	data := bytes.Repeat([]byte("not a sqlite file "), 4096)
	good := sha256.Sum256(data)
	wrong := good
	wrong[0] ^= 0xff

	// 1. To a node that does not own the shard: NOT_OWNER, naming A.
	err := b.Client().Handoff(ctxT(t), api.HandoffHeader{ShardID: shard, From: a.ID, Epoch: epoch, Size: int64(len(data))}, bytes.NewReader(data), wrong[:])
	checkNotOwner(t, fmt.Sprintf("handoff of %s to non-owner %s", shard, b.ID), err, a.ID, epoch)

	// 2. To the owner of a shard never written, from a node that does not
	// hold it (none does): refused before anything is stored, whatever
	// the size and sum say. (A wrong sum from the real holder is
	// DATA_LOSS: shardhost TestHandoffMovesAShard.)
	r, err := rc.Nodes[0].Client().Ring(ctxT(t), epoch)
	if err != nil {
		t.Fatal(err)
	}
	members := make([]placement.Member, len(r.Nodes))
	for i, n := range r.Nodes {
		members[i] = placement.Member{ID: placement.NodeID(n.ID), Weight: n.Weight}
	}
	ring, err := placement.NewRing(members)
	if err != nil {
		t.Fatal(err)
	}
	freshKey := "fresh-never-written"
	fresh := "k=" + freshKey
	owner := rc.Node(string(ring.Owner(fresh)))
	var from string
	for _, n := range rc.Running() {
		if n.ID != owner.ID {
			from = n.ID
			break
		}
	}
	if _, ok := before[fresh]; ok {
		t.Fatalf("%s is registered before the test wrote it", fresh)
	}
	t.Logf("fresh shard %s: ring owner %s at epoch %d; bogus sender %s", fresh, owner.ID, r.Epoch, from)

	for _, c := range []struct {
		name string
		size int64
		sum  []byte
	}{
		{"wrong SHA-256", int64(len(data)), wrong[:]},
		{"wrong size", int64(len(data)) + 1, good[:]},
	} {
		start := time.Now()
		err := owner.Client().Handoff(ctxT(t), api.HandoffHeader{ShardID: fresh, From: from, Epoch: epoch, Size: c.size}, bytes.NewReader(data), c.sum)
		t.Logf("handoff of %s to its owner %s with a %s (%d bytes): %v in %v", fresh, owner.ID, c.name, len(data), err, time.Since(start).Round(time.Millisecond))
		if api.CodeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not in the registry") {
			t.Errorf("handoff with a %s: code %v (%v), want FAILED_PRECONDITION: not in the registry", c.name, api.CodeOf(err), err)
		}
	}

	// Nothing left behind on the owner: no file, no journal entry, no move.
	sum := sha256.Sum256([]byte(fresh))
	name := hex.EncodeToString(sum[:16])
	dir := filepath.Join(owner.DataDir(), "shards", name[0:2], name[2:4])
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name) {
				t.Errorf("%s: %s left behind in %s", owner.ID, e.Name(), dir)
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(owner.DataDir(), "moves")); err != nil {
		t.Errorf("%s: moves journal: %v", owner.ID, err)
	} else {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name) {
				t.Errorf("%s: journal entry %s left behind", owner.ID, e.Name())
			}
		}
	}
	st, err := owner.Client().Status(ctxT(t))
	if err != nil || st.Cluster == nil || st.Cluster.MovesInFlight != 0 {
		t.Fatalf("%s status after the refused handoffs: %+v %v", owner.ID, st, err)
	}
	if h := rc.holders(t); h[fresh] != "" || len(h) != shards {
		t.Fatalf("registry after the refused handoffs: %s held by %q; %d shards, want %d", fresh, h[fresh], len(h), shards)
	}

	// The fresh shard starts empty: the bogus copy was never installed.
	if _, _, err := rc.put(ctx, freshKey, 1, "real"); err != nil {
		t.Fatal(err)
	}
	got, err := rc.list(ctx, freshKey)
	if err != nil || fmt.Sprint(got) != "[1]" {
		t.Fatalf("fresh shard %s after one put: %v %v, want [1]", fresh, got, err)
	}
	// The original shard is untouched, still held by A.
	got, err = rc.list(ctx, keys[0])
	if err != nil || fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("shard %s after the bogus handoff: %v %v, want [1 2 3]", shard, got, err)
	}
	after := rc.holders(t)
	if after[shard] != a.ID || after[fresh] != owner.ID {
		t.Fatalf("holders after: %s by %q (want %s), %s by %q (want %s)", shard, after[shard], a.ID, fresh, after[fresh], owner.ID)
	}
	t.Logf("after the refusals: %s reads [1] held by %s; %s reads %v held by %s", fresh, after[fresh], shard, got, after[shard])
}
