package e2e_test

// Real-process tests of the global tier: lunora-node serve processes that
// bootstrap one Raft group (lunoratest.StartCluster), fed through the node
// API (rpc.NodeClient, what a gateway uses) and through lunora-gateway over
// HTTP. Raft ports are picked with lunoratest.FreeAddrs, which has a small
// documented race (a port taken between the pick and the node's bind fails
// the node's start, visibly).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// globalOnly keeps the nodes of the global tier's tests out of the ring
// (-weight 0): they host no shards, so graceful leaves add no ring epochs
// to the log these tests compare.
var globalOnly = []string{"-weight", "0"}

const (
	global = schema.GlobalGroup
	// clusterTimeout bounds a cluster-wide condition: an election, a
	// restarted node catching up, every replica converging.
	clusterTimeout = 60 * time.Second
	// globalCallTimeout is above the node's 10s ApplyTimeout, so a write
	// that cannot commit is answered by the node (UNAVAILABLE), not cut
	// off by the client.
	globalCallTimeout = 20 * time.Second
)

func register(ctx context.Context, cl *rpc.NodeClient, userID string) (*api.Result, error) {
	return cl.Call(ctx, global, "users:register", map[string]any{"user_id": userID, "name": "user " + userID}, api.ReadOptions{})
}

// retryUnavailable calls f(1), f(2), … until it returns anything but an
// UNAVAILABLE error, for up to clusterTimeout, and fails t if the last
// error is not nil. UNAVAILABLE is what the global tier answers while a
// leader is being elected — at start, and whenever a leader on a loaded
// 2-core machine misses its 500ms lease and steps down — and what a client
// is told to retry on.
func retryUnavailable(t *testing.T, what string, f func(attempt int) error) {
	t.Helper()
	attempt := 0
	var last error
	err := lunoratest.Poll(clusterTimeout, func() error {
		attempt++
		last = f(attempt)
		if last != nil && api.CodeOf(last) == codes.Unavailable {
			return last
		}
		return nil
	})
	switch {
	case err != nil:
		t.Fatalf("%s: still UNAVAILABLE after %v and %d attempts: %v", what, clusterTimeout, attempt, err)
	case last != nil:
		t.Fatalf("%s: %v (code %v)", what, last, api.CodeOf(last))
	}
}

// mustRegister writes a user through n, retrying on UNAVAILABLE with a
// fresh user_id each time (a write answered UNAVAILABLE may have been
// applied: retrying the same ID could find it "taken"), and returns the
// ID written and the result.
func mustRegister(t *testing.T, n *lunoratest.ClusterNode, prefix string) (string, *api.Result) {
	t.Helper()
	var id string
	var res *api.Result
	retryUnavailable(t, "users:register through "+n.ID, func(attempt int) error {
		id = fmt.Sprintf("%s-%d", prefix, attempt)
		ctx, cancel := context.WithTimeout(t.Context(), globalCallTimeout)
		defer cancel()
		var err error
		res, err = register(ctx, n.Client(), id)
		return err
	})
	if res.Bookmark == 0 {
		t.Fatalf("users:register %q through %s: no bookmark in %+v", id, n.ID, res)
	}
	return id, res
}

// waitWritable waits until a users:register through every one of nodes
// succeeds — there is a leader and every node has the leader's address to
// forward to — and returns the user IDs written.
func waitWritable(t *testing.T, nodes ...*lunoratest.ClusterNode) []string {
	t.Helper()
	var ids []string
	for _, n := range nodes {
		id, _ := mustRegister(t, n, "probe-"+n.ID)
		ids = append(ids, id)
	}
	return ids
}

// userIDs reads every user_id of the users table on one node with a stale
// (local) read; seq is the applied index the read saw.
func userIDs(t *testing.T, n *lunoratest.ClusterNode) (ids []string, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), globalCallTimeout)
	defer cancel()
	res, err := n.Client().Exec(ctx, global, "SELECT user_id FROM users ORDER BY user_id", nil, api.ReadOptions{Consistency: api.Stale})
	if err != nil {
		t.Fatalf("%s: stale SELECT user_id FROM users: %v", n.ID, err)
	}
	for _, r := range res.Rows {
		s, ok := r[0].(string)
		if !ok {
			t.Fatalf("%s: user_id %v is a %T", n.ID, r[0], r[0])
		}
		ids = append(ids, s)
	}
	return ids, res.Seq
}

