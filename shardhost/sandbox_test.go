package shardhost_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

func TestSandboxRefusesEscapes(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	if _, err := send(ctx, h, "r1", "a", "seed"); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "outside.db")
	cases := []struct {
		name, sql string
		code      codes.Code
	}{
		{"attach", fmt.Sprintf("ATTACH '%s' AS o", outside), codes.PermissionDenied},
		{"attach in select", "SELECT 1 FROM (SELECT 1) WHERE 0; ATTACH 'x' AS y", codes.InvalidArgument},
		{"detach", "DETACH main", codes.PermissionDenied},
		{"writable_schema", "PRAGMA writable_schema = ON", codes.PermissionDenied},
		{"journal_mode", "PRAGMA journal_mode = DELETE", codes.PermissionDenied},
		{"load_extension", "SELECT load_extension('/tmp/evil.so')", codes.PermissionDenied},
		{"driver auth function", "SELECT auth_user_add('u', 'p', 1)", codes.PermissionDenied},
		{"driver auth check", "SELECT auth_enabled()", codes.PermissionDenied},
		{"vacuum into", fmt.Sprintf("VACUUM INTO '%s'", outside), codes.PermissionDenied},
		{"create table", "CREATE TABLE evil(x)", codes.PermissionDenied},
		{"drop table", "DROP TABLE messages", codes.PermissionDenied},
		{"create trigger", "CREATE TRIGGER t AFTER INSERT ON messages BEGIN DELETE FROM messages; END", codes.PermissionDenied},
		{"begin", "BEGIN", codes.PermissionDenied},
		{"commit", "COMMIT", codes.PermissionDenied},
		{"write meta", "UPDATE __lunora_meta SET v = 0 WHERE k = 'seq'", codes.PermissionDenied},
		{"write sqlite_schema", "DELETE FROM sqlite_schema", codes.PermissionDenied}, // SQLite refuses it while parsing
		{"update sqlite_master", "UPDATE sqlite_master SET sql = 'x'", codes.PermissionDenied},
		{"insert main.sqlite_master", "INSERT INTO main.sqlite_master VALUES (1, 2, 3, 4, 5)", codes.PermissionDenied},
		{"begin immediate", "BEGIN IMMEDIATE", codes.PermissionDenied},
		{"registered", "INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('registered', 1)", codes.PermissionDenied},
		{"with delete meta", "WITH x AS (SELECT 1) DELETE FROM __lunora_meta", codes.PermissionDenied},
		{"positional param", "SELECT ?", codes.InvalidArgument},
		{"two statements", "SELECT 1; SELECT 2", codes.InvalidArgument},
		{"empty", "  ", codes.InvalidArgument},
		{"typo", "SELEC 1", codes.InvalidArgument},
		{"syntax", "SELECT FROM messages WHERE", codes.InvalidArgument},
		{"no such table", "SELECT * FROM nope", codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.Exec(ctx, "room_id=r1", tc.sql, nil)
			if got := api.CodeOf(err); got != tc.code {
				t.Fatalf("%s: code %v (%v), want %v", tc.sql, got, err, tc.code)
			}
		})
	}
	if _, err := os.Stat(outside); !os.IsNotExist(err) {
		t.Fatalf("a statement created %s outside the shard", outside)
	}
	// The shard still serves, its data and bookkeeping intact.
	if n := count(t, h, "r1"); n != 1 {
		t.Fatalf("rows = %d after refused statements", n)
	}
	res, err := h.Exec(ctx, "room_id=r1", "SELECT count(*) FROM messages WHERE author = :a", map[string]any{"a": "a"})
	if err != nil || res.Rows[0][0] != int64(1) {
		t.Fatalf("admin select = %+v, %v", res, err)
	}
	res, err = send(ctx, h, "r1", "a", "after")
	if err != nil || res.Seq != 2 {
		t.Fatalf("send after refusals: %+v %v", res, err)
	}
}

