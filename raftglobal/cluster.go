package raftglobal

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestCluster is an in-process global tier for tests in any package: nodes
// on raft.InmemTransport with fault injection (Partition/Heal, KillNode,
// RestartNode), each with its own directory under t.TempDir(), closed when
// the test ends. Logs go to t.Log (at WARN; set LUNORA_TEST_LOG=debug for
// more).
type TestCluster struct {
	t         testing.TB
	configure func(*Config)
	logOn     atomic.Bool

	mu     sync.Mutex
	ids    []string
	nodes  map[string]*TestNode
	groups map[string]int // partition group per node; all 0 when healed
	nextGr int
}

// TestNode is one node of a TestCluster.
type TestNode struct {
	ID    string
	Addr  string
	Voter bool
	Dir   string
	// Store is nil while the node is killed.
	Store *Store
	trans *raft.InmemTransport
}

// NewTestCluster starts voters voting nodes (n0, n1, …) that bootstrap
// together and nonVoters non-voting nodes joined through the leader, and
// waits until every node has a leader and has applied the joins.
// configure, when given, adjusts every node's Config (it starts from
// DefaultLocalConfig).
func NewTestCluster(t testing.TB, voters, nonVoters int, configure ...func(*Config)) *TestCluster {
	t.Helper()
	if voters < 1 {
		t.Fatalf("raftglobal: a test cluster needs at least one voter")
	}
	c := &TestCluster{t: t, nodes: map[string]*TestNode{}, groups: map[string]int{}}
	c.logOn.Store(true)
	c.configure = func(cfg *Config) {
		for _, f := range configure {
			f(cfg)
		}
	}
	base := t.TempDir()
	var boot []Server
	for i := 0; i < voters+nonVoters; i++ {
		id := fmt.Sprintf("n%d", i)
		n := &TestNode{ID: id, Addr: "inmem-" + id, Voter: i < voters, Dir: filepath.Join(base, id)}
		c.ids = append(c.ids, id)
		c.nodes[id] = n
		if n.Voter {
			boot = append(boot, Server{ID: id, Addr: n.Addr})
		}
	}
	t.Cleanup(c.Close)
	for _, id := range c.ids {
		if err := c.start(c.nodes[id], boot); err != nil {
			t.Fatalf("raftglobal: start %s: %v", id, err)
		}
	}
	c.reconnect()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range c.ids[voters:] {
		n := c.nodes[id]
		var err error
		for ctx.Err() == nil {
			leader := c.WaitForLeader(20 * time.Second)
			if err = leader.Join(ctx, id, n.Addr, false); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("raftglobal: join %s: %v", id, err)
		}
	}
	leader := c.WaitForLeader(20 * time.Second)
	c.WaitForApplied(leader.Stats().CommitIndex, 20*time.Second)
	return c
}

// AddNode starts a new empty node and joins it through the leader as a
// voter or a non-voter, and returns its ID.
func (c *TestCluster) AddNode(voter bool) string {
	c.t.Helper()
	c.mu.Lock()
	id := fmt.Sprintf("n%d", len(c.ids))
	n := &TestNode{ID: id, Addr: "inmem-" + id, Voter: voter, Dir: filepath.Join(filepath.Dir(c.nodes[c.ids[0]].Dir), id)}
	c.ids = append(c.ids, id)
	c.nodes[id] = n
	if err := c.start(n, nil); err != nil {
		c.mu.Unlock()
		c.t.Fatalf("raftglobal: start %s: %v", id, err)
	}
	c.reconnect()
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if err = c.WaitForLeader(20*time.Second).Join(ctx, id, n.Addr, voter); err == nil {
			return id
		}
	}
	c.t.Fatalf("raftglobal: join %s: %v", id, err)
	return ""
}

func (c *TestCluster) start(n *TestNode, boot []Server) error {
	cfg := DefaultLocalConfig()
	cfg.NodeID = n.ID
	cfg.Dir = n.Dir
	_, n.trans = raft.NewInmemTransportWithTimeout(raft.ServerAddress(n.Addr), 500*time.Millisecond)
	cfg.Transport = n.trans
	cfg.Bootstrap = boot
	cfg.Logger = c.logger(n.ID)
	c.configure(&cfg)
	s, err := Open(cfg)
	if err != nil {
		return err
	}
	n.Store = s
	return nil
}

func (c *TestCluster) logger(id string) *slog.Logger {
	level := slog.LevelWarn
	if strings.EqualFold(os.Getenv("LUNORA_TEST_LOG"), "debug") {
		level = slog.LevelDebug
	}
	w := writerFunc(func(p []byte) (int, error) {
		if c.logOn.Load() {
			c.t.Log(strings.TrimRight(string(p), "\n"))
		}
		return len(p), nil
	})
	var out io.Writer = w
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})).With("test_node", id)
}