// writeLog is what the concurrent writers of TestGlobalKillLeaderDuringWrites
// saw.
type writeLog struct {
	mu        sync.Mutex
	attempted map[string]bool
	acked     map[string]uint64 // user_id → bookmark
	ackedVia  map[string]int    // node ID → writes acknowledged through it
	// unavailable counts UNAVAILABLE answers by phase and by message,
	// with addresses and numbers blanked.
	unavailable map[string]int
	unexpected  []string
	count       atomic.Int64 // len(acked)
	phase       atomic.Value // string: "before the kill", ...
	// killedAt is when the leader was killed; firstAfterKill when the first
	// write sent after that was acknowledged.
	killedAt, firstAfterKill time.Time
}

var digits = regexp.MustCompile(`[0-9]+`)

// TestGlobalKillLeaderDuringWrites: three voters, 64 concurrent writers
// spread over the running nodes, SIGKILL of the Raft leader mid-run, a
// restart of it, and then: every acknowledged write is on every replica,
// nothing was written that no one sent, and the replicas' FSM files are
// identical (same applied index, same checksum over every table).
func TestGlobalKillLeaderDuringWrites(t *testing.T) {
	t.Parallel()
	const (
		writers = 64
		// acknowledged writes to wait for before the kill, after it (under
		// the new leader) and after the restart
		phaseAcks = 300
		// writes acknowledged through the restarted node, so forwarding
		// from it works again
		viaRestarted = 20
	)
	b := lunoratest.Build(t)
	c := lunoratest.StartCluster(t, b, chatSchemaFile(t), 3, globalOnly...)
	log := &writeLog{attempted: map[string]bool{}, acked: map[string]uint64{}, ackedVia: map[string]int{}, unavailable: map[string]int{}}
	log.phase.Store("before the kill")
	for _, id := range waitWritable(t, c.Nodes...) {
		log.attempted[id], log.acked[id] = true, 0
	}

	var down [3]atomic.Bool // nodes the writers leave alone
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				var n *lunoratest.ClusterNode
				for k := range 3 {
					if i := (w + j + k) % 3; !down[i].Load() {
						n = c.Nodes[i]
						break
					}
				}
				id := fmt.Sprintf("w%02d-%06d", w, j)
				log.mu.Lock()
				log.attempted[id] = true
				log.mu.Unlock()
				sent := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), globalCallTimeout)
				res, err := register(ctx, n.Client(), id)
				cancel()
				log.mu.Lock()
				switch {
				case err == nil:
					log.acked[id] = res.Bookmark
					log.ackedVia[n.ID]++
					log.count.Add(1)
					if !log.killedAt.IsZero() && sent.After(log.killedAt) && log.firstAfterKill.IsZero() {
						log.firstAfterKill = time.Now()
					}
				case api.CodeOf(err) == codes.Unavailable:
					// A leader change (the kill, or before it a leader
					// that missed its lease on this loaded machine) or the
					// killed node: the write may or may not have been
					// applied; it is not retried (a retry could find it
					// applied: "that user_id is taken").
					log.unavailable[log.phase.Load().(string)+": "+digits.ReplaceAllString(err.Error(), "N")]++
				default:
					log.unexpected = append(log.unexpected, fmt.Sprintf("%s through %s: %v (code %v)", id, n.ID, err, api.CodeOf(err)))
				}
				log.mu.Unlock()
				if err != nil {
					// Most failures are immediate (connection refused, no
					// leader known yet): pause so 64 writers do not spin.
					select {
					case <-stop:
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		}()
	}
	stopped := false
	stopWriters := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopWriters()
	waitAcks := func(what string, n int64) {
		t.Helper()
		lunoratest.WaitFor(t, clusterTimeout, func() error {
			if got := log.count.Load(); got < n {
				return fmt.Errorf("%s: %d writes acknowledged, waiting for %d", what, got, n)
			}
			return nil
		})
	}

	waitAcks("before the kill", phaseAcks)
	var leader *lunoratest.ClusterNode
	var term uint64
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		var err error
		if leader, err = c.Leader(t.Context()); err != nil {
			return err
		}
		st, err := leader.RaftStatus(t.Context())
		term = st.Term
		return err
	})
	li := slices.Index(c.Nodes, leader)
	down[li].Store(true)
	killedAt := log.count.Load()
	log.phase.Store("after the kill")
	leader.Kill()
	log.mu.Lock()
	log.killedAt = time.Now()
	log.mu.Unlock()
	t.Logf("SIGKILLed the leader %s after %d acknowledged writes", leader.ID, killedAt)
	waitAcks("after the leader was killed", killedAt+phaseAcks)
	log.mu.Lock()
	failover := log.firstAfterKill.Sub(log.killedAt)
	log.mu.Unlock()
	if failover < 0 {
		t.Fatalf("%d writes acknowledged since the kill, none of them sent after it", log.count.Load()-killedAt)
	}
	t.Logf("failover: the first write sent after the kill was acknowledged %v after it", failover.Round(time.Millisecond))
	var newLeader *lunoratest.ClusterNode
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		var err error
		newLeader, err = c.Leader(t.Context())
		return err
	})
	if newLeader == leader {
		t.Fatalf("the killed node %s is still the leader", leader.ID)
	}
	// Had leadership moved between the scrape and the kill, a follower
	// would have died and no election been needed.
	if st, err := newLeader.RaftStatus(t.Context()); err != nil || st.Term <= term {
		t.Fatalf("new leader %s: %+v %v; want a term above %d, the killed leader's", newLeader.ID, st, err, term)
	}

	leader.Restart()
	log.phase.Store("after the restart")
	log.mu.Lock()
	viaBefore := log.ackedVia[leader.ID]
	log.mu.Unlock()
	down[li].Store(false)
	restartedAt := log.count.Load()
	waitAcks("after the restart", restartedAt+phaseAcks)
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		log.mu.Lock()
		defer log.mu.Unlock()
		if got := log.ackedVia[leader.ID] - viaBefore; got < viaRestarted {
			return fmt.Errorf("%d writes acknowledged through the restarted %s, want %d", got, leader.ID, viaRestarted)
		}
		return nil
	})
	stopWriters()

	log.mu.Lock()
	defer log.mu.Unlock()
	for i, u := range log.unexpected {
		if i == 10 {
			t.Errorf("... and %d more", len(log.unexpected)-10)
			break
		}
		t.Errorf("unexpected error: %s", u)
	}
	t.Logf("%d writes acknowledged (%v by node), %d attempted; new leader %s", len(log.acked), log.ackedVia, len(log.attempted), newLeader.ID)
	reasons := slices.Sorted(maps.Keys(log.unavailable))
	for _, r := range reasons {
		t.Logf("UNAVAILABLE ×%d %s", log.unavailable[r], r)
	}

	// The restarted node has announced itself (its last write to the log),
	// then every replica reaches the leader's commit index.
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		if !leader.Announced() {
			return fmt.Errorf("the restarted %s has not announced itself to the global tier", leader.ID)
		}
		return nil
	})
	idx := c.WaitConverged(clusterTimeout)

	var first []string
	for _, n := range c.Nodes {
		ids, seq := userIDs(t, n)
		if seq < idx {
			t.Errorf("%s: the stale read saw index %d, below %d, where every node had converged", n.ID, seq, idx)
		}
		have := make(map[string]bool, len(ids))
		for _, id := range ids {
			have[id] = true
			if !log.attempted[id] {
				t.Errorf("%s: user %q is stored but was never written", n.ID, id)
			}
		}
		lost := 0
		for id, bm := range log.acked {
			if !have[id] {
				if lost++; lost <= 10 {
					t.Errorf("%s: acknowledged user %q (bookmark %d) is missing", n.ID, id, bm)
				}
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d of %d acknowledged writes missing", n.ID, lost, len(log.acked))
		}
		if first == nil {
			first = ids
		} else if !slices.Equal(first, ids) {
			t.Errorf("%s holds %d users, %s holds %d: the replicas differ", n.ID, len(ids), c.Nodes[0].ID, len(first))
		}
		t.Logf("%s: %d users at index %d (%d acknowledged, the rest committed but cut off)", n.ID, len(ids), seq, len(log.acked))
	}
	// The function path too, on every replica, for the last write
	// acknowledged (highest bookmark).
	var lastID string
	var lastBM uint64
	for id, bm := range log.acked {
		if bm > lastBM {
			lastID, lastBM = id, bm
		}
	}
	for _, n := range c.Nodes {
		ctx, cancel := context.WithTimeout(t.Context(), globalCallTimeout)
		res, err := n.Client().Call(ctx, global, "users:get", map[string]any{"user_id": lastID}, api.ReadOptions{Consistency: api.Stale})
		cancel()
		if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != lastID {
			t.Errorf("%s: stale users:get %q: %v %+v", n.ID, lastID, err, res)
		}
	}

	// Stop every node at once — SIGINT to all three within microseconds,
	// far below the 1s election timeout, so no new term's entry is written
	// in between — after converging again (a leader that missed its lease
	// since the reads above writes one entry in its new term), and compare
	// the FSM files. (SIGINT stops a node without leaving: SIGTERM would
	// take it out of the ring and the Raft group, which writes entries.)
	idx = c.WaitConverged(clusterTimeout)
	for _, n := range c.Nodes {
		n.Signal(syscall.SIGINT)
	}
	for _, n := range c.Nodes {
		st, ok := n.Wait(30 * time.Second)
		if !ok {
			t.Fatalf("%s still running 30s after SIGINT", n.ID)
		}
		if st.ExitCode() != 0 {
			t.Errorf("%s exited with %v after SIGINT, want 0", n.ID, st)
		}
	}
	sums := map[string]string{}
	for _, n := range c.Nodes {
		fidx, sum, err := lunoratest.FSMChecksum(t.Context(), n.FSMPath())
		if err != nil {
			t.Fatalf("%s: %v", n.ID, err)
		}
		if fidx != idx {
			t.Errorf("%s: the FSM file is at index %d, the cluster converged at %d", n.ID, fidx, idx)
		}
		sums[n.ID] = fmt.Sprintf("%d/%s", fidx, sum)
	}
	for _, n := range c.Nodes[1:] {
		if sums[n.ID] != sums[c.Nodes[0].ID] {
			t.Errorf("FSM checksums differ: %v", sums)
			break
		}
	}
	t.Logf("FSM checksums (index/sha256): %v", sums)
}

