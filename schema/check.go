package schema

import (
	"context"
	"database/sql"
	"fmt"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// checkSQL prepares every function statement against an empty in-memory
// database holding its group's tables, so a typo in lunora.yaml is refused at
// start, naming the function and its line, instead of failing every call.
func checkSQL(file string, a *App) error {
	db, err := sql.Open("sqlite3", "file::memory:")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Functions the shard runtime registers; their behaviour does not matter
	// here, only that the names resolve.
	err = conn.Raw(func(dc any) error {
		c := dc.(*sqlite3.SQLiteConn)
		for _, reg := range []struct {
			name string
			fn   any
		}{
			{"lunora_assert", func(any, string) int64 { return 1 }},
			{"lunora_now", func() int64 { return 0 }},
		} {
			if err := c.RegisterFunc(reg.name, reg.fn, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range a.FunctionNames() {
		f := a.Functions[name]
		var tx *sql.Tx
		tx, err = conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, ddl := range a.GroupDDL(f.ShardBy) {
			if _, err := tx.ExecContext(ctx, ddl); err != nil {
				tx.Rollback()
				return &LineError{File: file, Msg: fmt.Sprintf("group %s: %v", f.ShardBy, err)}
			}
		}
		for i, stmt := range f.SQL {
			st, err := tx.PrepareContext(ctx, stmt)
			if err != nil {
				tx.Rollback()
				return &LineError{File: file, Line: f.Line, Msg: fmt.Sprintf("function %s statement %d: %v", name, i+1, err)}
			}
			st.Close()
		}
		tx.Rollback() // drops the tables again: the next group starts empty
	}
	return nil
}
