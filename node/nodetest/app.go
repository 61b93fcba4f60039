package nodetest

import (
	"fmt"

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
