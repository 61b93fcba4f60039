package lunoratest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc"
)

// FreeAddrs returns n distinct loopback addresses ("127.0.0.1:port") whose
// ports were free a moment ago: it listens on 127.0.0.1:0 n times, keeping
// every listener open until all n are picked (so the n ports differ), then
// closes them.
//
// Raft needs its advertised address before it starts — every voter is
// given the whole -bootstrap list up front — so, unlike the gRPC and HTTP
// listeners, its port cannot be left to the OS. This leaves a small race:
// another process may bind one of the ports between the close here and the
// node's own bind. The node then fails to start ("address already in use")
// and the test fails with its stderr; it is not retried. To keep that race
// small the ports come from below the kernel's ephemeral range: every
// listener on port 0 and every outgoing connection of every process draws
// from that range, and one of them once took a port picked here.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	out := make([]string, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	lo, hi := 10000, ephemeralLow()-1
	for range n {
		var ln net.Listener
		var err error
		for try := 0; try < 64 && hi-lo > 1000; try++ {
			ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
			if err == nil {
				break
			}
		}
		if ln == nil {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			t.Fatalf("pick a free port: %v", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux;
// 32768, its default, elsewhere).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo < 1024 {
		return 32768
	}
	return lo
}

// ClusterNode is one lunora-node process of a Cluster.
type ClusterNode struct {
	*Process
	ID       string
	RaftAddr string
	// Voter reports whether the node was started in the -bootstrap list.
	Voter bool

	client *rpc.NodeClient
	tls    *ClusterTLS // nil: plaintext
}

// Cluster is a global tier of real lunora-node processes on loopback: the
// voters bootstrap together (-bootstrap with every voter's id=raft-addr),
// later nodes join through running ones (-join) as non-voters.
type Cluster struct {
	t      testing.TB
	b      *Binaries
	schema string
	extra  []string
	Nodes  []*ClusterNode
	// TLS is the cluster's CA and certificates when it runs with mutual
	// TLS (ClusterOptions.TLS); nil for plaintext.
	TLS *ClusterTLS
	// Secret is the cluster secret when it runs with one
	// (ClusterOptions.Secret); nil otherwise.
	Secret *ClusterSecret
}

// ClusterOptions are StartClusterWith's choices.
type ClusterOptions struct {
	// TLS, when set, runs the cluster with mutual TLS: every node gets a
	// certificate of TLS's CA (-tls-ca, -tls-cert, -tls-key) and its gossip
	// key; node clients (ClusterNode.Client, Metrics) present one.
	TLS *ClusterTLS
	// Secret, when set, gives every node the cluster secret
	// (-cluster-secret-file); node clients (ClusterNode.Client) send it.
	// With TLS too, both are required.
	Secret *ClusterSecret
	// Args are added to every node's flags.
	Args []string
}

// StartCluster starts voters lunora-node serve processes with IDs n1, n2,
// … that bootstrap one global tier, each with its own data directory and
// Raft port (see FreeAddrs), plus extraArgs. It returns once every process
// has printed LUNORA_READY; it does not wait for a leader (see
// WaitForLeader). Everything is killed when the test ends.
func StartCluster(t testing.TB, b *Binaries, schemaPath string, voters int, extraArgs ...string) *Cluster {
	t.Helper()
	return StartClusterWith(t, b, schemaPath, voters, ClusterOptions{Args: extraArgs})
}

// StartClusterWith is StartCluster with options (mutual TLS, a cluster
// secret).
func StartClusterWith(t testing.TB, b *Binaries, schemaPath string, voters int, opts ClusterOptions) *Cluster {
	t.Helper()
	c := &Cluster{t: t, b: b, schema: schemaPath, extra: opts.Args, TLS: opts.TLS, Secret: opts.Secret}
	addrs := FreeAddrs(t, voters)
	boot := make([]string, voters)
	for i := range voters {
		boot[i] = fmt.Sprintf("n%d=%s", i+1, addrs[i])
	}
	for i := range voters {
		c.start(fmt.Sprintf("n%d", i+1), addrs[i], true, nil, "-bootstrap", strings.Join(boot, ","))
	}
	return c
}

// AddNode starts one more node, id, that joins the global tier as a
// non-voter through the node-API addresses seeds.
func (c *Cluster) AddNode(id string, seeds ...string) *ClusterNode {
	c.t.Helper()
	return c.start(id, FreeAddrs(c.t, 1)[0], false, nil, "-join", strings.Join(seeds, ","))
}

// AddNodeArgs is AddNode with args added to this node's flags (besides
// the cluster's extra arguments, which come after them).
func (c *Cluster) AddNodeArgs(id string, args []string, seeds ...string) *ClusterNode {
	c.t.Helper()
	return c.start(id, FreeAddrs(c.t, 1)[0], false, nil, append([]string{"-join", strings.Join(seeds, ",")}, args...)...)
}

// AddNodeEnv is AddNode with env added to the node's environment (see
// Process.SetEnv to change it for a restart).
func (c *Cluster) AddNodeEnv(id string, env []string, seeds ...string) *ClusterNode {
	c.t.Helper()
	return c.start(id, FreeAddrs(c.t, 1)[0], false, env, "-join", strings.Join(seeds, ","))
}

func (c *Cluster) start(id, raftAddr string, voter bool, env []string, args ...string) *ClusterNode {
	c.t.Helper()
	all := append([]string{"serve", "-schema", c.schema, "-node-id", id, "-raft-addr", raftAddr}, args...)
	all = append(all, c.extra...)
	if c.TLS != nil {
		all = append(all, c.TLS.NodeArgs(id)...)
	}
	if c.Secret != nil {
		all = append(all, c.Secret.Args()...)
	}
	spec := NodeSpec(c.t, c.b, all...)
	spec.Name = "lunora-node/" + id
	spec.Env = env
	n := &ClusterNode{Process: Start(c.t, spec), ID: id, RaftAddr: raftAddr, Voter: voter, tls: c.TLS}
	if got := n.Ready().Fields["raft"]; got != raftAddr {
		c.t.Fatalf("%s: LUNORA_READY says raft=%s, want %s", id, got, raftAddr)
	}
	var dial []grpc.DialOption
	if c.TLS != nil {
		dial = c.TLS.DialOptions()
	}
	if c.Secret != nil {
		dial = append(dial, c.Secret.DialOptions()...)
	}
	cl, err := rpc.NewNodeClient(n.GRPCAddr(), dial...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	n.client = cl
	c.Nodes = append(c.Nodes, n)
	return n
}

// Node returns the node with the given ID; the test fails if there is none.
func (c *Cluster) Node(id string) *ClusterNode {
	c.t.Helper()
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	c.t.Fatalf("no node %q in the cluster", id)
	return nil
}

// Running returns the nodes whose current run has not exited.
func (c *Cluster) Running() []*ClusterNode {
	var out []*ClusterNode
	for _, n := range c.Nodes {
		if !n.current().exited() {
			out = append(out, n)
		}
	}
	return out
}

// Client is a node-API client of the node (the one gateways use). A client
// keeps working across Restart: gRPC reconnects (its backoff is capped at
// 500 ms, see rpc.NewNodeClient).
func (n *ClusterNode) Client() *rpc.NodeClient { return n.client }

// FSMPath is the node's global-tier SQLite file:
// <data>/raft/fsm/global.db.
func (n *ClusterNode) FSMPath() string {
	return filepath.Join(n.DataDir(), "raft", "fsm", "global.db")
}

// Announced reports whether the current run has logged that it is a known
// member of the global tier (node.Announce succeeded: it is in the Raft
// configuration and its addresses are in the cluster metadata).
func (n *ClusterNode) Announced() bool {
	return strings.Contains(n.Stderr(), "announced to the global tier")
}

// Metrics scrapes the node's /metrics and returns every sample, keyed by
// its name and labels as written, e.g.
// `lunora_global_raft_state{state="Leader"}`.
func (n *ClusterNode) Metrics(ctx context.Context) (map[string]float64, error) {
	scheme, hc := "http", http.DefaultClient
	if n.tls != nil {
		scheme, hc = "https", n.tls.HTTPClient()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+n.HTTPAddr()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: GET /metrics: HTTP %d %s", n.ID, resp.StatusCode, b)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads Prometheus' text format: "name{labels} value" lines.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[strings.TrimSpace(line[:i])] = v
	}
	return out, sc.Err()
}

// RaftStatus is what a node's metrics say about its member of the global
// tier.
type RaftStatus struct {
	State                      string // Follower, Candidate, Leader, Shutdown
	Term                       uint64
	LastIndex, Commit, Applied uint64
}

// RaftStatus scrapes the node's lunora_global_raft_* gauges.
func (n *ClusterNode) RaftStatus(ctx context.Context) (RaftStatus, error) {
	m, err := n.Metrics(ctx)
	if err != nil {
		return RaftStatus{}, err
	}
	var st RaftStatus
	for _, s := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
		if m[`lunora_global_raft_state{state="`+s+`"}`] == 1 {
			st.State = s
		}
	}
	if st.State == "" {
		return st, fmt.Errorf("%s: no lunora_global_raft_state gauge is 1", n.ID)
	}
	st.Term = uint64(m["lunora_global_raft_term"])
	st.LastIndex = uint64(m["lunora_global_raft_last_index"])
	st.Commit = uint64(m["lunora_global_raft_commit_index"])
	st.Applied = uint64(m["lunora_global_raft_applied_index"])
	return st, nil
}

// Leader returns the running node whose metrics say it is the Raft leader
// (the one in the highest term, should two say so), or an error.
func (c *Cluster) Leader(ctx context.Context) (*ClusterNode, error) {
	var (
		leader *ClusterNode
		term   uint64
		errs   []string
	)
	for _, n := range c.Running() {
		st, err := n.RaftStatus(ctx)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if st.State == "Leader" && (leader == nil || st.Term > term) {
			leader, term = n, st.Term
		}
	}
	if leader == nil {
		return nil, fmt.Errorf("no running node reports itself leader %v", errs)
	}
	return leader, nil
}

// WaitConverged waits until the nodes (every running one when none are
// named) have all applied the same index, and that index is the leader's
// commit index and last log index (so nothing is in flight), and returns
// it. It fails the test after timeout.
func (c *Cluster) WaitConverged(timeout time.Duration, nodes ...*ClusterNode) uint64 {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.Running()
	}
	var idx uint64
	WaitFor(c.t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		leader, err := c.Leader(ctx)
		if err != nil {
			return err
		}
		ls, err := leader.RaftStatus(ctx)
		if err != nil {
			return err
		}
		if ls.Commit != ls.LastIndex || ls.Applied != ls.Commit {
			return fmt.Errorf("leader %s: last %d, commit %d, applied %d", leader.ID, ls.LastIndex, ls.Commit, ls.Applied)
		}
		for _, n := range nodes {
			st, err := n.RaftStatus(ctx)
			if err != nil {
				return err
			}
			if st.Applied != ls.Commit {
				return fmt.Errorf("%s (%s) applied %d, leader %s committed %d", n.ID, st.State, st.Applied, leader.ID, ls.Commit)
			}
		}
		idx = ls.Commit
		return nil
	})
	return idx
}
