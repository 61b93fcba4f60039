package raftglobal

import (
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// Checksum is a digest of every table of a replica's FSM at one applied
// index. Two replicas at the same Index must have the same Sum.
type Checksum struct {
	Index uint64
	Sum   string // hex SHA-256 over every table's name and rows, in order
}

// Checksum digests every table of this replica's FSM (the schema's tables
// and the __lunora_* metadata, not the applied-index bookkeeping) in one
// read transaction, rows ordered by every column.
func (s *Store) Checksum(ctx context.Context) (Checksum, error) {
	f := s.fsm
	f.swap.RLock()
	defer f.swap.RUnlock()
	r, err := f.reader(ctx)
	if err != nil {
		return Checksum{}, err
	}
	defer f.putReader(r)
	r.Reset()
	if _, err := r.Exec(ctx, "BEGIN"); err != nil {
		return Checksum{}, r.Classify(err, dbName)
	}
	defer r.Exec(context.Background(), "COMMIT")
	return checksum(ctx, r)
}

// ChecksumFile digests a stopped node's FSM file (<data>/raft/fsm/global.db)
// exactly as Store.Checksum digests a running one, so replicas can be
// compared after the processes have exited.
func ChecksumFile(ctx context.Context, path string) (Checksum, error) {
	c, err := sqlitex.Open(path, sqlitex.Options{Synchronous: "NORMAL", CacheKiB: 2048, ReadOnly: true, MaxSQLLen: 1 << 20})
	if err != nil {
		return Checksum{}, err
	}
	defer c.Close()
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		return Checksum{}, fmt.Errorf("%s: %w", path, err)
	}
	defer c.Exec(context.Background(), "COMMIT")
	return checksum(ctx, c)
}

// checksum digests every table visible to r, which is in a read
// transaction.
func checksum(ctx context.Context, r *sqlitex.Conn) (Checksum, error) {
	idx, err := storedIndex(ctx, r)

	if err != nil {
		return Checksum{}, err
	}
	lim := sqlitex.Limits{MaxRows: math.MaxInt, MaxBytes: math.MaxInt}
	_, tables, err := r.QueryRows(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table'
		AND name NOT LIKE 'sqlite_%' AND name != '__lunora_raft' ORDER BY name`, nil, lim)
	if err != nil {
		return Checksum{}, api.Errorf(codes.Internal, "checksum: list tables: %v", err)
	}
	h := sha256.New()
	for _, t := range tables {
		name, _ := t[0].(string)
		quoted := `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
		_, cols, err := r.QueryRows(ctx, "SELECT name FROM pragma_table_info(?)", []driver.NamedValue{{Ordinal: 1, Value: name}}, lim)
		if err != nil {
			return Checksum{}, api.Errorf(codes.Internal, "checksum: columns of %s: %v", name, err)
		}
		order := make([]string, len(cols))
		for i := range cols {
			order[i] = fmt.Sprint(i + 1)
		}
		_, rows, err := r.QueryRows(ctx, "SELECT * FROM "+quoted+" ORDER BY "+strings.Join(order, ", "), nil, lim)
		if err != nil {
			return Checksum{}, api.Errorf(codes.Internal, "checksum: rows of %s: %v", name, err)
		}
		fmt.Fprintf(h, "table %q %d\n", name, len(rows))
		for _, row := range rows {
			for _, v := range row {
				hashValue(h, v)
			}
		}
	}
	return Checksum{Index: idx, Sum: hex.EncodeToString(h.Sum(nil))}, nil
}

func hashValue(h interface{ Write([]byte) (int, error) }, v any) {
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
