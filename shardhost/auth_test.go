package shardhost_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

// authApp has functions that read their caller with lunora_auth.
const authApp = `tables:
  notes:
    shard_by: room_id
    columns: {room_id: text, id: int, author: text, body: text}
    primary_key: [id]
  seen:
    columns: {k: text}
    primary_key: [k]
functions:
  whoami:
    kind: query
    sql:
      - SELECT lunora_auth() AS sub, lunora_auth('name') AS name, lunora_auth('n') AS n, lunora_auth('f') AS f, lunora_auth('yes') AS yes, lunora_auth('no') AS no, lunora_auth('list') AS list, lunora_auth('obj') AS obj, lunora_auth('absent') AS absent, lunora_auth(NULL) AS null_name
  whoami:write:
    kind: mutation
    sql:
      - INSERT INTO seen(k) VALUES (coalesce(lunora_auth('sub'), 'nobody')) ON CONFLICT(k) DO NOTHING
      - SELECT lunora_auth() AS sub, lunora_auth('n') AS n
  bad:
    kind: query
    sql:
      - SELECT lunora_auth(1)
  notes:add:
    kind: mutation
    shard_by: room_id
    args: {room_id: text, body: text}
    sql:
      - INSERT INTO notes(room_id, author, body) VALUES (:room_id, lunora_auth('sub'), :body)
  notes:mine:
    kind: query
    shard_by: room_id
    args: {room_id: text}
    sql:
      - SELECT id, body FROM notes WHERE author = lunora_auth('sub') ORDER BY id
  notes:all:
    kind: query
    shard_by: room_id
    args: {room_id: text}
    sql:
      - SELECT id, author, lunora_auth('sub') AS viewer FROM notes ORDER BY id
`

func newAuthHost(t *testing.T) *shardhost.Host {
	t.Helper()
	app, err := schema.Parse("auth.yaml", []byte(authApp))
	if err != nil {
		t.Fatal(err)
	}
	return newHost(t, func(c *shardhost.Config) { c.App = app })
}

func as(sub string, claims map[string]any) context.Context {
	if claims == nil {
		claims = map[string]any{}
	}
	claims["sub"] = sub
	return auth.NewContext(context.Background(), &auth.Identity{Method: auth.MethodJWT, Role: auth.RoleClient, Subject: sub, Claims: claims})
}

