package sqlitex

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// nativeConn is a plain driver connection: SQLite's own LIKE, GLOB,
// instr, replace and trim, to compare Lunora's replacements against.
func nativeConn(t *testing.T) *sqlite3.SQLiteConn {
	t.Helper()
	dc, err := sqliteDriver.Open("file::memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	return dc.(*sqlite3.SQLiteConn)
}

func lunoraConn(t *testing.T) *Conn {
	t.Helper()
	c, err := Open(":memory:", Options{Synchronous: "OFF", CacheKiB: 256, MaxSQLLen: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func nativeValue(t *testing.T, c *sqlite3.SQLiteConn, query string, args []driver.NamedValue) (any, error) {
	t.Helper()
	rows, err := c.QueryContext(context.Background(), query, args)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil && err != io.EOF {
		return nil, err
	}
	return dest[0], nil
}

func lunoraValue(c *Conn, query string, args []driver.NamedValue) (any, error) {
	c.User = true
	defer func() { c.User = false }()
	_, rows, err := c.QueryRows(context.Background(), query, args, Limits{MaxRows: 10, MaxBytes: 1 << 20})
	if err != nil {
		return nil, err
	}
	return rows[0][0], nil
}

func same(a, b any) bool {
	if ab, ok := a.([]byte); ok {
		bb, ok := b.([]byte)
		return ok && string(ab) == string(bb)
	}
	return reflect.DeepEqual(a, b)
}

// TestBoundedFunctionsMatchSQLite compares each replacement with SQLite's
// built-in on hand-picked cases and on seeded random ones over small
// alphabets (where wildcards, escapes and sets collide most).
func TestBoundedFunctionsMatchSQLite(t *testing.T) {
	t.Run("fast path", func(t *testing.T) { testMatchesSQLite(t, fastMatchSteps) })
	t.Run("interruptible path", func(t *testing.T) { testMatchesSQLite(t, 0) })
}

func testMatchesSQLite(t *testing.T, fastSteps int64) {
	nat, lun := nativeConn(t), lunoraConn(t)
	lun.setFastMatchSteps(fastSteps)
	check := func(query string, args ...any) {
		t.Helper()
		named := make([]driver.NamedValue, len(args))
		for i, a := range args {
			named[i] = driver.NamedValue{Name: fmt.Sprint("a", i), Value: a}
		}
		want, werr := nativeValue(t, nat, query, named)
		got, gerr := lunoraValue(lun, query, named)
		if (werr != nil) != (gerr != nil) || !same(want, got) {
			t.Errorf("%s %q: SQLite %#v (%v), Lunora %#v (%v)", query, args, want, werr, got, gerr)
		}
	}
	like := "SELECT :a1 LIKE :a0"
	likeEsc := "SELECT :a1 LIKE :a0 ESCAPE :a2"
	glob := "SELECT :a1 GLOB :a0"
	for _, c := range [][2]any{
		{"%", ""}, {"", ""}, {"_", ""}, {"a", "A"}, {"A%", "abc"}, {"%c", "ABC"}, {"a_c", "abc"},
		{"a_c", "ac"}, {"%b%", "abc"}, {"%%%", "x"}, {"ä", "Ä"}, {"_", "ä"}, {"é%", "éa"},
		{"%a%b%c", "xxaxxbxxc"}, {"%a%b%c", "xxaxxcxxb"}, {nil, "a"}, {"a", nil},
		{"1%", int64(12)}, {"1._", 1.5}, {"%", []byte("blob")}, {"b%", []byte("blob")},
	} {
		check(like, c[0], c[1])
	}
	for _, c := range [][3]any{
		{"a!%", "a%", "!"}, {"a!%", "ab", "!"}, {"!_", "_", "!"}, {"a!", "a", "!"}, {"%!%%", "50%", "!"},
		{"a", "a", "ab"}, {"a", "a", ""}, {"a", "a", nil}, {"aää", "aä", "ä"}, {"x%", "X", "%"},
	} {
		check(likeEsc, c[0], c[1], c[2])
	}
	for _, c := range [][2]any{
		{"*", ""}, {"a*", "abc"}, {"A*", "abc"}, {"?", "ä"}, {"[abc]", "b"}, {"[^abc]", "b"},
		{"[a-c]x", "bx"}, {"[]]", "]"}, {"[^]]", "a"}, {"[a-]", "-"}, {"[-a]", "-"}, {"[abc", "a"},
		{"*[abc", "xa"}, {"*[b]*", "abc"}, {"a[", "a["}, {"*?", ""}, {"**a", "ba"}, {"[z-a]", "m"},
		{"*x*[0-9]", "axb5"},
	} {
		check(glob, c[0], c[1])
	}
	for _, c := range [][2]any{
		{"hello", "l"}, {"hello", ""}, {"", "a"}, {"äbc", "c"}, {[]byte("abc"), []byte("c")},
		{[]byte("äbc"), "c"}, {int64(12345), int64(34)}, {1.5, "5"}, {nil, "a"}, {"a", nil},
	} {
		check("SELECT instr(:a0, :a1)", c[0], c[1])
	}
	for _, c := range [][3]any{
		{"hello", "l", "L"}, {"hello", "", "x"}, {"hello", "l", nil}, {nil, "l", "x"}, {"hello", nil, "x"},
		{int64(1212), int64(2), "x"}, {int64(12), "", "x"}, {"äää", "ä", "ab"}, {[]byte("abc"), "b", "x"},
	} {
		check("SELECT replace(:a0, :a1, :a2)", c[0], c[1], c[2])
	}
	for _, fn := range []string{"trim", "ltrim", "rtrim"} {
		for _, c := range [][2]any{
			{"xxhixx", "x"}, {"xyhiyx", "yx"}, {"hi", ""}, {"", "x"}, {nil, "x"}, {"x", nil},
			{"äähiä", "ä"}, {int64(1001), int64(1)}, {"abc", "abc"},
		} {
			check("SELECT "+fn+"(:a0, :a1)", c[0], c[1])
		}
	}

	rng := rand.New(rand.NewSource(1))
	word := func(alphabet string, max int) string {
		r := []rune(alphabet)
		var b strings.Builder
		for n := rng.Intn(max + 1); n > 0; n-- {
			b.WriteRune(r[rng.Intn(len(r))])
		}
		return b.String()
	}
	for i := 0; i < 3000; i++ {
		s := word("abAB", 8)
		check(like, word("aAb%_", 6), s)
		check(likeEsc, word("ab%_!", 6), word("ab%_", 6), "!")
		check(glob, word("abAB*?[]^-", 7), s)
		check("SELECT instr(:a0, :a1)", s, word("ab", 3))
		check("SELECT replace(:a0, :a1, :a2)", s, word("ab", 2), word("xy", 2))
		check("SELECT trim(:a0, :a1)", s, word("aB", 2))
	}
}

// TestStmtTailIsVisible guards stmtTail against a driver upgrade renaming
// the field it reads: without it, a second statement in a text would be
// silently dropped instead of refused.
func TestStmtTailIsVisible(t *testing.T) {
	c := lunoraConn(t)
	st, err := c.C.Prepare("SELECT 1; SELECT 2")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := stmtTail(st); got != "SELECT 2" {
		t.Fatalf("stmtTail = %q, want %q", got, "SELECT 2")
	}
	if stmtEmpty(st) {
		t.Fatal("stmtEmpty on a statement")
	}
	empty, err := c.C.Prepare("-- only a comment")
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if !stmtEmpty(empty) {
		t.Fatal("stmtEmpty misses a text without a statement: running it would crash")
	}
	for _, q := range []string{"-- x", "/* y */", "  ", ";"} {
		if _, _, err := c.QueryRows(context.Background(), q, nil, Limits{MaxRows: 1, MaxBytes: 64}); err == nil {
			t.Fatalf("%q ran", q)
		}
	}
	c.User = true
	if _, _, err := c.QueryRows(context.Background(), "SELECT 1; DELETE FROM sqlite_master", nil, Limits{MaxRows: 1, MaxBytes: 64}); err == nil {
		t.Fatal("a text with two statements ran")
	}
}

// TestCachedStatementKeepsItsSandbox: the same text prepared once by the
// runtime (unsandboxed) and then asked for as user SQL is prepared again,
// sandboxed, and refused.
func TestCachedStatementKeepsItsSandbox(t *testing.T) {
	c := lunoraConn(t)
	ctx := context.Background()
	if _, err := c.Exec(ctx, "CREATE TABLE __lunora_meta(k TEXT PRIMARY KEY, v)"); err != nil {
		t.Fatal(err)
	}
	texts := []string{"BEGIN IMMEDIATE", "INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('registered', 1)", "COMMIT"}
	for _, q := range texts {
		if _, err := c.ExecSys(q); err != nil {
			t.Fatalf("system %q: %v", q, err)
		}
	}
	for _, q := range texts {
		if _, _, err := c.QueryRows(ctx, q, nil, Limits{MaxRows: 1, MaxBytes: 64}); err != nil {
			t.Fatalf("system %q through QueryRows: %v", q, err)
		}
	}
	c.User = true
	for _, q := range texts {
		c.Reset()
		_, _, err := c.QueryRows(ctx, q, nil, Limits{MaxRows: 1, MaxBytes: 64})
		if err == nil || c.denied == "" {
			t.Errorf("user %q: %v, want the sandbox's refusal", q, err)
		}
	}
	if !c.C.AutoCommit() {
		t.Fatal("a user statement opened a transaction")
	}
}

func TestBudgetHeldUntilReleased(t *testing.T) {
	c := lunoraConn(t)
	b := NewBudget(1 << 20)
	var held int64
	ctx := context.Background()
	q := "SELECT printf('%.*c', 600000, 'a')"
	if _, _, err := c.QueryRows(ctx, q, nil, Limits{MaxRows: 1, MaxBytes: 1 << 20, Budget: b, Held: &held}); err != nil {
		t.Fatal(err)
	}
	if held < 600000 || b.InUse() != held {
		t.Fatalf("held %d, in use %d", held, b.InUse())
	}
	if _, _, err := c.QueryRows(ctx, q, nil, Limits{MaxRows: 1, MaxBytes: 1 << 20, Budget: b}); err == nil {
		t.Fatal("a second result fitted in a budget the first one holds")
	}
	if b.InUse() != held {
		t.Fatalf("a refused result kept %d bytes", b.InUse()-held)
	}
	b.Release(held)
	if _, _, err := c.QueryRows(ctx, q, nil, Limits{MaxRows: 1, MaxBytes: 1 << 20, Budget: b}); err != nil || b.InUse() != 0 {
		t.Fatalf("after release: %v, in use %d", err, b.InUse())
	}
	// A result larger than the whole budget can never fit: too large, not
	// busy (a retry hint would be a lie).
	_, _, err := c.QueryRows(ctx, "SELECT printf('%.*c', 1100000, 'a')", nil, Limits{MaxRows: 1, MaxBytes: 2 << 20, Budget: b})
	if !errors.Is(err, ErrResultTooLarge) || b.InUse() != 0 {
		t.Fatalf("a result over the whole budget: %v (in use %d), want result too large", err, b.InUse())
	}
}

func TestEncodedLenMatchesJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "\x01\x02", "<a&b>", "tab\there\n", "\"q\"\\", "\u2028x", "ä€😀", "bad\xffutf8"} {
		want := len(jsonMarshal(t, s))
		if got := jsonStringLen(s); got != want {
			t.Errorf("jsonStringLen(%q) = %d, encoding/json writes %d", s, got, want)
		}
	}
}
