package shardhost_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

// TestValueBytesCapsWhatAStatementBuilds: SQLite's length limit
// (Config.MaxValueBytes) stops every way SQL has of building a large value
// — zeroblob, randomblob, printf padding, ||, group_concat, replace — with
// INVALID_ARGUMENT naming the limit, before the memory is allocated; below
// it the same statements run. The shard keeps serving.
func TestValueBytesCapsWhatAStatementBuilds(t *testing.T) {
	const limit = 1 << 20
	h := newHost(t, func(c *shardhost.Config) { c.MaxValueBytes = limit })
	ctx := context.Background()
	if _, err := send(ctx, h, "r1", "a", "seed"); err != nil {
		t.Fatal(err)
	}
	over := []string{
		"SELECT length(zeroblob(2000000))",
		"SELECT length(randomblob(2000000))",
		"SELECT length(randomblob(1000000000000))",
		"SELECT length(printf('%.*c', 2000000, 'x'))",
		"SELECT length(hex(randomblob(600000)))",
		"SELECT length(hex(randomblob(600000)) || hex(randomblob(600000)))",
		"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000) SELECT length(group_concat(hex(randomblob(500)))) FROM c",
		"SELECT length(replace(hex(zeroblob(100000)), '0', 'xxxxxxxxxx'))",
		"INSERT INTO messages(room_id, author, body, created_at) VALUES ('r1', 'a', hex(randomblob(600000)), 0)",
	}
	for _, sql := range over {
		_, err := h.Exec(ctx, "room_id=r1", sql, nil)
		if api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
			t.Errorf("%s: %v; want INVALID_ARGUMENT naming the %d-byte limit", sql, err, limit)
		}
	}
	under := map[string]int64{
		"SELECT length(zeroblob(1000000))":                       1000000,
		"SELECT length(randomblob(1000000))":                     1000000,
		"SELECT length(hex(randomblob(500000)))":                 1000000,
		"SELECT length(printf('%.*c', 1000000, 'x'))":            1000000,
		"SELECT length(replace(hex(zeroblob(1000)), '0', 'xx'))": 4000,
	}
	for sql, want := range under {
		res, err := h.Exec(ctx, "room_id=r1", sql, nil)
		if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != want {
			t.Errorf("%s: %v %v; want %d", sql, res, err, want)
		}
	}
	if n := count(t, h, "r1"); n != 1 {
		t.Errorf("%d messages, want the seed only", n)
	}
}

func TestAdminParamsBound(t *testing.T) {
	h := newHost(t, func(c *shardhost.Config) { c.MaxParams = 4 })
	ctx := context.Background()
	names := make([]string, 5)
	params := map[string]any{}
	for i := range names {
		names[i] = fmt.Sprintf(":p%d", i)
		params[fmt.Sprintf("p%d", i)] = int64(i)
	}
	_, err := h.Exec(ctx, "room_id=r1", "SELECT "+strings.Join(names, ", "), params)
	if api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "5 entries, over the limit of 4") {
		t.Fatalf("5 params: %v", err)
	}
	delete(params, "p4")
	res, err := h.Exec(ctx, "room_id=r1", "SELECT "+strings.Join(names[:4], ", "), params)
	if err != nil || len(res.Rows[0]) != 4 {
		t.Fatalf("4 params: %v %v", res, err)
	}
	// SQLite's own bound on a statement's parameters (?NNN counts up to
	// its number) holds even where the named-parameter check does not
	// look.
	_, err = h.Exec(ctx, "room_id=r1", "SELECT :p0 WHERE ?9 IS NULL", map[string]any{"p0": int64(1)})
	if api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("?9 with a bound of 4: %v", err)
	}
}

// TestSchemaLimitsCheckedAtStart: a lunora.yaml function over a bound is
// refused when the host starts, naming the function and its line.
func TestSchemaLimitsCheckedAtStart(t *testing.T) {
	app := chatApp(t)
	for name, tc := range map[string]struct {
		mod  func(*shardhost.Config)
		want string
	}{
		"statements":  {func(c *shardhost.Config) { c.MaxStatements = 2 }, "statements, over the limit of 2 per function"},
		"sql length":  {func(c *shardhost.Config) { c.MaxSQLLen = 80 }, "bytes, over the limit of 80"},
		"arguments":   {func(c *shardhost.Config) { c.MaxParams = 2 }, "arguments, over the limit of 2"},
		"value bytes": {func(c *shardhost.Config) { c.MaxValueBytes = 1000 }, "over the largest value a statement may hold, 1000 bytes"},
	} {
		cfg := shardhost.DefaultLocalConfig()
		cfg.Dir, cfg.App = t.TempDir(), app
		tc.mod(&cfg)
		_, err := shardhost.New(cfg)
		var le *schema.LineError
		if !errors.As(err, &le) || le.Line == 0 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want a line error saying %q", name, err, tc.want)
		}
	}
}
