package e2e_test

// Real-process tests of the cluster: lunora-node serve processes forming
// one ring (every node joins it when it starts, leaves it on SIGTERM after
// handing off its shards), lunora-gateway routing by the ring.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc/codes"
)

// clusterSchema has one shard per key k; puts are idempotent (a retried
// put of the same id changes nothing), so a client may retry any
// UNAVAILABLE answer.
const clusterSchema = `
tables:
  items:
    shard_by: k
    columns:
      k: {type: text, not_null: true}
      id: int
      v: {type: text, not_null: true}
    primary_key: [id]
functions:
  items:put:
    kind: mutation
    shard_by: k
    args:
      k: text
      id: int
      v: text
    sql:
      - INSERT INTO items(k, id, v) VALUES (:k, :id, :v) ON CONFLICT(id) DO NOTHING
  items:list:
    kind: query
    shard_by: k
    args:
      k: text
    sql:
      - SELECT id, v FROM items ORDER BY id
`

func writeClusterSchema(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lunora.yaml")
	if err := os.WriteFile(p, []byte(clusterSchema), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ringCluster is a cluster of nodes plus one gateway in front of them.
type ringCluster struct {
	*lunoratest.Cluster
	gw         *lunoratest.Process
	http       *lunoratest.HTTPClient
	schemaPath string
}

func startRingCluster(t *testing.T, voters int, extra ...string) *ringCluster {
	t.Helper()
	return startRingClusterWith(t, plaintext, voters, extra...)
}

// transport is how the processes of a test cluster authenticate each
// other (forEachTransport).
type transport struct {
	mtls   bool // mutual TLS between every process, TLS on the gateway's public listeners
	secret bool // a shared cluster secret
}

var plaintext = transport{}

// startRingClusterWith is startRingCluster with the cluster
// authentication of tr.
func startRingClusterWith(t *testing.T, tr transport, voters int, extra ...string) *ringCluster {
	t.Helper()
	b := lunoratest.Build(t)
	schemaPath := writeClusterSchema(t)
	opts := lunoratest.ClusterOptions{Args: extra}
	if tr.mtls {
		opts.TLS = lunoratest.NewClusterTLS(t)
	}
	if tr.secret {
		opts.Secret = lunoratest.NewClusterSecret(t)
	}
	c := lunoratest.StartClusterWith(t, b, schemaPath, voters, opts)
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.GRPCAddr())
	}
	var gwArgs []string
	if tr.mtls {
		gwArgs = c.TLS.GatewayArgs()
	}
	if tr.secret {
		gwArgs = append(gwArgs, c.Secret.Args()...)
	}
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schemaPath, strings.Join(addrs, ","), gwArgs...))
	rc := &ringCluster{Cluster: c, gw: gw, http: lunoratest.NewHTTPClient(t, gw.HTTPAddr()), schemaPath: schemaPath}
	if tr.mtls {
		rc.http = lunoratest.NewHTTPSClient(t, gw.HTTPAddr(), c.TLS)
	}
	rc.waitRing(t, voters)
	if tr.secret && !tr.mtls {
		// The nodes require it: a node-API client without it is refused.
		anon, err := rpc.NewNodeClient(c.Nodes[0].GRPCAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer anon.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := anon.Ring(ctx, 0); api.CodeOf(err) != codes.Unauthenticated {
			t.Fatalf("Ring without the cluster secret: %v, want UNAUTHENTICATED", err)
		}
	}
	return rc
}

// forEachTransport runs f as three subtests: "plaintext"; "mtls" — the
// same cluster with mutual TLS between nodes, gateway and CLI, TLS on the
// gateway's public API and an encrypted gossip key; and "secret" — with a
// shared cluster secret instead.
func forEachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tc := range []struct {
		name string
		tr   transport
	}{{"plaintext", plaintext}, {"mtls", transport{mtls: true}}, {"secret", transport{secret: true}}} {
		t.Run(tc.name, func(t *testing.T) { f(t, tc.tr) })
	}
}

// status asks a running node for the cluster status.
func (rc *ringCluster) status(ctx context.Context) (*api.Status, error) {
	var last error
	for _, n := range rc.Running() {
		st, err := n.Client().Status(ctx)
		if err == nil && st.Cluster != nil {
			return st, nil
		}
		last = err
	}
	return nil, fmt.Errorf("no node answered status: %v", last)
}

