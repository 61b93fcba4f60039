package shardhost

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strings"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/sqlitex"
)

// metaTable holds a shard's own bookkeeping, written in the same
// transactions as its data: its ID, its commit sequence number and the
// schema version it was last migrated to. WITHOUT ROWID keeps its writes out
// of the update hook, so bookkeeping never counts as a data change.
const metaDDL = `CREATE TABLE IF NOT EXISTS __lunora_meta (k TEXT PRIMARY KEY, v ANY) WITHOUT ROWID`

// migrate brings the shard's file to the app's schema inside one
// transaction. Changes are additive only: missing tables, columns, indexes
// and ownership triggers are created; a removed or retyped column, a
// removed table or a changed primary key is refused with ErrMigration.
// A shard whose recorded version is the app's skips all of it.
//
// It returns the commit sequence number and whether the shard has been
// recorded in the shard registry.
func migrate(ctx context.Context, c *sqlitex.Conn, app *schema.App, shardID, group string, key any) (seq uint64, registered bool, err error) {
	if _, err := c.Exec(ctx, "BEGIN IMMEDIATE"); err != nil {
		return 0, false, err
	}
	defer func() {
		if err != nil {
			c.Exec(context.Background(), "ROLLBACK")
		}
	}()
	if _, err := c.Exec(ctx, metaDDL); err != nil {
		return 0, false, err
	}
	if _, err := c.Exec(ctx, alarmsDDL); err != nil {
		return 0, false, err
	}
	if _, err := c.Exec(ctx, outboxDDL); err != nil {
		return 0, false, err
	}
	meta, err := readMeta(ctx, c)
	if err != nil {
		return 0, false, err
	}
	if id, ok := meta["shard_id"].(string); ok && id != shardID {
		return 0, false, api.Wrap(ErrMigration, fmt.Sprintf("file holds shard %q, not %q", id, shardID))
	}
	seq = uint64(asInt(meta["seq"]))
	registered = asInt(meta["registered"]) == 1
	if v, _ := meta["schema_version"].(string); v != app.Version {
		if err := migrateTables(ctx, c, app, shardID, group, key); err != nil {
			return 0, false, err
		}
		if _, err := c.Exec(ctx, "INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('schema_version', ?)", driver.NamedValue{Ordinal: 1, Value: app.Version}); err != nil {
			return 0, false, err
		}
	}
	if meta["shard_id"] == nil {
		if _, err := c.Exec(ctx, "INSERT INTO __lunora_meta(k, v) VALUES ('shard_id', ?), ('seq', 0)", driver.NamedValue{Ordinal: 1, Value: shardID}); err != nil {
			return 0, false, err
		}
	}
	if _, err := c.Exec(ctx, "COMMIT"); err != nil {
		return 0, false, err
	}
	return seq, registered, nil
}

func readMeta(ctx context.Context, c *sqlitex.Conn) (map[string]any, error) {
	_, rows, err := c.QueryRows(ctx, "SELECT k, v FROM __lunora_meta", nil, sqlitex.Limits{MaxRows: 1000, MaxBytes: 1 << 20})
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	for _, r := range rows {
		m[r[0].(string)] = r[1]
	}
	return m, nil
}

func asInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

type column struct {
	name, typ string
	notNull   bool
	pk        int
}

func tableColumns(ctx context.Context, c *sqlitex.Conn, table string) ([]column, error) {
	_, rows, err := c.QueryRows(ctx, "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)", []driver.NamedValue{{Ordinal: 1, Value: table}}, sqlitex.Limits{MaxRows: 10000, MaxBytes: 1 << 20})
	if err != nil {
		return nil, err
	}
	out := make([]column, len(rows))
	for i, r := range rows {
		out[i] = column{name: r[0].(string), typ: strings.ToUpper(r[1].(string)), notNull: asInt(r[2]) != 0, pk: int(asInt(r[3]))}
	}
	return out, nil
}

