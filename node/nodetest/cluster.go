package nodetest

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/router"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc"
)

// Config configures a Cluster; zero fields take the defaults named.
type Config struct {
	// App is the app every node runs: AppSchema by default.
	App *schema.App
	// TargetVoters is the global tier's voter target (3); the first
	// min(n, TargetVoters) nodes of Start bootstrap it as voters, the
	// others join as non-voters.
	TargetVoters int
	// Seed drives the network's faults (drop, delay).
	Seed uint64
	// Cluster configures every node's ring, handoffs and rebalancing;
	// zero fields get short test timers (ring poll 20 ms, a rebalance
	// pass every 300 ms, 4 concurrent moves, weight 1).
	Cluster node.ClusterConfig
	// Fault, when set, is called at the handoffs' crash points with the
	// node's ID (node.ClusterConfig.Fault). A test can block in it and
	// Kill the node meanwhile: when it returns after the kill, that
	// handoff halts there for good, as the killed process would have.
	Fault func(nodeID, point, shardID string)
	// Shards and Global adjust each node's shard host and global-tier
	// configuration (they start from the packages' DefaultLocalConfig).
	Shards func(*shardhost.Config)
	Global func(*raftglobal.Config)
	// NoGateway skips the nodes' loopback gRPC listeners and the Router.
	NoGateway bool
}

// Cluster is N nodes of Lunora in one process over a Network, and a
// gateway Router reaching them over loopback gRPC. Indexes name nodes in
// the order they were created (Start's, then Join's); node i's ID is
// "n<i>". Every helper fails the test on its own errors; everything stops
// when the test ends.
type Cluster struct {
	t   testing.TB
	cfg Config
	// secret guards the loopback node API (New).
	secret *clustersecret.Secret
	App    *schema.App
	Net    *Network
	base   string
	logOn  atomic.Bool

	// Router is the gateway's router over every node's loopback gRPC
	// listener (nil with Config.NoGateway). It is the real router.Router:
	// it takes no injected client, so it does not go through Net, and a
	// partition does not cut it off from a node (Kill does).
	Router *router.Router

	mu          sync.Mutex
	nodes       []*Node
	boot        []raftglobal.Server
	groups      map[string]int // partition groups: Raft and node API
	apiGroups   map[string]int // partition groups of the node API alone
	incarnation uint64
}

// Node is one node: its identity and directory, which outlive its
// processes, and its running process (nil while it is stopped).
type Node struct {
	ID       string
	Dir      string
	RaftAddr string
	// GRPCAddr is the node-API address recorded in the cluster metadata:
	// a loopback address the gateway dials, and the node's address on Net.
	GRPCAddr string
	// Voter: the node bootstrapped the global tier.
	Voter bool
	// Left: the node's last process left the cluster gracefully.
	Left bool

	proc atomic.Pointer[Process]
	ln   net.Listener // between creation and first start
}

// Proc returns the node's running process, or nil.
func (n *Node) Proc() *Process { return n.proc.Load() }

// Running reports whether the node has a process.
func (n *Node) Running() bool { return n.proc.Load() != nil }

// Start starts a cluster of n nodes, waits for a leader and for every
// node to be in the ring, and returns it.
func Start(t testing.TB, n int, cfg Config) *Cluster {
	t.Helper()
	if cfg.App == nil {
		app, err := App()
		if err != nil {
			t.Fatal(err)
		}
		cfg.App = app
	}
	if cfg.TargetVoters < 1 {
		cfg.TargetVoters = 3
	}
	def := node.DefaultClusterConfig()
	if cfg.Cluster.Weight == 0 {
		cfg.Cluster.Weight = def.Weight
	}
	if cfg.Cluster.MaxMoves == 0 {
		cfg.Cluster.MaxMoves = 4
	}
	if cfg.Cluster.RingPoll == 0 {
		cfg.Cluster.RingPoll = 20 * time.Millisecond
	}
	if cfg.Cluster.RebalanceEvery == 0 {
		cfg.Cluster.RebalanceEvery = 300 * time.Millisecond
	}
	// A secret of this cluster's own on the loopback node API: test
	// processes running side by side reuse each other's freed ports, and
	// a call to a node's old port must not reach another test's cluster.
	key := make([]byte, clustersecret.MinLen)
	cryptorand.Read(key)
	secret, err := clustersecret.New([]byte(hex.EncodeToString(key)))
	if err != nil {
		t.Fatalf("nodetest: cluster secret: %v", err)
	}
	c := &Cluster{t: t, cfg: cfg, App: cfg.App, Net: NewNetwork(cfg.Seed), base: t.TempDir(), groups: map[string]int{}, apiGroups: map[string]int{}, secret: secret}
	c.logOn.Store(true)
	t.Cleanup(c.close)
	for i := 0; i < n; i++ {
		nd := c.newNode()
		if i < cfg.TargetVoters {
			nd.Voter = true
			c.boot = append(c.boot, raftglobal.Server{ID: nd.ID, Addr: nd.RaftAddr})
		}
	}
	for i := 0; i < n; i++ {
		c.start(c.nodes[i])
	}
	if !cfg.NoGateway {
		var seeds []string
		for _, nd := range c.nodes {
			seeds = append(seeds, nd.GRPCAddr)
		}
		r, err := router.New(router.Config{App: c.App, Seeds: seeds, RingRefresh: 100 * time.Millisecond, Logger: c.logger("gateway"), DialOptions: []grpc.DialOption{c.secret.DialOption()}})
		if err != nil {
			t.Fatalf("nodetest: router: %v", err)
		}
		r.Start()
		c.Router = r
	}
	c.WaitForLeader(20 * time.Second)
	c.WaitInRing(20*time.Second, c.Indexes()...)
	return c
}

