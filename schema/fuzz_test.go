package schema_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// FuzzParse feeds arbitrary bytes to the lunora.yaml parser and validator
// and checks: no panic; a refusal is a *LineError with a message (naming a
// line where it has one); an accepted file is consistent — parsing it
// again gives the same app (same Version, tables, functions), every
// function runs in a group that exists and names only declared argument
// types, and the limits check and the DDL of every group run.
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 60s ./schema/
func FuzzParse(f *testing.F) {
	f.Add(chat.Schema)
	for _, s := range []string{
		"tables:\n  t:\n    columns: {id: int}\n    primary_key: [id]\n",
		"tables:\n  t:\n    shard_by: k\n    columns: {k: text, v: blob}\n    primary_key: [k]\nfunctions:\n  t:get:\n    kind: query\n    shard_by: k\n    args: {k: text, n: {type: int, default: 3}}\n    sql: SELECT v FROM t WHERE k = :k LIMIT :n\n",
		"tables:\n  g:\n    global: true\n    columns: {id: text}\n    primary_key: id\nfunctions:\n  g:put:\n    kind: mutation\n    global: true\n    args: {id: {type: text, max_len: 10}}\n    sql: [\"INSERT INTO g(id) VALUES (:id)\"]\n",
		"tables:\n  t:\n    columns: {id: int}\n    primary_key: [id]\nfunctions:\n  f:\n    kind: query\n    sql: [COMMIT]\n",
		"tables:\n  t:\n    columns: {id: int}\n    primary_key: [id]\nfunctions:\n  f:\n    kind: query\n    sql: SELECT :nope\n",
		"tables:\n  t:\n    columns: {id: {type: int, default: x}}\n    primary_key: [id]\n",
		"tables:\n  t:\n    columns: {id: int}\n    primary_key: [id]\n    indexes: {by: {columns: [id], unique: true}}\n",
		"tables: &a\n  t: *a\n",
		"tables:\n  sqlite_x: {columns: {id: int}, primary_key: [id]}\n",
		"a: [",
		"",
		"- 1\n- 2\n",
		"tables:\n  t:\n    columns: {id: int}\n    primary_key: [id, id]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		app, err := schema.Parse("fuzz.yaml", data)
		if err != nil {
			var le *schema.LineError
			if !errors.As(err, &le) || le.Msg == "" || le.File != "fuzz.yaml" {
				t.Fatalf("%q: refusal %T %v is not a LineError with a message", data, err, err)
			}
			return
		}
		again, err := schema.Parse("fuzz.yaml", data)
		if err != nil {
			t.Fatalf("%q: accepted once, refused the second time: %v", data, err)
		}
		if app.Version != again.Version || !reflect.DeepEqual(app.FunctionNames(), again.FunctionNames()) || len(app.Tables) != len(again.Tables) {
			t.Fatalf("%q: two parses disagree", data)
		}
		if len(app.Tables) == 0 {
			t.Fatalf("%q: accepted without tables", data)
		}
		for _, name := range app.FunctionNames() {
			fn := app.Function(name)
			if fn.Kind != schema.Query && fn.Kind != schema.Mutation {
				t.Fatalf("%q: function %s has kind %q", data, name, fn.Kind)
			}
			if len(app.Groups[fn.ShardBy]) == 0 {
				t.Fatalf("%q: function %s runs in group %q, which has no tables", data, name, fn.ShardBy)
			}
			if len(fn.SQL) == 0 {
				t.Fatalf("%q: function %s has no statements", data, name)
			}
			for _, a := range fn.Args {
				switch a.Type {
				case schema.Int, schema.Real, schema.Text, schema.Blob, schema.Bool:
				default:
					t.Fatalf("%q: function %s arg %s has type %q", data, name, a.Name, a.Type)
				}
			}
		}
		_ = app.CheckLimits(schema.DefaultLimits())
		for g := range app.Groups {
			if len(app.GroupDDL(g)) == 0 {
				t.Fatalf("%q: group %s has no DDL", data, g)
			}
		}
	})
}

