package lunoratest

import (
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"strings"

	"github.com/lunora/lunora/sqlitex"
)

// FSMChecksum is raftglobal.Checksum computed from the FSM file of a
// stopped node, <data>/raft/fsm/global.db: Index is the file's
// applied_index, Sum the same SHA-256 as (*raftglobal.Store).Checksum —
// every table but sqlite_* and __lunora_raft, by name, rows ordered by
// every column, values hashed by type.
//
// Store.Checksum needs a running Store, and opening one would start Raft on
// the node's directory (and apply its log); a lunora-node process offers
// no endpoint for it. So this reads the file directly, through the same
// sqlitex connection the FSM reads with (so values come back as the same Go
// types), read-only and in one read transaction. The hashing repeats
// raftglobal/checksum.go; e2e's TestGlobalFSMChecksumMatchesStore checks
// that the two agree. The node must be stopped (or at least not writing):
// a running node's file is consistent too (WAL), but its index moves.
func FSMChecksum(ctx context.Context, path string) (index uint64, sum string, err error) {
	c, err := sqlitex.Open(path, sqlitex.Options{Synchronous: "NORMAL", CacheKiB: 2048, ReadOnly: true, MaxSQLLen: 1 << 20})
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		return 0, "", fmt.Errorf("%s: %w", path, err)
	}
	defer c.Exec(context.Background(), "COMMIT")
	lim := sqlitex.Limits{MaxRows: math.MaxInt, MaxBytes: math.MaxInt}
	_, rows, err := c.QueryRows(ctx, "SELECT v FROM __lunora_raft WHERE k = 'applied_index'", nil, lim)
	if err != nil || len(rows) != 1 {
		return 0, "", fmt.Errorf("%s: applied_index: %v (%d rows)", path, err, len(rows))
	}
	idx, _ := rows[0][0].(int64)
	_, tables, err := c.QueryRows(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table'
		AND name NOT LIKE 'sqlite_%' AND name != '__lunora_raft' ORDER BY name`, nil, lim)
	if err != nil {
		return 0, "", fmt.Errorf("%s: list tables: %w", path, err)
	}
	h := sha256.New()
	for _, t := range tables {
		name, _ := t[0].(string)
		quoted := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
		_, cols, err := c.QueryRows(ctx, "SELECT name FROM pragma_table_info(?)", []driver.NamedValue{{Ordinal: 1, Value: name}}, lim)
		if err != nil {
			return 0, "", fmt.Errorf("%s: columns of %s: %w", path, name, err)
		}
		order := make([]string, len(cols))
		for i := range cols {
			order[i] = fmt.Sprint(i + 1)
		}
		_, rows, err := c.QueryRows(ctx, "SELECT * FROM "+quoted+" ORDER BY "+strings.Join(order, ", "), nil, lim)
		if err != nil {
			return 0, "", fmt.Errorf("%s: rows of %s: %w", path, name, err)
		}
		fmt.Fprintf(h, "table %q %d\n", name, len(rows))
		for _, row := range rows {
			for _, v := range row {
				hashFSMValue(h, v)
			}
		}
	}
	return uint64(idx), hex.EncodeToString(h.Sum(nil)), nil
}

// hashFSMValue is raftglobal's hashValue.
func hashFSMValue(h hash.Hash, v any) {
	var b [9]byte
	switch x := v.(type) {
	case nil:
		h.Write([]byte{0})
	case int64:
		b[0] = 'i'
		binary.LittleEndian.PutUint64(b[1:], uint64(x))
		h.Write(b[:])
	case float64:
		b[0] = 'f'
		binary.LittleEndian.PutUint64(b[1:], math.Float64bits(x))
		h.Write(b[:])
	case string:
		b[0] = 's'
		binary.LittleEndian.PutUint64(b[1:], uint64(len(x)))
		h.Write(b[:])
		h.Write([]byte(x))
	case []byte:
		b[0] = 'b'
		binary.LittleEndian.PutUint64(b[1:], uint64(len(x)))
		h.Write(b[:])
		h.Write(x)
	default:
		fmt.Fprintf(h, "?%T:%v", v, v)
	}
}
