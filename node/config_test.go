package node

import (
	"context"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

const configTestSchema = `
tables:
  items:
    shard_by: k
    columns: {k: text, id: int}
    primary_key: [id]
functions:
  items:list:
    kind: query
    shard_by: k
    args: {k: text}
    sql:
      - SELECT id FROM items ORDER BY id
`

// noShards is a Shards that is never called: these tests only build Nodes.
type noShards struct{ *shardhost.Host }

func TestConfigDefaultsAndValidate(t *testing.T) {
	app, err := schema.Parse("lunora.yaml", []byte(configTestSchema))
	if err != nil {
		t.Fatal(err)
	}
	shards := noShards{}
	if err := DefaultConfig().Cluster.Validate(); err != nil {
		t.Fatalf("DefaultClusterConfig does not validate: %v", err)
	}
	if err := DefaultLocalClusterConfig().Validate(); err != nil {
		t.Fatalf("DefaultLocalClusterConfig does not validate: %v", err)
	}
	// Zero cluster fields take the defaults (Weight stays 0: out of the
	// ring); a nil *raftglobal.Store is no global tier.
	var store *raftglobal.Store
	n, err := New(Config{App: app, Shards: shards, Global: store})
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultClusterConfig()
	if c := n.cfg.Cluster; c.MaxMoves != def.MaxMoves || c.RingPoll != def.RingPoll || c.RebalanceEvery != def.RebalanceEvery || c.Weight != 0 {
		t.Fatalf("New filled %+v", c)
	}
	if n.cfg.Global != nil {
		t.Fatal("a nil *raftglobal.Store became a global tier")
	}
	if _, err := n.Ring(context.Background(), 0); api.CodeOf(err) == 0 {
		t.Fatal("a node without a global tier answered Ring")
	}
	for name, c := range map[string]Config{
		"no app":          {Shards: shards},
		"no shards":       {App: app},
		"negative weight": {App: app, Shards: shards, Cluster: ClusterConfig{Weight: -1}},
		"negative moves":  {App: app, Shards: shards, Cluster: ClusterConfig{MaxMoves: -1}},
		"negative rate":   {App: app, Shards: shards, Cluster: ClusterConfig{MoveBytesPerSec: -1}},
		"negative poll":   {App: app, Shards: shards, Cluster: ClusterConfig{RingPoll: -time.Second}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
	}
}
