package shardhost_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	_ "github.com/mattn/go-sqlite3"
	"google.golang.org/grpc/codes"
)

// The fuzz targets feed arbitrary SQL to a shard — as admin SQL, and as a
// statement of a function in lunora.yaml — and check after every input
// what the sandbox promises: nothing outside the declared tables changed
// (schema, Lunora's bookkeeping, the files in the data directory), no
// transaction was left open (the next ordinary write commits with the
// next sequence number), every refusal carries a code a caller can act
// on, and the host keeps serving.
//
//	go test -run '^$' -fuzz FuzzAdminSQL -fuzztime 60s ./shardhost/
//	go test -run '^$' -fuzz FuzzFunctionSQL -fuzztime 60s ./shardhost/

const fuzzShard = "room_id=fz"

var fuzzSeeds = []string{
	"SELECT 1",
	"COMMIT",
	"BEGIN IMMEDIATE",
	"END",
	"ROLLBACK",
	"SAVEPOINT m",
	"RELEASE m",
	"INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('registered', 1)",
	"UPDATE __lunora_meta SET v = 0 WHERE k = 'seq'",
	"UPDATE sqlite_master SET sql = 'x'",
	"DELETE FROM sqlite_schema",
	"PRAGMA writable_schema = ON",
	"ATTACH 'x.db' AS x",
	"VACUUM INTO 'x.db'",
	"CREATE TABLE t(x)",
	"DROP TABLE messages",
	"SELECT load_extension('x')",
	"INSERT INTO messages(room_id, author, body, created_at) VALUES ('fz', 'a', 'b', 1)",
	"INSERT INTO messages(room_id, author, body, created_at) VALUES ('other', 'a', 'b', 1)",
	"DELETE FROM messages",
	"WITH x AS (SELECT 1) DELETE FROM __lunora_meta",
	"SELECT printf('%.*c', 1000000, 'a') LIKE '%' || printf('%.*c', 20000, 'a') || 'b'",
	"SELECT printf('%.*c', 2000000, char(1))",
	"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n) SELECT count(*) FROM n",
	"SELECT 1; COMMIT",
	"INSERT INTO messages(room_id, author, body, created_at) VALUES ('fz', 'a', 'b', 1) RETURNING *",
	"REPLACE INTO rooms(room_id, title) VALUES ('fz', 'x')",
	"SELECT * FROM pragma_table_info('messages')",
	"SELECT lunora_assert(0, 'no')",
}

type fuzzState struct {
	h   *shardhost.Host
	dir string
	db  *sql.DB
}

func newFuzzState(t testing.TB, mod func(*shardhost.Config)) *fuzzState {
	h := newHost(t, func(c *shardhost.Config) {
		c.StatementTimeout = 250 * time.Millisecond
		c.MaxResultBytes = 1 << 20
		if mod != nil {
			mod(c)
		}
	})
	ctx := context.Background()
	if _, err := send(ctx, h, "fz", "seed", "seed"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+shardhost.ShardPath(h, fuzzShard)+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &fuzzState{h: h, db: db, dir: filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(shardhost.ShardPath(h, fuzzShard)))))}
}

// outside fingerprints everything user SQL must not change: the schema,
// the bookkeeping rows but the commit sequence, and the names of the
// files in the data directory. It returns the commit sequence apart.
func (s *fuzzState) outside(t testing.TB) (string, int64) {
	t.Helper()
	h := sha256.New()
	rows, err := s.db.Query("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a, b, c, d string
		if err := rows.Scan(&a, &b, &c, &d); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(h, a, b, c, d)
	}
	rows.Close()
	var seq int64
	rows, err = s.db.Query("SELECT k, v FROM __lunora_meta ORDER BY k")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var v any
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		if k == "seq" {
			seq = v.(int64)
			continue
		}
		fmt.Fprintf(h, "%s=%v\n", k, v)
	}
	rows.Close()
	filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fmt.Fprintln(h, strings.TrimPrefix(p, s.dir))
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), seq
}

// check runs one input through call and verifies the promises.
func (s *fuzzState) check(t *testing.T, input string, call func(ctx context.Context) (*api.Result, error)) {
	before, seq0 := s.outside(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := call(ctx)
	switch code := api.CodeOf(err); code {
	case codes.OK, codes.InvalidArgument, codes.PermissionDenied, codes.FailedPrecondition,
		codes.OutOfRange, codes.DeadlineExceeded, codes.ResourceExhausted, codes.NotFound:
	default:
		t.Fatalf("%q: %v (%v): not a code a caller can act on", input, code, err)
	}
	after, seq1 := s.outside(t)
	if after != before {
		t.Fatalf("%q changed something outside the declared tables (result %+v, err %v)", input, res, err)
	}
	if err == nil && res.Seq != uint64(seq1) && seq1 != seq0 {
		t.Fatalf("%q: result seq %d, stored seq %d", input, res.Seq, seq1)
	}
	// The transaction state is clean: an ordinary write commits next.
	w, err := send(context.Background(), s.h, "fz", "probe", "probe")
	if err != nil {
		t.Fatalf("after %q an ordinary write fails: %v", input, err)
	}
	if _, seq2 := s.outside(t); w.Seq != uint64(seq1)+1 || uint64(seq2) != w.Seq {
		t.Fatalf("after %q: write got seq %d, stored %d, before %d", input, w.Seq, seq2, seq1)
	}
}

func FuzzAdminSQL(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	s := newFuzzState(f, nil)
	f.Fuzz(func(t *testing.T, q string) {
		s.check(t, q, func(ctx context.Context) (*api.Result, error) {
			return s.h.Exec(ctx, fuzzShard, q, nil)
		})
	})
}

func FuzzFunctionSQL(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	// One function of each kind whose statements are swapped per input
	// for those lunora.yaml would hold; Parse runs the load-time check.
	var app *schema.App
	s := newFuzzState(f, func(c *shardhost.Config) {
		app = c.App
		withFunction("fuzz:mutation", "SELECT 1")(c)
		q := *c.App.Functions["messages:list"]
		q.Name = "fuzz:query"
		c.App.Functions["fuzz:query"] = &q
	})
	f.Fuzz(func(t *testing.T, stmt string) {
		if strings.ContainsAny(stmt, "\n\r") || strings.TrimSpace(stmt) == "" {
			return // one line of YAML per statement
		}
		yaml := "tables:\n  messages:\n    shard_by: room_id\n    columns: {room_id: text, id: int, author: text, body: text, created_at: int}\n    primary_key: [id]\n" +
			"functions:\n  f:\n    kind: mutation\n    shard_by: room_id\n    args: {room_id: text}\n    sql:\n      - " + yamlQuote(stmt) + "\n"
		parsed, err := schema.Parse("lunora.yaml", []byte(yaml))
		if err != nil {
			return // refused at load, naming the line: nothing runs
		}
		sqlList := append([]string{"INSERT INTO messages(room_id, author, body, created_at) VALUES (:room_id, 'f', 'f', 1)"}, parsed.Functions["f"].SQL...)
		app.Functions["fuzz:mutation"].SQL = sqlList
		s.check(t, stmt, func(ctx context.Context) (*api.Result, error) {
			return s.h.Call(ctx, fuzzShard, "fuzz:mutation", map[string]any{"room_id": "fz", "author": "f", "body": "f"})
		})
		app.Functions["fuzz:query"].SQL = parsed.Functions["f"].SQL
		s.check(t, stmt, func(ctx context.Context) (*api.Result, error) {
			return s.h.Call(ctx, fuzzShard, "fuzz:query", map[string]any{"room_id": "fz"})
		})
	})
}

func yamlQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
