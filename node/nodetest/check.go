package nodetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/raftglobal"
)

func ringHas(nodes []api.RingNode, id string) bool {
	for _, m := range nodes {
		if m.ID == id {
			return true
		}
	}
	return false
}

// current returns the leader's store once it has applied everything it
// has committed, so its replica of the metadata is the cluster's newest.
func (c *Cluster) current(ctx context.Context) (*raftglobal.Store, error) {
	i := c.Leader()
	if i < 0 {
		return nil, errors.New("no leader")
	}
	p := c.Node(i).Proc()
	if p == nil {
		return nil, errors.New("the leader stopped")
	}
	if err := p.Global.WaitApplied(ctx, p.Global.Stats().CommitIndex); err != nil {
		return nil, err
	}
	return p.Global, nil
}

// Registry returns every registered shard and its holder, from the
// leader's replica.
func (c *Cluster) Registry(ctx context.Context) (map[string]string, error) {
	g, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := g.ShardsPerHolder(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for holder := range counts {
		after := ""
		for {
			ids, next, err := g.HeldShards(ctx, holder, after, 1000)
			if err != nil {
				return nil, err
			}
			for _, id := range ids {
				out[id] = holder
			}
			if next == "" {
				break
			}
			after = next
		}
	}
	return out, nil
}

// fileName is the base name shardhost gives a shard's file (see
// shardhost.Host.shardPath: the first 16 bytes of the ID's SHA-256 in hex).
// If shardhost names its files otherwise, CheckOneCopy fails loudly: it
// finds files it cannot name and shards without files.
func fileName(shardID string) string {
	sum := sha256.Sum256([]byte(shardID))
	return hex.EncodeToString(sum[:16]) + ".db"
}

// ShardFiles lists the shard files (*.db) in each node's directory —
// running or not, the copies a node serves or would serve after a
// restart — by file name, with the nodes that have each.
func (c *Cluster) ShardFiles() (map[string][]string, error) {
	out := map[string][]string{}
	for _, i := range c.Indexes() {
		nd := c.Node(i)
		root := filepath.Join(nd.Dir, "shards")
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(p, ".db") {
				out[d.Name()] = append(out[d.Name()], nd.ID)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// pendingMoves lists the handoff journal entries in each node's directory.
func (c *Cluster) pendingMoves() []string {
	var out []string
	for _, i := range c.Indexes() {
		nd := c.Node(i)
		ents, _ := os.ReadDir(filepath.Join(nd.Dir, "moves"))
		for _, e := range ents {
			out = append(out, nd.ID+":"+e.Name())
		}
	}
	return out
}

// CheckOneCopy checks invariants I3 and I4 at rest: every registered
// shard's file is on exactly one node — the registry's holder — no node
// has a file of an unregistered shard, and no handoff is left unresolved.
// While moves are under way it may fail; poll it.
func (c *Cluster) CheckOneCopy(ctx context.Context) error {
	reg, err := c.Registry(ctx)
	if err != nil {
		return fmt.Errorf("read the registry: %w", err)
	}
	files, err := c.ShardFiles()
	if err != nil {
		return err
	}
	var problems []string
	named := map[string]bool{}
	ids := make([]string, 0, len(reg))
	for id := range reg {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		holder := reg[id]
		name := fileName(id)
		named[name] = true
		on := files[name]
		if len(on) != 1 || on[0] != holder {
			problems = append(problems, fmt.Sprintf("shard %s: held by %s in the registry, its file is on %v", id, holder, on))
		}
	}
	for name, on := range files {
		if !named[name] {
			problems = append(problems, fmt.Sprintf("file %s on %v belongs to no registered shard", name, on))
		}
	}
	if moves := c.pendingMoves(); len(moves) > 0 {
		problems = append(problems, fmt.Sprintf("unresolved handoffs: %v", moves))
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%d problems: %s", len(problems), strings.Join(problems, "; "))
	}
	return nil
}

// CheckVoters checks the global tier's membership against the ring: the
// voters are min(target, members), every ring member is a Raft member,
// and no node that left is.
func (c *Cluster) CheckVoters(ctx context.Context) error {
	g, err := c.current(ctx)
	if err != nil {
		return err
	}
	servers, err := g.Servers()
	if err != nil {
		return err
	}
	_, ring, err := g.Ring(ctx)
	if err != nil {
		return err
	}
	member := map[string]bool{}
	voters := 0
	for _, s := range servers {
		member[s.ID] = true
		if s.Voter {
			voters++
		}
	}
	want := min(c.cfg.TargetVoters, len(servers))
	var problems []string
	if voters != want {
		problems = append(problems, fmt.Sprintf("%d voters of %d servers, want %d", voters, len(servers), want))
	}
	for _, m := range ring {
		if !member[m.ID] {
			problems = append(problems, fmt.Sprintf("ring member %s is not in the Raft group", m.ID))
		}
	}
	for _, i := range c.Indexes() {
		if nd := c.Node(i); nd.Left && member[nd.ID] {
			problems = append(problems, fmt.Sprintf("%s left but is still in the Raft group", nd.ID))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("global tier %+v: %s", servers, strings.Join(problems, "; "))
	}
	return nil
}