// FuzzBindArgs feeds arbitrary JSON arguments and shard keys to the
// argument binding of every function of the chat example (ResolveShard,
// then BindArgs, as the gateway calls them) and checks: no panic; a
// refusal is an *api.Error with INVALID_ARGUMENT; accepted arguments are
// complete and typed as declared (every declared argument present, as
// int64, float64, string, []byte or bool — or nil when optional), within
// their max_len; the shard ID is a valid one of the app, its key is the
// bound shard-key argument, and binding the bound arguments again names
// the same shard and gives the same values.
//
//	go test -run '^$' -fuzz '^FuzzBindArgs$' -fuzztime 60s ./schema/
func FuzzBindArgs(f *testing.F) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		f.Fatal(err)
	}
	names := app.FunctionNames()
	for _, s := range []struct {
		fn   uint8
		args string
		key  string
	}{
		{0, `{"room_id": "r1", "author": "a", "body": "hi"}`, ""},
		{1, `{"room_id": "r1", "limit": 9007199254740993}`, "r1"},
		{1, `{"limit": 1e400}`, "r1"},
		{2, `{"room_id": 12}`, ""},
		{3, `{"key": "k", "value": null}`, "__root__"},
		{4, `{"user_id": "u"}`, "__global__"},
		{5, `{"room_id": "a\u0000b"}`, ""},
		{6, `{"room_id": "r", "title": "` + strings.Repeat("x", 300) + `"}`, ""},
		{7, `{"x": 1}`, ""},
		{0, `[]`, ""},
		{0, `{"room_id": true}`, "r"},
		{1, `{"room_id": "r1", "limit": -0.0}`, " 1"},
		{1, `{"room_id": "r1", "limit": 1.5}`, ""},
	} {
		f.Add(s.fn, []byte(s.args), s.key)
	}
	f.Fuzz(func(t *testing.T, fnIndex uint8, rawArgs []byte, shardKey string) {
		fn := app.Function(names[int(fnIndex)%len(names)])
		args, err := schema.DecodeJSONArgs(rawArgs)
		if err != nil {
			checkRefusal(t, "DecodeJSONArgs", rawArgs, err)
			return
		}
		shardID, withKey, err := app.ResolveShard(fn, args, shardKey)
		if err != nil {
			checkRefusal(t, "ResolveShard", rawArgs, err)
			return
		}
		bound, err := fn.BindArgs(withKey)
		if err != nil {
			checkRefusal(t, "BindArgs", rawArgs, err)
			return
		}
		group, key, err := app.ParseShardID(shardID)
		if err != nil {
			t.Fatalf("%s %q key %q: shard %q is not valid: %v", fn.Name, rawArgs, shardKey, shardID, err)
		}
		if group != fn.ShardBy {
			t.Fatalf("%s %q: shard %q is in group %s, the function runs in %s", fn.Name, rawArgs, shardID, group, fn.ShardBy)
		}
		if len(bound) != len(fn.Args) {
			t.Fatalf("%s %q: bound %v, declared %d args", fn.Name, rawArgs, bound, len(fn.Args))
		}
		for _, a := range fn.Args {
			v, ok := bound[a.Name]
			if !ok {
				t.Fatalf("%s %q: %s missing from %v", fn.Name, rawArgs, a.Name, bound)
			}
			if !typedAs(v, a) {
				t.Fatalf("%s %q: %s = %#v, declared %s", fn.Name, rawArgs, a.Name, v, a.Type)
			}
		}
		if a := fn.Arg(fn.ShardBy); a != nil && key != nil {
			if bv := bound[a.Name]; bv != key {
				t.Fatalf("%s %q key %q: shard key %#v, bound shard-key argument %#v", fn.Name, rawArgs, shardKey, key, bv)
			}
		}
		// What was bound binds again to itself, on the same shard.
		again, rebound, err := app.ResolveShard(fn, bound, "")
		if err != nil {
			t.Fatalf("%s %q: rebinding the bound args: %v", fn.Name, rawArgs, err)
		}
		if again != shardID {
			t.Fatalf("%s %q: rebinding names shard %q, first %q", fn.Name, rawArgs, again, shardID)
		}
		twice, err := fn.BindArgs(rebound)
		if err != nil || !reflect.DeepEqual(twice, bound) {
			t.Fatalf("%s %q: rebinding gives %v, %v; first %v", fn.Name, rawArgs, twice, err, bound)
		}
	})
}

func checkRefusal(t *testing.T, step string, in []byte, err error) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != codes.InvalidArgument || ae.Msg == "" {
		t.Fatalf("%s(%q): refusal %T %v, want an INVALID_ARGUMENT *api.Error", step, in, err, err)
	}
}

func typedAs(v any, a *schema.Arg) bool {
	if v == nil {
		return a.Optional || (a.HasDefault && a.Default == nil)
	}
	max := a.MaxLen
	if max == 0 {
		max = schema.DefaultMaxArgLen
	}
	switch a.Type {
	case schema.Int:
		_, ok := v.(int64)
		return ok
	case schema.Real:
		_, ok := v.(float64)
		return ok
	case schema.Bool:
		_, ok := v.(bool)
		return ok
	case schema.Text:
		s, ok := v.(string)
		return ok && len(s) <= max
	case schema.Blob:
		b, ok := v.([]byte)
		return ok && len(b) <= max
	}
	return false
}