// waitRing waits until the ring has exactly n nodes, every running node
// has the same epoch, and no shard is held by a node outside the ring.
func (rc *ringCluster) waitRing(t *testing.T, n int) uint64 {
	t.Helper()
	var epoch uint64
	err := lunoratest.Poll(clusterTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var first *api.Status
		for _, node := range rc.Running() {
			st, err := node.Client().Status(ctx)
			if err != nil {
				return err
			}
			if st.Cluster == nil {
				return fmt.Errorf("%s: no cluster status", node.ID)
			}
			if first == nil {
				first = st
			} else if st.Cluster.Ring.Epoch != first.Cluster.Ring.Epoch {
				return fmt.Errorf("%s at epoch %d, %s at %d", first.NodeID, first.Cluster.Ring.Epoch, st.NodeID, st.Cluster.Ring.Epoch)
			}
			if st.Cluster.MovesInFlight > 0 {
				return fmt.Errorf("%s: %d moves in flight", node.ID, st.Cluster.MovesInFlight)
			}
		}
		if got := len(first.Cluster.Ring.Nodes); got != n {
			return fmt.Errorf("ring has %d nodes at epoch %d, want %d", got, first.Cluster.Ring.Epoch, n)
		}
		inRing := map[string]bool{}
		for _, rn := range first.Cluster.Ring.Nodes {
			inRing[rn.ID] = true
		}
		for _, m := range first.Cluster.Ring.Members {
			if !inRing[m.ID] && m.Shards > 0 {
				return fmt.Errorf("%s is out of the ring but holds %d shards", m.ID, m.Shards)
			}
		}
		epoch = first.Cluster.Ring.Epoch
		return nil
	})
	if err != nil {
		t.Fatalf("ring of %d nodes: %v", n, err)
	}
	return epoch
}

// shardsPerNode is the registry's holder count of every node.
func (rc *ringCluster) shardsPerNode(t *testing.T) map[string]int64 {
	t.Helper()
	st, err := rc.status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, m := range st.Cluster.Ring.Members {
		out[m.ID] = m.Shards
	}
	return out
}