// reconnect wires every pair of live nodes in the same partition group and
// cuts every other pair.
func (c *TestCluster) reconnect() {
	for _, a := range c.nodes {
		if a.Store == nil {
			continue
		}
		for _, b := range c.nodes {
			if a == b {
				continue
			}
			if b.Store != nil && c.groups[a.ID] == c.groups[b.ID] {
				a.trans.Connect(raft.ServerAddress(b.Addr), b.trans)
			} else {
				a.trans.Disconnect(raft.ServerAddress(b.Addr))
			}
		}
	}
}

// Partition cuts the given nodes off from the others: they reach each
// other, and the rest reach each other, but no message crosses.
func (c *TestCluster) Partition(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextGr++
	for _, id := range ids {
		c.node(id)
		c.groups[id] = c.nextGr
	}
	c.reconnect()
}

// Heal removes every partition.
func (c *TestCluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups = map[string]int{}
	c.reconnect()
}

// KillNode stops a node as a crash would look to the others: its Store is
// closed (its files stay) and no message reaches it.
func (c *TestCluster) KillNode(id string) {
	c.mu.Lock()
	n := c.node(id)
	s := n.Store
	n.Store = nil
	c.reconnect()
	n.trans.Close()
	c.mu.Unlock()
	if s != nil {
		if err := s.Close(); err != nil {
			c.t.Logf("raftglobal: close %s: %v", id, err)
		}
	}
}

// RestartNode starts a killed node again from its directory, on a fresh
// transport at the same address.
func (c *TestCluster) RestartNode(id string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(id)
	if n.Store != nil {
		c.t.Fatalf("raftglobal: RestartNode(%s): the node is running", id)
	}
	if err := c.start(n, nil); err != nil {
		c.t.Fatalf("raftglobal: restart %s: %v", id, err)
	}
	c.reconnect()
}

func (c *TestCluster) node(id string) *TestNode {
	n, ok := c.nodes[id]
	if !ok {
		c.t.Fatalf("raftglobal: no node %q in the test cluster", id)
	}
	return n
}

// Node returns a node's Store (nil while it is killed).
func (c *TestCluster) Node(id string) *Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node(id).Store
}

// IDs returns every node's ID, voters first.
func (c *TestCluster) IDs() []string { return append([]string(nil), c.ids...) }

// Live returns the IDs of the running nodes.
func (c *TestCluster) Live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range c.ids {
		if c.nodes[id].Store != nil {
			out = append(out, id)
		}
	}
	return out
}

// Followers returns the running voters that are not the leader.
func (c *TestCluster) Followers() []string {
	var out []string
	for _, id := range c.Live() {
		if s := c.Node(id); s != nil && c.nodes[id].Voter && !s.IsLeader() {
			out = append(out, id)
		}
	}
	return out
}

// NonVoters returns the IDs of the nodes started as non-voters.
func (c *TestCluster) NonVoters() []string {
	var out []string
	for _, id := range c.ids {
		if !c.nodes[id].Voter {
			out = append(out, id)
		}
	}
	return out
}

// WaitForLeader waits until a running node is the leader, confirmed by a
// quorum and ready for strong reads, and returns it; the test fails after
// timeout.
func (c *TestCluster) WaitForLeader(timeout time.Duration) *Store {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, id := range c.Live() {
			s := c.Node(id)
			if s == nil || !s.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := s.leaderReady(ctx)
			if err == nil {
				err = waitFuture(ctx, s.raft.VerifyLeader())
			}
			cancel()
			if err == nil {
				return s
			}
		}
		time.Sleep(pollInterval)
	}
	c.t.Fatalf("raftglobal: no leader within %v", timeout)
	return nil
}

// WaitForApplied waits until every running node (or the ones named) has
// applied index idx; the test fails after timeout.
func (c *TestCluster) WaitForApplied(idx uint64, timeout time.Duration, ids ...string) {
	c.t.Helper()
	if len(ids) == 0 {
		ids = c.Live()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, id := range ids {
		s := c.Node(id)
		if s == nil {
			continue
		}
		if err := s.fsm.waitApplied(ctx, idx); err != nil {
			c.t.Fatalf("raftglobal: %s at index %d, not %d, after %v", id, s.AppliedIndex(), idx, timeout)
		}
	}
}

// Checksums returns every running node's checksum, by ID.
func (c *TestCluster) Checksums(ctx context.Context) (map[string]Checksum, error) {
	out := map[string]Checksum{}
	ids := c.Live()
	sort.Strings(ids)
	for _, id := range ids {
		sum, err := c.Node(id).Checksum(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		out[id] = sum
	}
	return out, nil
}

// Close stops every node; it runs at the end of the test.
func (c *TestCluster) Close() {
	var wg sync.WaitGroup
	c.mu.Lock()
	for _, n := range c.nodes {
		if n.Store == nil {
			continue
		}
		s := n.Store
		n.Store = nil
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Close()
		}()
	}
	c.mu.Unlock()
	wg.Wait()
	c.logOn.Store(false)
}