// TestLunoraAuthClaims: lunora_auth reads the caller in ctx, in queries,
// mutations and admin SQL, converting each JSON type; without a caller
// every call is NULL.
func TestLunoraAuthClaims(t *testing.T) {
	h := newAuthHost(t)
	ctx := as("alice", map[string]any{
		"name": "Alice", "n": float64(7), "f": 1.5, "yes": true, "no": false,
		"list": []any{"a", float64(1)}, "obj": map[string]any{"k": "v"},
	})
	res, err := h.Call(ctx, schema.RootShard, "whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"alice", "Alice", int64(7), 1.5, int64(1), int64(0), `["a",1]`, `{"k":"v"}`, nil, nil}
	if len(res.Rows) != 1 || !sameRow(res.Rows[0], want) {
		t.Fatalf("whoami as alice = %#v; want %#v", res.Rows, want)
	}
	// The same cached statement, another caller: lunora_auth is evaluated
	// per run, never remembered from the last one.
	res, err = h.Call(as("bob", map[string]any{"n": float64(8)}), schema.RootShard, "whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows[0][0] != "bob" || res.Rows[0][1] != nil || res.Rows[0][2] != int64(8) {
		t.Fatalf("whoami as bob = %#v", res.Rows)
	}
	res, err = h.Call(context.Background(), schema.RootShard, "whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range res.Rows[0] {
		if v != nil {
			t.Fatalf("no caller: column %s = %#v; want NULL", res.Columns[i], v)
		}
	}

	// Mutations (through the shard's writer, batched with other callers').
	res, err = h.Call(ctx, schema.RootShard, "whoami:write", nil)
	if err != nil || res.Rows[0][0] != "alice" || res.Rows[0][1] != int64(7) {
		t.Fatalf("whoami:write as alice = %+v, %v", res, err)
	}
	if _, err := h.Call(context.Background(), schema.RootShard, "whoami:write", nil); err != nil {
		t.Fatal(err)
	}
	// Admin SQL sees its caller too.
	res, err = h.Exec(as("svc", nil), schema.RootShard, "SELECT k, lunora_auth() FROM seen ORDER BY k", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 2 || res.Rows[0][0] != "alice" || res.Rows[1][0] != "nobody" || res.Rows[0][1] != "svc" {
		t.Fatalf("seen = %#v", res.Rows)
	}
	res, err = h.Exec(as("svc", nil), schema.RootShard, "UPDATE seen SET k = lunora_auth() WHERE k = 'nobody' RETURNING k", nil)
	if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != "svc" {
		t.Fatalf("admin write with lunora_auth = %+v, %v", res, err)
	}

	_, err = h.Call(ctx, schema.RootShard, "bad", nil)
	if api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "claim name must be text") {
		t.Fatalf("lunora_auth(1): %v", err)
	}
}

// TestLunoraAuthPerRow: in a statement over many rows, every row sees the
// caller (the deterministic registration factors the constant call out of
// the loop; its value is still the current caller's).
func TestLunoraAuthPerRow(t *testing.T) {
	h := newAuthHost(t)
	for i, who := range []string{"alice", "bob", "alice"} {
		if _, err := h.Call(as(who, nil), "room_id=r", "notes:add", map[string]any{"room_id": "r", "body": string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, viewer := range []string{"carol", "dave"} {
		res, err := h.Call(as(viewer, nil), "room_id=r", "notes:all", map[string]any{"room_id": "r"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Rows) != 3 {
			t.Fatalf("rows %v", res.Rows)
		}
		for _, row := range res.Rows {
			if row[2] != viewer {
				t.Fatalf("viewer %s: row %v", viewer, row)
			}
		}
		mine, err := h.Call(as("alice", nil), "room_id=r", "notes:mine", map[string]any{"room_id": "r"})
		if err != nil || len(mine.Rows) != 2 {
			t.Fatalf("alice's notes = %+v, %v", mine, err)
		}
	}
}

// TestChatAuthorRule: in the example app, only a message's author edits or
// deletes it; anyone else gets the lunora_assert error
// (FAILED_PRECONDITION).
func TestChatAuthorRule(t *testing.T) {
	h := newHost(t, nil)
	room := map[string]any{"rooms": []any{"r1"}}
	alice, bob := as("alice", room), as("bob", map[string]any{"rooms": []any{"r1"}})
	res, err := h.Call(alice, "room_id=r1", "messages:post", map[string]any{"room_id": "r1", "body": "hello"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Rows[0][0].(int64)
	list := func() []any {
		res, err := h.Call(alice, "room_id=r1", "messages:list", map[string]any{"room_id": "r1"})
		if err != nil || len(res.Rows) == 0 {
			t.Fatalf("list: %+v, %v", res, err)
		}
		return res.Rows[0] // id, author, body, created_at
	}
	if row := list(); row[1] != "alice" || row[2] != "hello" {
		t.Fatalf("posted row %v: the author is the caller's sub", row)
	}
	edit := func(ctx context.Context, body string) error {
		_, err := h.Call(ctx, "room_id=r1", "messages:edit", map[string]any{"room_id": "r1", "id": id, "body": body})
		return err
	}
	if err := edit(alice, "hello, edited"); err != nil {
		t.Fatalf("the author edits: %v", err)
	}
	for name, ctx := range map[string]context.Context{"another subject": bob, "no caller": context.Background()} {
		err := edit(ctx, "hijacked")
		if api.CodeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "only the author can edit a message") {
			t.Fatalf("%s edits: %v; want FAILED_PRECONDITION from lunora_assert", name, err)
		}
		_, err = h.Call(ctx, "room_id=r1", "messages:delete", map[string]any{"room_id": "r1", "id": id})
		if api.CodeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "only the author can delete a message") {
			t.Fatalf("%s deletes: %v", name, err)
		}
	}
	if row := list(); row[2] != "hello, edited" {
		t.Fatalf("body %v: another subject's edit must not apply", row[2])
	}
	_, err = h.Call(context.Background(), "room_id=r1", "messages:post", map[string]any{"room_id": "r1", "body": "anon"})
	if api.CodeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "needs a caller") {
		t.Fatalf("post without a caller: %v", err)
	}
	if _, err := h.Call(alice, "room_id=r1", "messages:delete", map[string]any{"room_id": "r1", "id": id}); err != nil {
		t.Fatalf("the author deletes: %v", err)
	}
	if n := count(t, h, "r1"); n != 0 {
		t.Fatalf("%d messages after the author's delete", n)
	}
}

// TestLiveQueryPerCaller: a live query that reads its caller is evaluated
// per caller — each subscriber sees its own result, before and after
// commits — while two subscribers with one identity share an evaluation.
func TestLiveQueryPerCaller(t *testing.T) {
	h := newAuthHost(t)
	args := map[string]any{"room_id": "r"}
	sub := func(ctx context.Context) *shardhost.Subscription {
		s, err := h.Subscribe(ctx, "room_id=r", "notes:mine", args, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	if _, err := h.Call(as("alice", nil), "room_id=r", "notes:add", map[string]any{"room_id": "r", "body": "a1"}); err != nil {
		t.Fatal(err)
	}
	alice, bob := sub(as("alice", nil)), sub(as("bob", nil))
	if u := next(t, alice); u.Kind != shardhost.UpdateSnapshot || len(u.Rows) != 1 || u.Rows[0][1] != "a1" {
		t.Fatalf("alice's snapshot %+v", u)
	}
	if u := next(t, bob); u.Kind != shardhost.UpdateSnapshot || len(u.Rows) != 0 {
		t.Fatalf("bob's snapshot %+v: he has no notes", u)
	}
	// Alice writes again; then bob writes. Bob's next update is his own
	// note only: alice's commit changed nothing he sees.
	if _, err := h.Call(as("alice", nil), "room_id=r", "notes:add", map[string]any{"room_id": "r", "body": "a2"}); err != nil {
		t.Fatal(err)
	}
	if u := next(t, alice); u.Kind != shardhost.UpdateDelta || len(u.Changes) != 1 || u.Changes[0].Row[1] != "a2" {
		t.Fatalf("alice's delta %+v", u)
	}
	res, err := h.Call(as("bob", nil), "room_id=r", "notes:add", map[string]any{"room_id": "r", "body": "b1"})
	if err != nil {
		t.Fatal(err)
	}
	u := next(t, bob)
	if u.Kind != shardhost.UpdateDelta || len(u.Changes) != 1 || u.Changes[0].Row[1] != "b1" || u.Seq != res.Seq {
		t.Fatalf("bob's delta %+v; want only his note b1 at seq %d", u, res.Seq)
	}
	// A second subscriber as alice shares her evaluation and sees her rows;
	// a subscriber without a caller sees none.
	alice2 := sub(as("alice", nil))
	if u := next(t, alice2); len(u.Rows) != 2 {
		t.Fatalf("alice's second subscription %+v", u)
	}
	anon := sub(context.Background())
	if u := next(t, anon); len(u.Rows) != 0 {
		t.Fatalf("no caller: %+v", u)
	}
}
