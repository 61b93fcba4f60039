package nodetest

import (
	"fmt"

	"github.com/lunora/lunora/placement"
	"github.com/lunora/lunora/schema"
)

// AppSchema is the app a Cluster runs unless Config.App says otherwise:
// items sharded by k (one shard per key, "k=<key>"), and a global table.
const AppSchema = `
tables:
  items:
    shard_by: k
    columns: {k: text, id: int, v: int}
    primary_key: [id]
  notes:
    global: true
    columns: {name: text, body: text}
    primary_key: [name]
functions:
  items:put:
    kind: mutation
    shard_by: k
    args: {k: text, id: int, v: int}
    sql:
      - INSERT INTO items(k, id, v) VALUES (:k, :id, :v)
  items:list:
    kind: query
    shard_by: k
    args: {k: text}
    sql:
      - SELECT id, v FROM items ORDER BY id
  notes:put:
    kind: mutation
    global: true
    args: {name: text, body: text}
    sql:
      - INSERT INTO notes(name, body) VALUES (:name, :body) ON CONFLICT(name) DO UPDATE SET body = excluded.body
`

// App parses AppSchema.
func App() (*schema.App, error) {
	app, err := schema.Parse("nodetest.yaml", []byte(AppSchema))
	if err != nil {
		return nil, fmt.Errorf("nodetest: the built-in schema: %w", err)
	}
	return app, nil
}

// ShardID is the ID of the items shard of key k.
func ShardID(k string) string { return "k=" + k }

// Owner is the owner of shardID on a ring of the nodes named, each of
// weight 1 (what a Cluster's ring is): tests use it to pick keys that a
// join or leave moves.
func Owner(shardID string, nodeIDs ...string) string {
	members := make([]placement.Member, len(nodeIDs))
	for i, id := range nodeIDs {
		members[i] = placement.Member{ID: placement.NodeID(id), Weight: 1}
	}
	r, err := placement.NewRing(members)
	if err != nil {
		panic(fmt.Sprintf("nodetest: ring of %v: %v", nodeIDs, err))
	}
	return string(r.Owner(shardID))
}

// KeyMovedBy returns the first key k0, k1, … whose shard is owned by
// from on the ring before and by to on the ring after.
func KeyMovedBy(before, after []string, from, to string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("k%d", i)
		if Owner(ShardID(k), before...) == from && Owner(ShardID(k), after...) == to {
			return k
		}
	}
}
