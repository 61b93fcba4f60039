package schema

import (
	"context"
	"fmt"

	"github.com/lunora/lunora/sqlitex"
)

// checkSQL prepares every function statement against an empty in-memory
// database holding its group's tables, inside the same sandbox shards run
// them in, so a typo — or a statement the sandbox refuses, such as
// COMMIT — in lunora.yaml is refused at start, naming the function and its
// line, instead of failing every call.
func checkSQL(file string, a *App) error {
	c, err := sqlitex.Open(":memory:", sqlitex.Options{Synchronous: "OFF", CacheKiB: 256, MaxSQLLen: 1 << 20})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := context.Background()
	for _, name := range a.FunctionNames() {
		f := a.Functions[name]
		if _, err := c.Exec(ctx, "BEGIN"); err != nil {
			return err
		}
		for _, ddl := range a.GroupDDL(f.ShardBy) {
			if _, err := c.Exec(ctx, ddl); err != nil {
				c.Exec(ctx, "ROLLBACK")
				return &LineError{File: file, Msg: fmt.Sprintf("group %s: %v", f.ShardBy, err)}
			}
		}
		c.NoCaller = ""
		if f.Global() {
			c.NoCaller = "global functions run through the global tier's Raft log, which does not carry the caller; check the caller in a shard function"
		}
		for i, stmt := range f.SQL {
			c.Reset()
			if _, err := c.TablesRead([]string{stmt}); err != nil {
				c.Exec(ctx, "ROLLBACK")
				return &LineError{File: file, Line: f.Line, Msg: fmt.Sprintf("function %s statement %d: %v", name, i+1, c.Classify(err, "checking "+name))}
			}
		}
		// Drops the tables again: the next group starts empty.
		if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
			return err
		}
	}
	return nil
}
