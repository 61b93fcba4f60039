package schema_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

func TestChatExampleParses(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Groups["room_id"]) != 2 || len(app.Groups[schema.RootShard]) != 2 { // settings, activity
		t.Fatalf("groups = %v", app.Groups)
	}
	f := app.Function("messages:list")
	if f == nil || f.Kind != schema.Query || f.ShardBy != "room_id" {
		t.Fatalf("messages:list = %+v", f)
	}
	if q := app.Queue("notifications"); q == nil || q.Consumer != "activity:record" || app.Queue("room-events") == nil {
		t.Fatalf("queues = %v", app.Queues)
	}
}

const good = `tables:
  t:
    shard_by: k
    columns: {k: text, v: int}
    primary_key: [k]
functions:
  f:
    kind: query
    shard_by: k
    args: {k: text}
    sql: [SELECT v FROM t WHERE k = :k]
`

// Each case replaces one line of a valid file and expects an error on that
// line with the given text.
func TestInvalidSchemas(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		want       string
	}{
		{"bad yaml", "tables: [\n", 1, "invalid YAML"},
		{"unknown top key", good + "extra: 1\n", 12, `unknown key "extra"`},
		{"unknown type", strings.Replace(good, "v: int", "v: integerish", 1), 4, `unknown type "integerish"`},
		{"pk not declared", strings.Replace(good, "primary_key: [k]", "primary_key: [nope]", 1), 5, `primary_key column "nope" is not declared`},
		{"shard_by not declared", strings.Replace(good, "shard_by: k\n    columns", "shard_by: z\n    columns", 1), 3, `shard_by column "z" is not declared`},
		{"bad kind", strings.Replace(good, "kind: query", "kind: read", 1), 8, `kind must be query or mutation`},
		{"undeclared param", strings.Replace(good, "k = :k", "k = :who", 1), 11, "parameter :who is not a declared argument"},
		{"two statements", strings.Replace(good, "sql: [SELECT v FROM t WHERE k = :k]", "sql: ['SELECT 1; SELECT 2']", 1), 11, "one statement per entry"},
		{"positional", strings.Replace(good, "sql: [SELECT v FROM t WHERE k = :k]", "sql: ['SELECT v FROM t WHERE k = ?']", 1), 11, "positional parameters"},
		{"sql error", strings.Replace(good, "SELECT v FROM t", "SELECT nope FROM t", 1), 7, "no such column: nope"},
		{"unknown table in sql", strings.Replace(good, "FROM t WHERE", "FROM missing WHERE", 1), 7, "no such table: missing"},
		{"function group unknown", strings.Replace(good, "    shard_by: k\n    args", "    shard_by: q\n    args", 1), 7, `shard_by "q" is not the shard_by column of any table`},
		{"reserved table", strings.Replace(good, "  t:\n", "  sqlite_t:\n", 1), 2, "reserved"},
		{"global function without global tables", good + "  g:\n    kind: query\n    global: true\n    sql: [SELECT 1]\n", 12, "no table is global"},
		{"global and shard_by", good + "  g:\n    kind: query\n    global: true\n    shard_by: k\n    sql: [SELECT 1]\n", 14, "exclusive"},
		{"arg type mismatch", strings.Replace(good, "args: {k: text}", "args: {k: int}", 1), 7, "shard key column is text"},
		{"no tables", "functions: {}\n", 0, "declare at least one table"},
		{"root function without root tables", good + "  g:\n    kind: query\n    sql: [SELECT 1]\n", 12, "runs in the root shard"},
		{"bad default", strings.Replace(good, "v: int", "v: {type: int, default: abc}", 1), 4, `"abc" is not a valid int`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := schema.Parse("app.yaml", []byte(tc.yaml))
			var le *schema.LineError
			if !errors.As(err, &le) {
				t.Fatalf("want *LineError, got %v", err)
			}
			if le.Line != tc.line || !strings.Contains(le.Msg, tc.want) {
				t.Fatalf("got %q (line %d), want line %d containing %q", err, le.Line, tc.line, tc.want)
			}
			if tc.line > 0 && !strings.HasPrefix(err.Error(), "app.yaml:") {
				t.Fatalf("error does not start with file:line: %q", err)
			}
		})
	}
	if _, err := schema.Parse("app.yaml", []byte(good)); err != nil {
		t.Fatalf("the base file must be valid: %v", err)
	}
}

func TestBindArgsAndShard(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	f := app.Function("messages:list")
	args, err := schema.DecodeJSONArgs(json.RawMessage(`{"room_id": "r1", "limit": 5}`))
	if err != nil {
		t.Fatal(err)
	}
	id, args, err := app.ResolveShard(f, args, "")
	if err != nil || id != "room_id=r1" {
		t.Fatalf("ResolveShard = %q, %v", id, err)
	}
	bound, err := f.BindArgs(args)
	if err != nil || bound["limit"] != int64(5) {
		t.Fatalf("BindArgs = %v, %v", bound, err)
	}
	// shard_key fills the missing key argument; the default fills limit.
	id, args, err = app.ResolveShard(f, map[string]any{}, "r9")
	if err != nil || id != "room_id=r9" {
		t.Fatalf("ResolveShard(shard_key) = %q, %v", id, err)
	}
	if bound, err = f.BindArgs(args); err != nil || bound["room_id"] != "r9" || bound["limit"] != int64(50) {
		t.Fatalf("BindArgs = %v, %v", bound, err)
	}
	for name, tc := range map[string]struct {
		args     map[string]any
		shardKey string
	}{
		"key mismatch":   {map[string]any{"room_id": "a"}, "b"},
		"no key":         {map[string]any{}, ""},
		"key wrong type": {map[string]any{"room_id": int64(3)}, ""},
		"key too long":   {map[string]any{"room_id": strings.Repeat("x", schema.MaxShardKeyLen+1)}, ""},
	} {
		if _, _, err := app.ResolveShard(f, tc.args, tc.shardKey); api.CodeOf(err) != codes.InvalidArgument {
			t.Errorf("%s: want INVALID_ARGUMENT, got %v", name, err)
		}
	}
	for name, in := range map[string]map[string]any{
		"fraction for int": {"room_id": "r", "limit": json.Number("1.5")},
		"string for int":   {"room_id": "r", "limit": "5"},
		"bool for int":     {"room_id": "r", "limit": true},
		"unknown arg":      {"room_id": "r", "lmit": json.Number("1")},
		"int overflow":     {"room_id": "r", "limit": json.Number("99999999999999999999")},
	} {
		if _, err := f.BindArgs(in); api.CodeOf(err) != codes.InvalidArgument {
			t.Errorf("%s: want INVALID_ARGUMENT, got %v", name, err)
		}
	}
	if _, _, err := app.ParseShardID("room_id=007"); err == nil {
		// text keys are taken verbatim; int groups canonicalise — chat has
		// text keys, so this is a valid, distinct shard.
	} else {
		t.Fatalf("ParseShardID(room_id=007): %v", err)
	}
	for _, bad := range []string{"nope=1", "room_id=", "room_id", "__root__=x"} {
		if _, _, err := app.ParseShardID(bad); api.CodeOf(err) != codes.InvalidArgument {
			t.Errorf("ParseShardID(%q) = %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}