// TestGlobalFSMChecksumMatchesStore checks lunoratest.FSMChecksum, which
// the test above compares replicas with, against (*raftglobal.Store).
// Checksum on an in-process cluster, with every SQLite type and NULL in a
// table: the two must agree on each node's file once it is closed.
func TestGlobalFSMChecksumMatchesStore(t *testing.T) {
	t.Parallel()
	dirs := map[string]string{}
	var mu sync.Mutex
	c := raftglobal.NewTestCluster(t, 3, 0, func(cfg *raftglobal.Config) {
		cfg.Schema = []string{`CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, r REAL, s TEXT, b BLOB, x)`}
		mu.Lock()
		dirs[cfg.NodeID] = cfg.Dir
		mu.Unlock()
	})
	leader := c.WaitForLeader(clusterTimeout)
	ctx := t.Context()
	for i := range 50 {
		args := map[string]any{"id": int64(i), "r": float64(i) / 3, "s": fmt.Sprintf("row %d \"q\"", i), "b": []byte{byte(i), 0, 255}, "x": nil}
		if i%2 == 0 {
			args["x"] = "text"
		}
		if _, err := leader.Write(ctx, raftglobal.Command{SQL: []string{"INSERT INTO t (id, r, s, b, x) VALUES (:id, :r, :s, :b, :x)"}, Args: args}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := leader.Write(ctx, raftglobal.Command{SQL: []string{"INSERT INTO t (id) VALUES (1000)"}})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitForApplied(res.Seq, clusterTimeout)
	want, err := c.Checksums(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Kill followers first, so no new leader writes an entry.
	ids := append(c.Followers(), leader.NodeID())
	for _, id := range ids {
		c.KillNode(id)
	}
	for _, id := range ids {
		idx, sum, err := lunoratest.FSMChecksum(ctx, filepath.Join(dirs[id], "fsm", "global.db"))
		if err != nil {
			t.Fatal(err)
		}
		if w := want[id]; idx != w.Index || sum != w.Sum {
			t.Errorf("%s: FSMChecksum = %d/%s, Store.Checksum = %d/%s", id, idx, sum, w.Index, w.Sum)
		}
	}
	if want[ids[0]].Sum != want[ids[2]].Sum {
		t.Errorf("the in-process replicas differ: %v", want)
	}
}

// httpAnswer is an answer of the gateway's HTTP API with the global
// tier's fields.
type httpAnswer struct {
	Status  int
	Header  http.Header
	Body    []byte
	Elapsed time.Duration
	Result  struct {
		Columns   []string `json:"columns"`
		Rows      [][]any  `json:"rows"`
		CommitSeq uint64   `json:"commit_seq"`
		ShardID   string   `json:"shard_id"`
		Bookmark  uint64   `json:"bookmark"`
	}
	Error lunoratest.ErrorBody
}

func (a *httpAnswer) String() string {
	return fmt.Sprintf("HTTP %d %s (after %v)", a.Status, bytes.TrimSpace(a.Body), a.Elapsed.Round(time.Millisecond))
}

// post sends body as JSON to the gateway at addr, with header (name,
// value pairs), and decodes the answer.
func post(t *testing.T, addr, path string, body map[string]any, header ...string) *httpAnswer {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s %s: %v", path, data, err)
	}
	defer resp.Body.Close()
	a := &httpAnswer{Status: resp.StatusCode, Header: resp.Header}
	a.Body, err = io.ReadAll(resp.Body)
	a.Elapsed = time.Since(start)
	if err != nil {
		t.Fatalf("POST %s %s: %v", path, data, err)
	}
	dec := json.NewDecoder(bytes.NewReader(a.Body))
	dec.UseNumber()
	if a.Status == http.StatusOK {
		err = dec.Decode(&a.Result)
	} else {
		var e struct{ Error *lunoratest.ErrorBody }
		if err = dec.Decode(&e); err == nil && e.Error != nil {
			a.Error = *e.Error
		}
	}
	if err != nil {
		t.Fatalf("POST %s %s: undecodable answer %s: %v", path, data, a, err)
	}
	return a
}

// registerHTTP writes a user through the gateway at addr, retrying on 503
// with a fresh user_id (see mustRegister), checks the bookmark is in the
// body and the x-lunora-bookmark header, and returns the ID and answer.
func registerHTTP(t *testing.T, addr, prefix string) (string, *httpAnswer) {
	t.Helper()
	var id string
	var a *httpAnswer
	retryUnavailable(t, "users:register through the gateway", func(attempt int) error {
		id = fmt.Sprintf("%s-%d", prefix, attempt)
		a = post(t, addr, "/v1/call", map[string]any{"function": "users:register", "args": map[string]any{"user_id": id, "name": "N"}})
		if a.Status == http.StatusServiceUnavailable {
			return api.New(codes.Unavailable, a.String())
		}
		return nil
	})
	if a.Status != http.StatusOK || a.Result.Bookmark == 0 || a.Header.Get("x-lunora-bookmark") != fmt.Sprint(a.Result.Bookmark) {
		t.Fatalf("users:register %q through the gateway: %s (header %q); want 200 with the bookmark in the body and the x-lunora-bookmark header", id, a, a.Header.Get("x-lunora-bookmark"))
	}
	return id, a
}

// expectError checks an answer's status and code and that its message
// contains every one of words (case-insensitive).
func expectError(t *testing.T, what string, a *httpAnswer, status int, code string, words ...string) {
	t.Helper()
	if a.Status != status || a.Error.Code != code {
		t.Errorf("%s: %s, want HTTP %d %s", what, a, status, code)
		return
	}
	for _, w := range words {
		if !strings.Contains(strings.ToLower(a.Error.Message), strings.ToLower(w)) {
			t.Errorf("%s: message %q does not mention %q", what, a.Error.Message, w)
		}
	}
}

// TestGlobalQuorumLossThroughGateway: bad input and faults through a real
// lunora-gateway (HTTP) in front of one node of three voters. Bad
// arguments, clock-reading admin SQL and a bookmark from the future are
// answered at once with 400s; with two of the three nodes killed a write
// answers 503 UNAVAILABLE within a bounded time, and a stale read still
// answers on the survivor.
func TestGlobalQuorumLossThroughGateway(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	schemaPath := chatSchemaFile(t)
	c := lunoratest.StartCluster(t, b, schemaPath, 3, globalOnly...)
	survivor := c.Nodes[0]
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schemaPath, survivor.GRPCAddr()))
	waitWritable(t, survivor)
	call := func(fn string, args map[string]any, extra ...any) *httpAnswer {
		t.Helper()
		body := map[string]any{"function": fn, "args": args}
		for i := 0; i+1 < len(extra); i += 2 {
			body[extra[i].(string)] = extra[i+1]
		}
		return post(t, gw.HTTPAddr(), "/v1/call", body)
	}

	before, w := registerHTTP(t, gw.HTTPAddr(), "before-loss")

	expectError(t, "users:register without name", call("users:register", map[string]any{"user_id": "x"}), 400, "INVALID_ARGUMENT", "name")
	expectError(t, "users:register with an unknown argument", call("users:register", map[string]any{"user_id": "x", "name": "X", "age": 3}), 400, "INVALID_ARGUMENT", "age")
	expectError(t, "users:register with a number for user_id", call("users:register", map[string]any{"user_id": 12, "name": "X"}), 400, "INVALID_ARGUMENT", "user_id")
	expectError(t, "users:get with consistency \"eventual\"", call("users:get", map[string]any{"user_id": "x"}, "consistency", "eventual"), 400, "INVALID_ARGUMENT", "consistency")
	expectError(t, "users:get with consistency bookmark and no bookmark", call("users:get", map[string]any{"user_id": "x"}, "consistency", "bookmark"), 400, "INVALID_ARGUMENT", "bookmark")

	clock := post(t, gw.HTTPAddr(), "/v1/sql", map[string]any{"shard_id": global,
		"sql": "INSERT INTO users (user_id, name, joined_at) VALUES ('clock', 'c', CAST(strftime('%s', datetime('now')) AS INTEGER))"})
	expectError(t, "admin SQL with datetime('now') on __global__", clock, 400, "INVALID_ARGUMENT", "lunora_now")
	if n := post(t, gw.HTTPAddr(), "/v1/sql", map[string]any{"shard_id": global, "sql": "SELECT count(*) FROM users WHERE user_id = 'clock'"}); n.Status != 200 || len(n.Result.Rows) != 1 || fmt.Sprint(n.Result.Rows[0][0]) != "0" {
		t.Errorf("after the refused clock write: %s, want a count of 0", n)
	}

	future := call("users:get", map[string]any{"user_id": before}, "consistency", "bookmark", "bookmark", w.Result.Bookmark+1_000_000)
	expectError(t, "a bookmark from the future", future, 400, "FAILED_PRECONDITION", "bookmark")
	if future.Elapsed > 5*time.Second {
		t.Errorf("a bookmark from the future took %v to refuse, want < 5s", future.Elapsed)
	}
	t.Logf("bookmark from the future refused in %v", future.Elapsed.Round(time.Millisecond))

	// No quorum: kill the two other voters, wait until the survivor has
	// noticed (it campaigns: Candidate), then write.
	for _, n := range c.Nodes[1:] {
		n.Kill()
	}
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		st, err := survivor.RaftStatus(t.Context())
		if err != nil {
			return err
		}
		if st.State != "Candidate" {
			return fmt.Errorf("%s is %s, waiting for it to campaign", survivor.ID, st.State)
		}
		return nil
	})
	// The gateway's RequestTimeout and the node's ApplyTimeout are both
	// 10s; the node gives up waiting for a leader at 9/10 of the caller's
	// time left, so its UNAVAILABLE reaches the gateway before the
	// gateway's own deadline (504) fires.
	noQuorum := call("users:register", map[string]any{"user_id": "after-loss", "name": "Bob"})
	expectError(t, "a write without a quorum", noQuorum, 503, "UNAVAILABLE", "leader")
	if noQuorum.Elapsed > 30*time.Second {
		t.Errorf("a write without a quorum took %v to fail, want < 30s", noQuorum.Elapsed)
	}
	t.Logf("write without a quorum: %s", noQuorum)

	strong := call("users:get", map[string]any{"user_id": before}, "consistency", "strong")
	expectError(t, "a strong read without a quorum", strong, 503, "UNAVAILABLE")
	t.Logf("strong read without a quorum: %s", strong)

	stale := call("users:get", map[string]any{"user_id": before}, "consistency", "stale")
	if stale.Status != 200 || len(stale.Result.Rows) != 1 || stale.Result.Rows[0][0] != before {
		t.Errorf("a stale read on the survivor: %s, want the row of %s", stale, before)
	}
	if stale.Elapsed > 5*time.Second {
		t.Errorf("a stale read without a quorum took %v", stale.Elapsed)
	}
}

