package shardhost

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// conn is one SQLite connection of a shard together with the per-connection
// state its SQL functions and authorizer report into. A conn is used by one
// goroutine at a time (the writer, or the reader holding it from the pool).
type conn struct {
	c *sqlite3.SQLiteConn

	// user is true while a statement from lunora.yaml or admin SQL is being
	// prepared or run: the sandbox applies (see sandbox.go).
	user bool
	// denied is the sandbox's reason for its last refusal.
	denied string
	// assertMsg is set when lunora_assert fails.
	assertMsg string
	// foreignRow is set when a row for another shard is written (I1).
	foreignRow string
	// dirty is set by the update hook when a row changes.
	dirty bool
	// now is the time lunora_now() reports for the current operation.
	now time.Time
}

var sqliteDriver = &sqlite3.SQLiteDriver{}

// openConn opens path with the pragmas every shard connection uses. The
// writer and readers differ only in readOnly.
func openConn(path string, cfg *Config, readOnly bool) (*conn, error) {
	dsn := "file:" + path + "?_txlock=immediate&_busy_timeout=10000&_stmt_cache_size=64"
	dc, err := sqliteDriver.Open(dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	c := &conn{c: dc.(*sqlite3.SQLiteConn)}
	pragmas := []string{
		"PRAGMA journal_mode=WAL",
		"PRAGMA synchronous=" + cfg.Synchronous,
		fmt.Sprintf("PRAGMA cache_size=-%d", cfg.CacheKiB),
		"PRAGMA foreign_keys=ON",
	}
	if readOnly {
		pragmas = append(pragmas, "PRAGMA query_only=ON")
	}
	for _, p := range pragmas {
		if _, err := c.c.Exec(p, nil); err != nil {
			c.c.Close()
			return nil, fmt.Errorf("%s on %s: %w", p, path, err)
		}
	}
	// trusted_schema stays at its default (ON): the ownership triggers call
	// __lunora_foreign_row, and the schema is written only by migrations —
	// the sandbox refuses every schema change from user SQL.
	//
	// No attached databases at all: the shard's own file is the only one a
	// connection can ever see.
	c.c.SetLimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
	c.c.SetLimit(sqlite3.SQLITE_LIMIT_LENGTH, 16<<20)
	c.c.SetLimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, cfg.MaxSQLLen)
	if err := c.register(cfg); err != nil {
		c.c.Close()
		return nil, err
	}
	return c, nil
}

func (c *conn) register(cfg *Config) error {
	assert := func(cond any, msg string) (int64, error) {
		if truthy(cond) {
			return 1, nil
		}
		if msg == "" {
			msg = "lunora_assert failed"
		}
		c.assertMsg = msg
		return 0, errors.New(msg)
	}
	now := func() int64 {
		if c.now.IsZero() {
			return time.Now().UnixMilli()
		}
		return c.now.UnixMilli()
	}
	foreign := func(table string, value any) (int64, error) {
		c.foreignRow = fmt.Sprintf("table %s: a row with %v", table, value)
		return 0, errors.New(c.foreignRow)
	}
	for _, f := range []struct {
		name string
		impl any
	}{
		{"lunora_assert", assert},
		{"lunora_now", now},
		{"__lunora_foreign_row", foreign},
	} {
		if err := c.c.RegisterFunc(f.name, f.impl, false); err != nil {
			return fmt.Errorf("register %s: %w", f.name, err)
		}
	}
	c.c.RegisterAuthorizer(c.authorize)
	c.c.RegisterUpdateHook(func(int, string, string, int64) { c.dirty = true })
	return nil
}

// truthy follows SQLite: NULL and zero are false.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case int64:
		return x != 0
	case float64:
		return x != 0
	case bool:
		return x
	case string:
		return x != "" && x != "0"
	case []byte:
		return len(x) > 0
	}
	return true
}

func (c *conn) close() error { return c.c.Close() }

// reset clears what the functions and sandbox reported.
func (c *conn) reset() {
	c.denied, c.assertMsg, c.foreignRow, c.dirty = "", "", "", false
}

// exec runs a system statement (not sandboxed).
func (c *conn) exec(ctx context.Context, query string, args ...driver.NamedValue) (int64, error) {
	res, err := c.c.ExecContext(ctx, query, args)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// queryRows runs one statement and collects its rows within the bounds.
// It returns the column names (nil for a statement that returns none).
func (c *conn) queryRows(ctx context.Context, query string, args []driver.NamedValue, cfg *Config) ([]string, [][]any, error) {
	rows, err := c.c.QueryContext(ctx, query, args)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	cols := rows.Columns()
	if len(cols) == 0 {
		// Not a row-returning statement; step it to completion.
		if err := rows.Next(nil); err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, err
		}
		return nil, nil, nil
	}
	var out [][]any
	size := 0
	for {
		dest := make([]driver.Value, len(cols))
		err := rows.Next(dest)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		row := make([]any, len(cols))
		for i, v := range dest {
			switch x := v.(type) {
			case string:
				size += len(x)
			case []byte:
				size += len(x)
				v = append([]byte(nil), x...)
			default:
				size += 8
			}
			row[i] = v
		}
		out = append(out, row)
		if len(out) > cfg.MaxResultRows {
			return nil, nil, fmt.Errorf("%w: more than %d rows; add a LIMIT or paginate", ErrResultTooLarge, cfg.MaxResultRows)
		}
		if size > cfg.MaxResultBytes {
			return nil, nil, fmt.Errorf("%w: more than %d bytes; select fewer columns or paginate", ErrResultTooLarge, cfg.MaxResultBytes)
		}
	}
	return cols, out, nil
}

// totalChanges is SQLite's count of rows changed on this connection.
func (c *conn) totalChanges(ctx context.Context) (int64, error) {
	rows, err := c.c.QueryContext(ctx, "SELECT total_changes()", nil)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil {
		return 0, err
	}
	n, _ := dest[0].(int64)
	return n, nil
}