// newNode creates node n<len> with its directory and, with a gateway, its
// loopback listener (so its address is known before it starts).
func (c *Cluster) newNode() *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.nodes)
	nd := &Node{ID: fmt.Sprintf("n%d", i), Dir: filepath.Join(c.base, fmt.Sprintf("n%d", i)), RaftAddr: fmt.Sprintf("raft-n%d", i)}
	nd.GRPCAddr = "inmem-" + nd.ID
	if !c.cfg.NoGateway {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.t.Fatalf("nodetest: listen: %v", err)
		}
		nd.ln, nd.GRPCAddr = ln, ln.Addr().String()
	}
	c.nodes = append(c.nodes, nd)
	return nd
}

// start runs a new process of nd from its directory.
func (c *Cluster) start(nd *Node) {
	c.t.Helper()
	c.mu.Lock()
	c.incarnation++
	inc := c.incarnation
	var boot []raftglobal.Server
	if nd.Voter {
		boot = c.boot
	}
	var seeds []string
	for _, o := range c.nodes {
		if o != nd {
			seeds = append(seeds, o.GRPCAddr)
		}
	}
	c.mu.Unlock()
	p, err := c.build(nd, boot, inc)
	if err != nil {
		c.t.Fatalf("nodetest: start %s: %v", nd.ID, err)
	}
	if !c.cfg.NoGateway {
		ln := nd.ln
		nd.ln = nil
		if ln == nil {
			if ln, err = listenAgain(nd.GRPCAddr); err != nil {
				c.t.Fatalf("nodetest: restart %s: %v", nd.ID, err)
			}
		}
		opts := append(rpc.ServerOptions(), grpc.WaitForHandlers(true))
		p.grpc = grpc.NewServer(append(opts, c.secret.ServerOptions("/lunora.v1.Node/")...)...)
		rpc.RegisterNodeServer(p.grpc, rpc.NewNodeServer(p.Node, c.logger(nd.ID)))
		go p.grpc.Serve(ln)
	}
	c.Net.Register(nd.ID, nd.GRPCAddr, p.Node, p.alive)
	nd.proc.Store(p)
	nd.Left = false
	c.mu.Lock()
	c.reconnectLocked()
	c.mu.Unlock()

	jctx, jcancel := context.WithCancel(p.alive)
	p.joinCancel = jcancel
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.Node.Run(p.alive)
	}()
	go func() {
		defer p.wg.Done()
		defer close(p.joined)
		if err := p.Node.Announce(jctx, nd.Voter, seeds); err != nil {
			return
		}
		p.Node.JoinRing(jctx)
	}()
}