// TestGlobalNonVoterBookmarkReadAndRemove: a fourth node joins three voters
// as a non-voter (-join); a write made through node 1 is read on it with
// the write's bookmark (node API and, through a gateway, the
// x-lunora-bookmark header) and with a strong read, which it forwards to
// the leader; then "lunora-node remove-node" takes it out of the Raft group.
func TestGlobalNonVoterBookmarkReadAndRemove(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	schemaPath := chatSchemaFile(t)
	c := lunoratest.StartCluster(t, b, schemaPath, 3, globalOnly...)
	n1 := c.Nodes[0]
	waitWritable(t, n1)
	n4 := c.AddNode("n4", n1.GRPCAddr())
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		if !n4.Announced() {
			return errors.New("n4 has not joined the global tier yet")
		}
		return nil
	})
	if st, err := n4.RaftStatus(t.Context()); err != nil || st.State != "Follower" {
		t.Fatalf("n4 after joining: %+v %v, want a Follower", st, err)
	}
	// get reads a user on n. A strong read is retried on UNAVAILABLE (a
	// leader change); a bookmark read is not: the replica must reach the
	// bookmark within the node's MaxReadWait.
	get := func(n *lunoratest.ClusterNode, id string, read api.ReadOptions) *api.Result {
		t.Helper()
		var res *api.Result
		once := func(int) error {
			ctx, cancel := context.WithTimeout(t.Context(), globalCallTimeout)
			defer cancel()
			var err error
			res, err = n.Client().Call(ctx, global, "users:get", map[string]any{"user_id": id}, read)
			return err
		}
		what := fmt.Sprintf("users:get %q on %s with %+v", id, n.ID, read)
		if read.Consistency == api.Strong {
			retryUnavailable(t, what, once)
		} else if err := once(1); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return res
	}
	seen := func(res *api.Result, id string) bool {
		return len(res.Rows) == 1 && res.Rows[0][0] == id
	}

	t.Run("BookmarkRead", func(t *testing.T) {
		for i := range 5 {
			id, w := mustRegister(t, n1, fmt.Sprintf("bm-%d", i))
			res := get(n4, id, api.ReadOptions{Consistency: api.Bookmark, Bookmark: w.Bookmark})
			if !seen(res, id) || res.Seq < w.Bookmark {
				t.Fatalf("bookmark read of %q on n4 (bookmark %d): rows %v at index %d", id, w.Bookmark, res.Rows, res.Seq)
			}
		}
	})

	t.Run("BookmarkHeaderThroughGateway", func(t *testing.T) {
		gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schemaPath, n4.GRPCAddr()))
		// The write goes through n4 (forwarded to the leader), which may
		// answer before n4 has applied it: the bookmark closes that gap.
		for i := range 5 {
			id, w := registerHTTP(t, gw.HTTPAddr(), fmt.Sprintf("hdr-%d", i))
			bm := w.Header.Get("x-lunora-bookmark")
			r := post(t, gw.HTTPAddr(), "/v1/call", map[string]any{"function": "users:get", "args": map[string]any{"user_id": id}}, "x-lunora-bookmark", bm)
			if r.Status != 200 || len(r.Result.Rows) != 1 || r.Result.Rows[0][0] != id || r.Result.CommitSeq < w.Result.Bookmark {
				t.Fatalf("users:get %q with x-lunora-bookmark %s on n4's gateway: %s", id, bm, r)
			}
		}
	})

	t.Run("StrongReadForwarded", func(t *testing.T) {
		for i := range 5 {
			id, _ := mustRegister(t, n1, fmt.Sprintf("strong-%d", i))
			if res := get(n4, id, api.ReadOptions{Consistency: api.Strong}); !seen(res, id) {
				t.Fatalf("strong read of %q on n4, right after the write: rows %v at index %d", id, res.Rows, res.Seq)
			}
		}
	})

	t.Run("RemoveNode", func(t *testing.T) {
		// remove runs the command; it is idempotent, so a failure (a
		// leader change: "retry") is retried.
		remove := func() {
			t.Helper()
			var r lunoratest.Result
			err := lunoratest.Poll(clusterTimeout, func() error {
				r = lunoratest.Run(t, lunoratest.Spec{Name: "lunora-node remove-node", Path: b.Node, Args: []string{"remove-node", "-node", n1.GRPCAddr(), "n4"}, CheckRace: b.Race}, 60*time.Second)
				if r.ExitCode != 0 {
					return fmt.Errorf("exit %d: %s%s", r.ExitCode, r.Stdout, r.Stderr)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("lunora-node remove-node -node %s n4: %v", n1.GRPCAddr(), err)
			}
		}
		remove()
		nodeState := func() string {
			t.Helper()
			var res *api.Result
			retryUnavailable(t, "strong read of __lunora_nodes", func(int) error {
				ctx, cancel := context.WithTimeout(t.Context(), globalCallTimeout)
				defer cancel()
				var err error
				res, err = n1.Client().Exec(ctx, global, "SELECT state FROM __lunora_nodes WHERE id = 'n4'", nil, api.ReadOptions{Consistency: api.Strong})
				return err
			})
			if len(res.Rows) != 1 {
				t.Fatalf("__lunora_nodes row of n4: %+v", res)
			}
			s, _ := res.Rows[0][0].(string)
			return s
		}
		if s := nodeState(); s != "removed" {
			t.Errorf("n4 after remove-node: state %q in __lunora_nodes, want removed", s)
		}
		// Out of the Raft configuration, n4 is no longer replicated to: a
		// write's bookmark is applied on the voter n2 but never on n4,
		// whose bookmark read gives up (UNAVAILABLE after the node's
		// MaxReadWait, 5s). Its own Raft does not stop, though
		// (DESIGN.md says "a removed node stops its Raft"; hashicorp/raft
		// only applies ShutdownOnRemove on a leader removing itself): it
		// stays a leaderless Follower and keeps serving stale reads. Not
		// asserted here; logged.
		after, w := mustRegister(t, n1, "after-remove")
		bm := api.ReadOptions{Consistency: api.Bookmark, Bookmark: w.Bookmark}
		if res := get(c.Node("n2"), after, bm); !seen(res, after) {
			t.Fatalf("bookmark read on n2 after removing n4: %v", res.Rows)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), globalCallTimeout)
		defer cancel()
		res, err := n4.Client().Call(ctx, global, "users:get", map[string]any{"user_id": after}, bm)
		if api.CodeOf(err) != codes.Unavailable {
			t.Errorf("bookmark read on the removed n4: %+v %v (code %v), want UNAVAILABLE: not replicated to any more", res, err, api.CodeOf(err))
		}
		st, _ := n4.RaftStatus(t.Context())
		t.Logf("removed n4: bookmark read refused after %v (%v); its Raft is %s at index %d", time.Since(start).Round(time.Millisecond), err, st.State, st.Applied)
		// Removing it again is a no-op that succeeds.
		remove()

		// Restarted with its data and -join, it joins again and catches up.
		n4.Terminate(30 * time.Second)
		n4.Restart()
		lunoratest.WaitFor(t, clusterTimeout, func() error {
			if !n4.Announced() {
				return errors.New("the restarted n4 has not joined again")
			}
			return nil
		})
		if s := nodeState(); s != "up" {
			t.Errorf("n4 after joining again: state %q in __lunora_nodes, want up", s)
		}
		if res := get(n4, after, bm); !seen(res, after) {
			t.Errorf("bookmark read on n4 after it joined again: %v at index %d", res.Rows, res.Seq)
		}
	})
}