func TestRowOwnership(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	if _, err := send(ctx, h, "mine", "a", "ok"); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		"INSERT INTO messages(room_id, author, body, created_at) VALUES ('theirs', 'a', 'x', 0)",
		"INSERT INTO messages(room_id, author, body, created_at) VALUES (NULL, 'a', 'x', 0)",
		"UPDATE messages SET room_id = 'theirs'",
		"INSERT INTO rooms(room_id, title) VALUES ('theirs', 't')",
	} {
		_, err := h.Exec(ctx, "room_id=mine", sql, nil)
		if !errors.Is(err, shardhost.ErrForeignRow) || api.CodeOf(err) != codes.InvalidArgument {
			t.Fatalf("%s: want ErrForeignRow, got %v", sql, err)
		}
	}
	// The function path refuses a mismatched key before it reaches SQL.
	_, err := h.Call(ctx, "room_id=mine", "messages:send", map[string]any{"room_id": "theirs", "author": "a", "body": "x"})
	if api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("mismatched key: %v", err)
	}
	if n := count(t, h, "mine"); n != 1 {
		t.Fatalf("rows = %d", n)
	}
	if _, err := h.Exec(ctx, "room_id=mine", "INSERT INTO rooms(room_id, title) VALUES ('mine', 't')", nil); err != nil {
		t.Fatalf("own row refused: %v", err)
	}
}

func TestFullMailbox(t *testing.T) {
	hook, held, release := holdWriter("room_id=full")
	h := newHost(t, func(c *shardhost.Config) { c.BeforeBatch = hook; c.MailboxSize = 4 })
	defer release()
	ctx := context.Background()
	errs := make(chan error, 5)
	go func() { _, err := send(ctx, h, "full", "w", "taken"); errs <- err }()
	<-held
	for i := 0; i < 4; i++ {
		go func() { _, err := send(ctx, h, "full", "w", "queued"); errs <- err }()
	}
	waitFor(t, 5*time.Second, func() error {
		if n := shardhost.QueuedLen(h); n != 4 {
			return fmt.Errorf("%d queued", n)
		}
		return nil
	})
	_, err := send(ctx, h, "full", "w", "overflow")
	if !errors.Is(err, shardhost.ErrMailboxFull) || api.CodeOf(err) != codes.ResourceExhausted || api.RetryAfterOf(err) <= 0 {
		t.Fatalf("want ErrMailboxFull with a retry hint, got %v", err)
	}
	// Other shards keep serving while this one is full.
	if _, err := send(ctx, h, "other", "w", "fine"); err != nil {
		t.Fatal(err)
	}
	release()
	for i := 0; i < 5; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, h, "full"); n != 5 {
		t.Fatalf("rows = %d, want 5", n)
	}
}

func TestBadCalls(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	cases := []struct {
		name, shard, fn string
		args            map[string]any
		code            codes.Code
	}{
		{"unknown function", "room_id=r", "nope:nope", nil, codes.NotFound},
		{"missing arg", "room_id=r", "messages:send", map[string]any{"room_id": "r", "author": "a"}, codes.InvalidArgument},
		{"mistyped arg", "room_id=r", "messages:list", map[string]any{"room_id": "r", "limit": "ten"}, codes.InvalidArgument},
		{"unknown arg", "room_id=r", "messages:list", map[string]any{"room_id": "r", "bogus": int64(1)}, codes.InvalidArgument},
		{"too long", "room_id=r", "messages:send", map[string]any{"room_id": "r", "author": "a", "body": strings.Repeat("x", 4001)}, codes.InvalidArgument},
		{"wrong group", "__root__", "messages:send", map[string]any{"room_id": "r", "author": "a", "body": "b"}, codes.InvalidArgument},
		{"bad shard id", "tenant=7", "messages:send", map[string]any{"room_id": "r", "author": "a", "body": "b"}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.Call(ctx, tc.shard, tc.fn, tc.args)
			if got := api.CodeOf(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
		})
	}
	if _, err := h.Call(ctx, "__root__", "settings:set", map[string]any{"key": "k", "value": "v"}); err != nil {
		t.Fatal(err)
	}
	// An empty shard ID names the root shard.
	res, err := h.Call(ctx, "", "settings:get", map[string]any{"key": "k"})
	if err != nil || res.ShardID != "__root__" || len(res.Rows) != 1 || res.Rows[0][1] != "v" {
		t.Fatalf("root get = %+v, %v", res, err)
	}
}