// put writes one item through the gateway, retrying retryable errors
// (UNAVAILABLE and RESOURCE_EXHAUSTED) until it succeeds; it returns the
// commit seq and how many retries it needed.
func (rc *ringCluster) put(ctx context.Context, k string, id int, v string) (uint64, int, error) {
	for retries := 0; ; retries++ {
		resp, err := rc.http.Call(ctx, "items:put", map[string]any{"k": k, "id": id, "v": v})
		if err == nil && resp.Status == 200 {
			return resp.Result.CommitSeq, retries, nil
		}
		if err != nil {
			return 0, retries, err
		}
		if c := resp.Code(); c != "UNAVAILABLE" && c != "RESOURCE_EXHAUSTED" {
			return 0, retries, fmt.Errorf("put %s/%d: %s", k, id, resp)
		}
		select {
		case <-ctx.Done():
			return 0, retries, fmt.Errorf("put %s/%d: still failing: %s", k, id, resp)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// list reads a shard's items through the gateway, retrying UNAVAILABLE.
func (rc *ringCluster) list(ctx context.Context, k string) ([]int64, error) {
	for {
		resp, err := rc.http.Call(ctx, "items:list", map[string]any{"k": k})
		if err != nil {
			return nil, err
		}
		if resp.Status == 200 {
			var ids []int64
			for _, r := range resp.Result.Rows {
				n, _ := r[0].(json.Number).Int64()
				ids = append(ids, n)
			}
			return ids, nil
		}
		if resp.Code() != "UNAVAILABLE" {
			return nil, fmt.Errorf("list %s: %s", k, resp)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list %s: still failing: %s", k, resp)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fill writes items 1..rows (value v) to n shards, keys format(i), through
// the gateway with workers callers, and returns the keys and what each
// shard then holds.
func (rc *ringCluster) fill(t *testing.T, ctx context.Context, format string, n, rows, workers int, v string) ([]string, map[string][]int64) {
	t.Helper()
	keys := make([]string, n)
	want := map[string][]int64{}
	for i := range keys {
		keys[i] = fmt.Sprintf(format, i)
		for id := 1; id <= rows; id++ {
			want[keys[i]] = append(want[keys[i]], int64(id))
		}
	}
	if err := parallel(n, workers, func(i int) error {
		for id := 1; id <= rows; id++ {
			if _, _, err := rc.put(ctx, keys[i], id, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys, want
}

// parallel runs f(i) for i in [0, n) on workers goroutines and returns the
// first error.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// seqWriter writes to one shard in a loop and checks that the shard's
// commit seqs only ever increase — across moves too: a shard answered by
// two nodes at once would hand out a seq twice or go back.
type seqWriter struct {
	k       string
	mu      sync.Mutex
	acked   []int // ids acknowledged
	lastSeq uint64
	err     error
	retries int
}

func (w *seqWriter) run(ctx context.Context, rc *ringCluster, stop <-chan struct{}) {
	for id := 1; ; id++ {
		select {
		case <-stop:
			return
		default:
		}
		seq, retries, err := rc.put(ctx, w.k, id, "x")
		w.mu.Lock()
		w.retries += retries
		if err != nil {
			w.err = err
			w.mu.Unlock()
			return
		}
		if seq <= w.lastSeq {
			w.err = fmt.Errorf("shard %s: seq %d after %d", w.k, seq, w.lastSeq)
			w.mu.Unlock()
			return
		}
		w.lastSeq = seq
		w.acked = append(w.acked, id)
		w.mu.Unlock()
	}
}

// checkAll reads every shard back and checks it holds exactly want[k].
func (rc *ringCluster) checkAll(t *testing.T, want map[string][]int64) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	err := parallel(len(keys), 16, func(i int) error {
		got, err := rc.list(ctx, keys[i])
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(want[keys[i]]) {
			return fmt.Errorf("shard %s holds %v, want %v", keys[i], got, want[keys[i]])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestClusterScaleOutAndGracefulLeave: 3 nodes and a gateway, 1,000
// shards written; node 4 joins and takes its share with every row; node 2
// is stopped with SIGTERM and hands its shards off first. Writers on 20
// shards run throughout and check their seqs only increase.
//
// It runs in plaintext, with mutual TLS and with a cluster secret
// (forEachTransport).
func TestClusterScaleOutAndGracefulLeave(t *testing.T) {
	forEachTransport(t, testClusterScaleOutAndGracefulLeave)
}

func testClusterScaleOutAndGracefulLeave(t *testing.T, tr transport) {
	rc := startRingClusterWith(t, tr, 3)
	const shards = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterTimeout)
	defer cancel()
	start := time.Now()
	_, want := rc.fill(t, ctx, "s%04d", shards, 2, 16, "v")
	t.Logf("wrote %d shards in %v; holders %v", shards, time.Since(start).Round(time.Millisecond), rc.shardsPerNode(t))

	stop := make(chan struct{})
	var writers []*seqWriter
	var wg sync.WaitGroup
	for i := range 20 {
		w := &seqWriter{k: fmt.Sprintf("w%02d", i)}
		writers = append(writers, w)
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx, rc, stop) }()
	}

	epoch := rc.waitRing(t, 3)
	n4 := rc.AddNode("n4", rc.Nodes[0].GRPCAddr())
	start = time.Now()
	if e := rc.waitRing(t, 4); e <= epoch {
		t.Fatalf("epoch %d after node 4 joined, was %d", e, epoch)
	}
	held := rc.shardsPerNode(t)
	t.Logf("node 4 joined; rebalanced in %v; holders %v", time.Since(start).Round(time.Millisecond), held)
	if held["n4"] < shards/8 {
		t.Fatalf("node 4 holds %d of %d+ shards", held["n4"], shards)
	}
	// Node 4 serves its shards itself: ask it directly, at its epoch.
	ids, _, err := n4.Client().ListShards(ctxT(t), "", "n4", "", 5)
	if err != nil || len(ids) == 0 {
		t.Fatalf("shards held by n4: %v %v", ids, err)
	}
	res, err := n4.Client().Call(api.WithRingEpoch(ctxT(t), rc.waitRing(t, 4)), ids[0], "items:list", map[string]any{"k": strings.TrimPrefix(ids[0], "k=")}, api.ReadOptions{})
	if err != nil || len(res.Rows) == 0 {
		t.Fatalf("n4 serving %s: %v %v", ids[0], res, err)
	}
	rc.checkAll(t, want)

	// A graceful leave: SIGTERM, the node hands everything off, then exits.
	n2 := rc.Node("n2")
	start = time.Now()
	n2.Signal(syscall.SIGTERM)
	if _, ok := n2.Wait(clusterTimeout); !ok {
		t.Fatal("n2 did not exit after SIGTERM")
	}
	t.Logf("n2 left in %v", time.Since(start).Round(time.Millisecond))
	rc.waitRing(t, 3)
	if held := rc.shardsPerNode(t); held["n2"] != 0 {
		t.Fatalf("n2 still holds %d shards after leaving: %v", held["n2"], held)
	}
	close(stop)
	wg.Wait()
	retries := 0
	for _, w := range writers {
		if w.err != nil {
			t.Fatal(w.err)
		}
		ids := make([]int64, len(w.acked))
		for i, id := range w.acked {
			ids[i] = int64(id)
		}
		want[w.k] = ids
		retries += w.retries
	}
	t.Logf("writers: %d retries of retryable errors in all", retries)
	rc.checkAll(t, want)
}

var _ = codes.OK
