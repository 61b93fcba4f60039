package nodetest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/node/nodetest"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func put(ctx context.Context, c *nodetest.Cluster, k string, id int) (*api.Result, error) {
	return c.Router.Call(ctx, nodetest.ShardID(k), "items:put", map[string]any{"k": k, "id": int64(id), "v": int64(id)}, api.ReadOptions{})
}

// TestClusterCheckers: a fresh cluster passes every checker, and each
// checker fails when its invariant is broken on purpose — a second copy
// of a shard's file, a file of no registered shard, a voter short.
func TestClusterCheckers(t *testing.T) {
	c := nodetest.Start(t, 3, nodetest.Config{})
	ctx := ctxT(t, 60*time.Second)
	for i := 0; i < 6; i++ {
		if _, err := put(ctx, c, fmt.Sprintf("s%d", i), 1); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	c.WaitFor(10*time.Second, func() error { return c.CheckOneCopy(ctx) })
	c.WaitFor(10*time.Second, func() error { return c.CheckVoters(ctx) })

	// A second copy: the file of one shard copied into another node's
	// directory.
	reg, err := c.Registry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reg) != 6 {
		t.Fatalf("registry %v, want 6 shards", reg)
	}
	files, err := c.ShardFiles()
	if err != nil {
		t.Fatal(err)
	}
	var src, name string
	for n, on := range files {
		name, src = n, on[0]
		break
	}
	other := c.Node(0)
	if other.ID == src {
		other = c.Node(1)
	}
	from := findFile(t, filepath.Join(c.Node(index(src)).Dir, "shards"), name)
	copyPath := filepath.Join(other.Dir, "shards", "copy", name)
	if err := os.MkdirAll(filepath.Dir(copyPath), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckOneCopy(ctx); err == nil || !strings.Contains(err.Error(), "its file is on") {
		t.Fatalf("CheckOneCopy with a second copy: %v", err)
	}
	// A file no registered shard names.
	if err := os.Rename(copyPath, filepath.Join(filepath.Dir(copyPath), "00000000000000000000000000000000.db")); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckOneCopy(ctx); err == nil || !strings.Contains(err.Error(), "belongs to no registered shard") {
		t.Fatalf("CheckOneCopy with a stray file: %v", err)
	}
	os.RemoveAll(filepath.Dir(copyPath))
	if err := c.CheckOneCopy(ctx); err != nil {
		t.Fatalf("CheckOneCopy after the stray file went: %v", err)
	}

	// Two voters of three: a voter killed and removed by force is not
	// replaced when no non-voter is there to promote.
	leader := c.WaitForLeader(10 * time.Second)
	victim := (leader + 1) % 3
	c.Kill(victim)
	if err := c.Node(leader).Proc().Global.Remove(ctx, c.Node(victim).ID); err != nil {
		t.Fatalf("remove %s: %v", c.Node(victim).ID, err)
	}
	if err := c.CheckVoters(ctx); err == nil || !strings.Contains(err.Error(), "not in the Raft group") {
		t.Fatalf("CheckVoters with a ring member out of the Raft group: %v", err)
	}
}

func index(id string) int {
	var i int
	fmt.Sscanf(id, "n%d", &i)
	return i
}

func findFile(t *testing.T, root, name string) string {
	t.Helper()
	var found string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == name {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no %s under %s", name, root)
	}
	return found
}