func migrateTables(ctx context.Context, c *sqlitex.Conn, app *schema.App, shardID, group string, key any) error {
	refuse := func(format string, args ...any) error {
		return api.Wrap(ErrMigration, fmt.Sprintf("shard %s: ", shardID)+fmt.Sprintf(format, args...)+"; only additive changes are applied automatically")
	}
	declared := map[string]bool{}
	for _, t := range app.Groups[group] {
		declared[strings.ToLower(t.Name)] = true
		have, err := tableColumns(ctx, c, t.Name)
		if err != nil {
			return err
		}
		if len(have) == 0 {
			if _, err := c.Exec(ctx, t.CreateSQL()); err != nil {
				return fmt.Errorf("create table %s: %w", t.Name, err)
			}
		} else {
			byName := map[string]column{}
			var pk []string
			for _, col := range have {
				byName[strings.ToLower(col.name)] = col
				if col.pk > 0 {
					pk = append(pk, col.name)
				}
			}
			for _, dc := range t.Columns {
				hc, ok := byName[strings.ToLower(dc.Name)]
				if !ok {
					if dc.NotNull && !dc.HasDefault {
						return refuse("table %s: new column %s is not_null without a default, so existing rows would break it", t.Name, dc.Name)
					}
					if _, err := c.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", schema.QuoteIdent(t.Name), dc.Definition())); err != nil {
						return fmt.Errorf("add column %s.%s: %w", t.Name, dc.Name, err)
					}
					continue
				}
				delete(byName, strings.ToLower(dc.Name))
				want := strings.ToUpper(strings.Fields(dc.Definition())[1])
				if hc.typ != want {
					return refuse("table %s: column %s is %s in the file but %s in lunora.yaml", t.Name, dc.Name, hc.typ, want)
				}
			}
			for name := range byName {
				return refuse("table %s: column %s exists in the shard but not in lunora.yaml", t.Name, name)
			}
			if strings.Join(pk, ",") != strings.Join(t.PrimaryKey, ",") {
				return refuse("table %s: primary key is (%s) in the file but (%s) in lunora.yaml", t.Name, strings.Join(pk, ", "), strings.Join(t.PrimaryKey, ", "))
			}
		}
		for _, ix := range t.IndexSQL() {
			if _, err := c.Exec(ctx, ix); err != nil {
				return fmt.Errorf("create index on %s: %w", t.Name, err)
			}
		}
		if t.ShardBy != "" {
			for _, trg := range ownershipTriggers(t, key) {
				if _, err := c.Exec(ctx, trg); err != nil {
					return fmt.Errorf("create ownership trigger on %s: %w", t.Name, err)
				}
			}
		}
	}
	_, rows, err := c.QueryRows(ctx, "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '__lunora%'", nil, sqlitex.Limits{MaxRows: 100000, MaxBytes: 16 << 20})
	if err != nil {
		return err
	}
	for _, r := range rows {
		if name := r[0].(string); !declared[strings.ToLower(name)] {
			return refuse("table %s exists in the shard but not in lunora.yaml", name)
		}
	}
	return nil
}

// ownershipTriggers enforce invariant I1 inside SQLite: a row whose shard_by
// value is not this shard's key cannot be inserted, nor can an update move
// a row to another key. The key is baked into the trigger: a shard's file
// only ever holds one shard.
func ownershipTriggers(t *schema.Table, key any) []string {
	col := schema.QuoteIdent(t.ShardBy)
	lit := schema.Literal(key)
	name := func(suffix string) string { return schema.QuoteIdent("__lunora_own_" + t.Name + "_" + suffix) }
	tbl := schema.QuoteIdent(t.Name)
	return []string{
		fmt.Sprintf("CREATE TRIGGER IF NOT EXISTS %s BEFORE INSERT ON %s WHEN NEW.%s IS NOT %s BEGIN SELECT __lunora_foreign_row('%s', NEW.%s); END", name("ins"), tbl, col, lit, t.Name, col),
		fmt.Sprintf("CREATE TRIGGER IF NOT EXISTS %s BEFORE UPDATE OF %s ON %s WHEN NEW.%s IS NOT %s BEGIN SELECT __lunora_foreign_row('%s', NEW.%s); END", name("upd"), col, tbl, col, lit, t.Name, col),
	}
}