// listenAgain binds a restarted node's gRPC listener to its old address,
// retrying briefly while the port is still held.
func listenAgain(addr string) (net.Listener, error) {
	var err error
	for i := 0; i < 50; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// stop ends nd's process: off the network at once (calls in flight lose
// their answers, new ones are refused), then its goroutines, its Raft
// member and its shard host. Nothing is handed off or left.
func (c *Cluster) stop(nd *Node) {
	p := nd.proc.Swap(nil)
	if p == nil {
		return
	}
	handlers := c.Net.Unregister(nd.GRPCAddr)
	p.stop()
	if p.grpc != nil {
		p.grpc.Stop() // waits for its handlers (WaitForHandlers)
	}
	c.mu.Lock()
	c.reconnectLocked()
	c.mu.Unlock()
	p.trans.Close()
	waited := make(chan struct{})
	go func() { p.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(3 * time.Second):
		// A goroutine halted by Config.Fault never returns, as in a
		// process stopped there; the rest of the process is closed.
		c.logf("nodetest: %s: background work still running 3s after the kill", nd.ID)
	}
	// The process's calls must be over before it is closed and, above
	// all, before a new process of the node opens its directory: a
	// killed process never touches its files again.
	if !handlers(3 * time.Second) {
		c.logf("nodetest: %s: node-API calls still running 3s after the kill", nd.ID)
	}
	if err := p.Global.Close(); err != nil {
		c.logf("nodetest: close the global tier of %s: %v", nd.ID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Host.Shutdown(ctx); err != nil {
		c.logf("nodetest: close the shard host of %s: %v", nd.ID, err)
	}
}

// reconnectLocked wires the Raft transports of every pair of running
// nodes in the same partition group and cuts every other pair.
func (c *Cluster) reconnectLocked() {
	for _, a := range c.nodes {
		pa := a.proc.Load()
		if pa == nil {
			continue
		}
		for _, b := range c.nodes {
			if a == b {
				continue
			}
			if pb := b.proc.Load(); pb != nil && c.groups[a.ID] == c.groups[b.ID] {
				pa.trans.Connect(raft.ServerAddress(b.RaftAddr), pb.trans)
			} else {
				pa.trans.Disconnect(raft.ServerAddress(b.RaftAddr))
			}
		}
	}
	net := map[string]int{}
	for _, nd := range c.nodes {
		net[nd.ID] = c.groups[nd.ID]*1000 + c.apiGroups[nd.ID]
	}
	c.Net.SetGroups(net)
}

// Node returns node i.
func (c *Cluster) Node(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		c.t.Fatalf("nodetest: no node %d (%d nodes)", i, len(c.nodes))
	}
	return c.nodes[i]
}

// Indexes returns every node's index.
func (c *Cluster) Indexes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, len(c.nodes))
	for i := range out {
		out[i] = i
	}
	return out
}

// Running returns the indexes of the nodes with a process.
func (c *Cluster) Running() []int {
	var out []int
	for _, i := range c.Indexes() {
		if c.Node(i).Running() {
			out = append(out, i)
		}
	}
	return out
}

// Kill stops node i abruptly: no leave, no handoff; its directory stays.
func (c *Cluster) Kill(i int) {
	c.stop(c.Node(i))
}

// Restart starts a stopped node i again from its directory, with a new
// incarnation; it announces itself and takes its ring place back.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	nd := c.Node(i)
	if nd.Running() {
		c.t.Fatalf("nodetest: Restart(%d): %s is running", i, nd.ID)
	}
	c.start(nd)
}

// Join adds a new node, which joins the global tier as a non-voter and
// the ring, and returns its index (it does not wait for the join).
func (c *Cluster) Join() int {
	c.t.Helper()
	nd := c.newNode()
	c.start(nd)
	return c.Indexes()[len(c.Indexes())-1]
}

// Leave makes node i leave gracefully, as lunora-node does on SIGTERM:
// its start-up join stops, it leaves the ring handing its shards off and
// then the Raft group (bounded by ctx), and its process stops whatever
// the outcome. It returns node.Leave's count of shards not handed off and
// error; the node counts as Left only when both say it all went.
func (c *Cluster) Leave(ctx context.Context, i int) (int, error) {
	nd := c.Node(i)
	p := nd.Proc()
	if p == nil {
		return 0, fmt.Errorf("nodetest: Leave(%d): %s is not running", i, nd.ID)
	}
	p.joinCancel()
	<-p.joined
	left, err := p.Node.Leave(ctx, node.LeaveOptions{TierTimeout: 10 * time.Second})
	c.stop(nd)
	nd.Left = err == nil && left == 0
	return left, err
}

// Partition cuts the nodes named off from the others, on the node network
// and the Raft transport alike: they reach each other, the rest reach
// each other, nothing crosses. Partitions add up until Heal.
func (c *Cluster) Partition(idx ...int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := 1
	for _, v := range c.groups {
		g = max(g, v+1)
	}
	for _, i := range idx {
		c.groups[c.nodes[i].ID] = g
	}
	c.reconnectLocked()
}

