package sqlitex

import (
	"container/list"
	"database/sql/driver"
	"reflect"
)

// stmtCacheSize bounds the prepared statements a connection keeps.
const stmtCacheSize = 128

// stmtCache is a connection's LRU cache of prepared statements, keyed by
// text and by whether the statement was prepared sandboxed. The flag in
// the key is the point: SQLite consults the authorizer when it prepares a
// statement, not when it runs one, so a statement is only safe to run the
// way it was prepared. Used by the connection's one goroutine.
type stmtCache struct {
	max   int
	order *list.List // of *stmtEntry, most recently used first
	byKey map[stmtKey]*list.Element
}

type stmtKey struct {
	sql  string
	user bool
}

type stmtEntry struct {
	key stmtKey
	st  driver.Stmt
}

func (c *stmtCache) init(max int) {
	c.max, c.order, c.byKey = max, list.New(), make(map[stmtKey]*list.Element)
}

func (c *stmtCache) get(sql string, user bool) driver.Stmt {
	e, ok := c.byKey[stmtKey{sql, user}]
	if !ok {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*stmtEntry).st
}

func (c *stmtCache) put(sql string, user bool, st driver.Stmt) {
	k := stmtKey{sql, user}
	c.byKey[k] = c.order.PushFront(&stmtEntry{key: k, st: st})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		ent := last.Value.(*stmtEntry)
		delete(c.byKey, ent.key)
		ent.st.Close()
	}
}

func (c *stmtCache) closeAll() {
	if c.order == nil {
		return
	}
	for e := c.order.Front(); e != nil; e = e.Next() {
		e.Value.(*stmtEntry).st.Close()
	}
	c.init(c.max)
}

// stmtEmpty reports whether a prepared text held no statement at all (only
// whitespace or comments): SQLite then returns no statement handle, and
// running the driver's statement without one crashes the process.
func stmtEmpty(st driver.Stmt) bool {
	v := reflect.ValueOf(st)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return false
	}
	f := v.Elem().FieldByName("s")
	return f.IsValid() && f.Kind() == reflect.Pointer && f.IsNil()
}

// stmtTail returns what follows the first statement of a prepared text
// (the driver keeps SQLite's pzTail but does not export it). A prepared
// statement runs only its first statement; a non-empty tail would be
// silently dropped, so callers refuse it. If a driver upgrade renames the
// field, TestStmtTailIsVisible fails.
func stmtTail(st driver.Stmt) string {
	v := reflect.ValueOf(st)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return ""
	}
	f := v.Elem().FieldByName("t")
	if !f.IsValid() || f.Kind() != reflect.String {
		return ""
	}
	return f.String()
}
