package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc"
)

// showStatus prints the cluster: the ring as one node knows it, completed
// by asking every recorded node (its moves under way; whether it answers,
// where no gossip says if it is alive):
//
//	lunora-node status -node ADDR [-shard ID] [-wait-ring N] [-wait-node ID] [-wait D]
func showStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lunora-node status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("node", "127.0.0.1:7070", "node-API address of any running node")
	shard := fs.String("shard", "", "also say who owns (ring) and who holds (registry) this shard, e.g. room_id=r1")
	waitRing := fs.Int("wait-ring", 0, "first wait until the ring has at least this many nodes, every one of them alive, and the global tier a leader")
	waitNode := fs.String("wait-node", "", "first wait until this node is in the ring and alive, and the global tier has a leader")
	var tlsFlags clusterTLSFlags
	tlsFlags.register(fs)
	wait := fs.Duration("wait", 30*time.Second, "with -wait-ring or -wait-node: how long to wait before printing what there is and failing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	dial, _, _, err := tlsFlags.client()
	if err != nil {
		return err
	}
	nodes := &nodeClients{m: map[string]*rpc.NodeClient{}, dial: dial}
	defer nodes.close()
	c, err := nodes.get(*addr)
	if err != nil {
		return err
	}
	gather := func(ctx context.Context) (*api.Status, error) {
		st, err := c.Status(ctx)
		if err != nil {
			return nil, err
		}
		rpc.GatherCluster(ctx, st, time.Second, func(ctx context.Context, addr string) (*api.Status, error) {
			n, err := nodes.get(addr)
			if err != nil {
				return nil, err
			}
			return n.Status(ctx)
		})
		return st, nil
	}
	var st *api.Status
	if *waitRing > 0 || *waitNode != "" {
		deadline := time.Now().Add(*wait)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err = gather(ctx)
			cancel()
			why := ringShort(st, err, *waitRing, *waitNode)
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				if st != nil {
					printStatus(stdout, st)
				}
				return fmt.Errorf("after %v: %s", *wait, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err = gather(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
	printStatus(stdout, st)
	if *shard == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	loc, err := c.LocateShard(ctx, *shard)
	if err != nil {
		return err
	}
	printLocation(stdout, loc, st)
	return nil
}

// ringShort says why st is not yet a ring of at least n live nodes that
// includes node id (when set) and has a leader ("" when it is).
func ringShort(st *api.Status, err error, n int, id string) string {
	switch {
	case err != nil:
		return err.Error()
	case st.Cluster == nil:
		return "the node runs no cluster metadata"
	case len(st.Cluster.Ring.Nodes) < n:
		return fmt.Sprintf("the ring has %d nodes at epoch %d, want %d", len(st.Cluster.Ring.Nodes), st.Cluster.Ring.Epoch, n)
	}
	found := id == ""
	for _, m := range st.Cluster.Ring.Nodes {
		if !live(m.Alive) {
			return fmt.Sprintf("node %s of the ring is %s", m.ID, m.Alive)
		}
		found = found || m.ID == id
	}
	if !found {
		return fmt.Sprintf("node %s is not in the ring at epoch %d", id, st.Cluster.Ring.Epoch)
	}
	for _, m := range st.Cluster.Ring.Members {
		if m.Raft == api.RaftLeader {
			return ""
		}
	}
	return "the global tier has no leader yet"
}

func live(alive string) bool { return alive == "alive" || alive == rpc.Reachable }

func printStatus(w io.Writer, st *api.Status) {
	fmt.Fprintf(w, "node %s (%s) version %s: %d shards on disk, %d active\n", st.NodeID, st.NodeAddress, st.Version, st.ShardsOnDisk, st.ActiveShards)
	c := st.Cluster
	if c == nil {
		return
	}
	fmt.Fprintf(w, "ring epoch %d: %d nodes in the ring, %d recorded; moves in flight: %d\n", c.Ring.Epoch, len(c.Ring.Nodes), len(c.Ring.Members), c.MovesInFlight)
	fmt.Fprintf(w, "%-16s %-22s %-11s %-8s %-12s %-6s %s\n", "NODE", "ADDRESS", "ALIVE", "RAFT", "IN RING", "WEIGHT", "SHARDS")
	weights := map[string]int{}
	for _, n := range c.Ring.Nodes {
		weights[n.ID] = n.Weight
	}
	for _, n := range c.Ring.Members {
		ring, weight := "no", "-"
		if n.InRing {
			ring, weight = "yes", fmt.Sprint(weights[n.ID])
		}
		if n.State == "removed" {
			ring += " (removed)"
		}
		fmt.Fprintf(w, "%-16s %-22s %-11s %-8s %-12s %-6s %d\n", n.ID, n.GRPCAddr, dash(n.Alive), dash(n.Raft), ring, weight, n.Shards)
	}
	if len(c.Moves) == 0 {
		return
	}
	fmt.Fprintln(w, "moves under way:")
	for _, m := range c.Moves {
		fmt.Fprintf(w, "  %s: %s -> %s, %s\n", m.ShardID, m.From, m.To, progress(m))
	}
}

func printLocation(w io.Writer, loc *api.ShardLocation, st *api.Status) {
	if !loc.Registered {
		fmt.Fprintf(w, "shard %s: not registered (never created); it would be created on its owner %s (ring epoch %d)\n", loc.ShardID, dash(loc.Owner), loc.Epoch)
		return
	}
	fmt.Fprintf(w, "shard %s: owner %s (ring epoch %d), holder %s\n", loc.ShardID, dash(loc.Owner), loc.Epoch, dash(loc.Holder))
	if st.Cluster != nil {
		for _, m := range st.Cluster.Moves {
			if m.ShardID == loc.ShardID {
				fmt.Fprintf(w, "  moving: %s -> %s, %s\n", m.From, m.To, progress(m))
				return
			}
		}
		for _, n := range st.Cluster.Ring.Members {
			if n.ID == loc.Holder && !live(n.Alive) {
				fmt.Fprintf(w, "  its holder %s is %s: the shard is unavailable until it is back\n", n.ID, dash(n.Alive))
				return
			}
		}
	}
	if loc.Owner != loc.Holder {
		fmt.Fprintf(w, "  not on its owner yet: it moves there on its next request or rebalancing pass\n")
	}
}

func progress(m api.ShardMove) string {
	pct := 100.0
	if m.Size > 0 {
		pct = 100 * float64(m.Bytes) / float64(m.Size)
	}
	return fmt.Sprintf("%d of %d bytes (%.0f%%) in %v", m.Bytes, m.Size, pct, m.Elapsed.Round(time.Millisecond))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nodeClients caches one client per node address.
type nodeClients struct {
	mu   sync.Mutex
	m    map[string]*rpc.NodeClient
	dial []grpc.DialOption
}

func (n *nodeClients) get(addr string) (*rpc.NodeClient, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.m[addr]; ok {
		return c, nil
	}
	if addr == "" {
		return nil, errors.New("no address")
	}
	c, err := rpc.NewNodeClient(addr, n.dial...)
	if err != nil {
		return nil, err
	}
	n.m[addr] = c
	return c, nil
}

func (n *nodeClients) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.m {
		c.Close()
	}
}