// PartitionNodeAPI is Partition for the node API alone: the Raft
// transport still connects everyone, so the nodes named follow the ring
// and the registry but cannot call, or be called by, the others.
func (c *Cluster) PartitionNodeAPI(idx ...int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := 1
	for _, v := range c.apiGroups {
		g = max(g, v+1)
	}
	for _, i := range idx {
		c.apiGroups[c.nodes[i].ID] = g
	}
	c.reconnectLocked()
}

// Heal removes every partition.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups = map[string]int{}
	c.apiGroups = map[string]int{}
	c.reconnectLocked()
}

// liveness is the harness's view of a node for Status: alive while it
// runs.
func (c *Cluster) liveness(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.nodes {
		if nd.ID == id {
			if nd.Running() {
				return "alive"
			}
			return "dead"
		}
	}
	return ""
}

// Leader returns the index of the running node that leads the global tier
// and answers a strong read, or -1.
func (c *Cluster) Leader() int {
	for _, i := range c.Running() {
		p := c.Node(i).Proc()
		if p == nil || !p.Global.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := p.Global.Read(ctx, api.ReadOptions{Consistency: api.Strong}, raftglobal.Command{SQL: []string{"SELECT 1"}})
		cancel()
		if err == nil {
			return i
		}
	}
	return -1
}

// WaitForLeader waits until a running node leads the global tier and
// returns its index.
func (c *Cluster) WaitForLeader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	c.WaitFor(timeout, func() error {
		if leader = c.Leader(); leader < 0 {
			return errors.New("no leader")
		}
		return nil
	})
	return leader
}

// WaitInRing waits until the leader's ring has the nodes named and every
// one of them has seen itself in it.
func (c *Cluster) WaitInRing(timeout time.Duration, idx ...int) {
	c.t.Helper()
	c.WaitFor(timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, i := range idx {
			nd := c.Node(i)
			p := nd.Proc()
			if p == nil {
				return fmt.Errorf("%s is not running", nd.ID)
			}
			r, err := p.Node.Ring(ctx, 0)
			if err != nil {
				return fmt.Errorf("%s: %w", nd.ID, err)
			}
			if !ringHas(r.Nodes, nd.ID) {
				return fmt.Errorf("%s is not in its own ring (epoch %d)", nd.ID, r.Epoch)
			}
		}
		return nil
	})
}

// WaitFor polls cond until it returns nil and fails the test with its last
// error after timeout.
func (c *Cluster) WaitFor(timeout time.Duration, cond func() error) {
	c.t.Helper()
	if err := Poll(timeout, cond); err != nil {
		c.t.Fatalf("nodetest: not within %v: %v", timeout, err)
	}
}

// Poll calls cond until it returns nil (then nil) or timeout passes (then
// its last error), starting at 5 ms between calls and backing off to
// 100 ms.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	var earlier []string // distinct errors before the last, oldest first
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if msg := err.Error(); len(earlier) == 0 || earlier[len(earlier)-1] != msg {
			earlier = append(earlier, msg)
			if len(earlier) > 4 {
				earlier = earlier[len(earlier)-4:]
			}
		}
		if time.Now().After(deadline) {
			if len(earlier) > 1 {
				// The last answer may be a transient one (no leader for a
				// moment) hiding what kept the condition false.
				return fmt.Errorf("%w (before that: %s)", err, strings.Join(earlier[:len(earlier)-1], "; then "))
			}
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// logger sends a node's logs to the test log (WARN and above; all with
// LUNORA_TEST_LOG=debug) while the test runs.
func (c *Cluster) logger(id string) *slog.Logger {
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
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("test_node", id)
}

func (c *Cluster) logf(format string, args ...any) {
	if c.logOn.Load() {
		c.t.Logf(format, args...)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// close stops the router and every process; it runs when the test ends.
func (c *Cluster) close() {
	if c.Router != nil {
		c.Router.Close()
	}
	var wg sync.WaitGroup
	for _, i := range c.Indexes() {
		nd := c.Node(i)
		if nd.ln != nil {
			nd.ln.Close()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(nd)
		}()
	}
	wg.Wait()
	c.logOn.Store(false)
}

// IDs returns the IDs of the nodes named, sorted.
func (c *Cluster) IDs(idx ...int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, c.Node(i).ID)
	}
	sort.Strings(out)
	return out
}
