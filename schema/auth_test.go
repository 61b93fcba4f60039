package schema_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lunora/lunora/schema"
)

// authBase has a sharded function (lines 7-11), a root function (12-14)
// and a global one (15-18); each case appends an auth line to one of them.
const authBase = `tables:
  t: {shard_by: k, columns: {k: text, v: int}, primary_key: [k]}
  r: {columns: {k: text}, primary_key: [k]}
  g: {global: true, columns: {k: text}, primary_key: [k]}
functions:
  # sharded
  f:
    kind: query
    shard_by: k
    args: {k: text}
    sql: [SELECT v FROM t WHERE k = :k]
  root:
    kind: query
    sql: [SELECT k FROM r]
  glob:
    kind: query
    global: true
    sql: [SELECT k FROM g]
`

// withAuth inserts line (indented as a function key) after the line that
// starts with after.
func withAuth(after, line string) string {
	i := strings.Index(authBase, after)
	j := i + strings.Index(authBase[i:], "\n") + 1
	return authBase[:j] + "    " + line + "\n" + authBase[j:]
}

func TestFunctionAuthParses(t *testing.T) {
	app, err := schema.Parse("app.yaml", []byte(authBase))
	if err != nil {
		t.Fatal(err)
	}
	if app.Function("f").Auth != nil || app.Function("f").Auth.Allows("client") {
		t.Fatal("a function without auth: has no auth block and allows no listed role")
	}
	for _, tc := range []struct {
		line  string
		roles []string
		claim string
	}{
		{"auth: {roles: [client], shard_key_claim: sub}", []string{"client"}, "sub"},
		{"auth: {roles: [client, service]}", []string{"client", "service"}, ""},
		{"auth: {roles: client, shard_key_claim: 'https://example.com/rooms'}", []string{"client"}, "https://example.com/rooms"},
	} {
		app, err := schema.Parse("app.yaml", []byte(withAuth("    sql: [SELECT v", tc.line)))
		if err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
		a := app.Function("f").Auth
		if a == nil || strings.Join(a.Roles, ",") != strings.Join(tc.roles, ",") || a.ShardKeyClaim != tc.claim || a.Line != 12 {
			t.Fatalf("%s: auth = %+v", tc.line, a)
		}
		if !a.Allows("client") || a.Allows("admin") {
			t.Fatalf("%s: Allows", tc.line)
		}
	}
	// Root and global functions may grant clients, without a shard scope.
	if _, err := schema.Parse("app.yaml", []byte(withAuth("    sql: [SELECT k FROM r]", "auth: {roles: [client]}"))); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.Parse("app.yaml", []byte(withAuth("    sql: [SELECT k FROM g]", "auth: {roles: [client]}"))); err != nil {
		t.Fatal(err)
	}
}

func TestFunctionAuthInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		line       int
		want       string
	}{
		{"unknown key", withAuth("    sql: [SELECT v", "auth: {roles: [client], role: client}"), 12, `unknown key "role" (allowed: roles, shard_key_claim)`},
		{"unknown role", withAuth("    sql: [SELECT v", "auth: {roles: [client, user]}"), 12, `unknown role "user" (allowed: admin, service, client)`},
		{"duplicate role", withAuth("    sql: [SELECT v", "auth: {roles: [client, client]}"), 12, `names "client" twice`},
		{"no roles", withAuth("    sql: [SELECT v", "auth: {shard_key_claim: sub}"), 12, "auth.roles must list at least one role"},
		{"empty roles", withAuth("    sql: [SELECT v", "auth: {roles: []}"), 12, "auth.roles must list at least one role"},
		{"not a mapping", withAuth("    sql: [SELECT v", "auth: client"), 12, "auth of f must be a mapping"},
		{"claim without client", withAuth("    sql: [SELECT v", "auth: {roles: [service], shard_key_claim: sub}"), 12, "does not list client"},
		{"bad claim name", withAuth("    sql: [SELECT v", "auth: {roles: [client], shard_key_claim: 'a b'}"), 12, "must name a claim"},
		{"claim on root function", withAuth("    sql: [SELECT k FROM r]", "auth: {roles: [client], shard_key_claim: sub}"), 15, "runs in the root shard, which has no shard key"},
		{"claim on global function", withAuth("    sql: [SELECT k FROM g]", "auth: {roles: [client], shard_key_claim: sub}"), 19, "runs on the global tier, which has no shard key"},
		{"lunora_auth in a global function", strings.Replace(authBase, "SELECT k FROM g]", "SELECT k FROM g WHERE k = lunora_auth('sub')]", 1), 15, "lunora_auth() is not available here: global functions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := schema.Parse("app.yaml", []byte(tc.yaml))
			var le *schema.LineError
			if !errors.As(err, &le) {
				t.Fatalf("want *LineError, got %v", err)
			}
			if le.Line != tc.line || !strings.Contains(le.Msg, tc.want) {
				t.Fatalf("got %q (line %d), want line %d containing %q", err, le.Line, tc.line, tc.want)
			}
		})
	}
}

func TestReadsCaller(t *testing.T) {
	src := strings.Replace(authBase, "SELECT v FROM t WHERE k = :k", "SELECT v FROM t WHERE k = :k AND LUNORA_AUTH('sub') IS NOT NULL", 1)
	app, err := schema.Parse("app.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if !app.Function("f").ReadsCaller || app.Function("root").ReadsCaller {
		t.Fatalf("ReadsCaller: f %v, root %v", app.Function("f").ReadsCaller, app.Function("root").ReadsCaller)
	}
	// lunora_auth in shard functions and with no argument prepares fine.
	src = strings.Replace(authBase, "[SELECT k FROM r]", "['SELECT k, lunora_auth() FROM r']", 1)
	if _, err := schema.Parse("app.yaml", []byte(src)); err != nil {
		t.Fatal(err)
	}
}
