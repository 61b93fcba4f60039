package sqlitex

/*
#include <stdlib.h>
#include "match_shim.h"
*/
import "C"

import (
	"fmt"
	"reflect"
	"runtime/cgo"
	"unsafe"
)

// fastMatchSteps bounds the worst case (pattern bytes × text bytes) of a
// LIKE or GLOB call left to SQLite's own matcher — a few milliseconds at
// most. Longer calls run matchText, which stops at the deadline.
const fastMatchSteps = 1 << 22

// matchState is what a connection's LIKE and GLOB need: C memory SQLite
// holds a pointer to, and the handle through which it finds the Conn.
type matchState struct {
	cfg    *C.lunora_match_cfg
	handle cgo.Handle
	db     *C.sqlite3     // the connection's handle, for TotalChanges
	slots  unsafe.Pointer // the Go functions' lunora_fn_slot array (callbacks.go)
}

// registerMatch replaces like() and glob() on c with the shim in
// match_shim.c: SQLite's matcher for cheap calls (native speed), matchText
// for those whose worst case is long.
func (c *Conn) registerMatch(fastSteps int64) error {
	db := reflect.ValueOf(c.C).Elem().FieldByName("db")
	if !db.IsValid() || db.Kind() != reflect.Pointer || db.IsNil() {
		return fmt.Errorf("sqlitex: cannot reach the connection's sqlite3 handle to register LIKE and GLOB")
	}
	cfg := (*C.lunora_match_cfg)(C.malloc(C.size_t(unsafe.Sizeof(C.lunora_match_cfg{}))))
	c.match = matchState{cfg: cfg, handle: cgo.NewHandle(c)}
	cfg.handle = C.uintptr_t(c.match.handle)
	cfg.fast_steps = C.int64_t(fastSteps)
	cfg.max_pattern = C.int(maxPatternLen)
	c.match.db = (*C.sqlite3)(db.UnsafePointer())
	if rc := C.lunora_register_match(c.match.db, cfg); rc != 0 {
		return fmt.Errorf("sqlitex: register LIKE and GLOB: SQLite error %d", int(rc))
	}
	return nil
}

// registerCore registers lunora_now() and lunora_assert() in C on c
// (match_shim.c), on the state registerMatch set up: no cgo callback and
// no reflection per call. syncNow passes Conn.Now to lunora_now.
func (c *Conn) registerCore() error {
	db := reflect.ValueOf(c.C).Elem().FieldByName("db")
	if c.match.cfg == nil || !db.IsValid() || db.Kind() != reflect.Pointer || db.IsNil() {
		return fmt.Errorf("sqlitex: cannot reach the connection's sqlite3 handle to register lunora_now and lunora_assert")
	}
	if rc := C.lunora_register_core((*C.sqlite3)(db.UnsafePointer()), c.match.cfg); rc != 0 {
		return fmt.Errorf("sqlitex: register lunora_now and lunora_assert: SQLite error %d", int(rc))
	}
	return nil
}

// syncNow gives lunora_now the time Conn.Now says (the wall clock when
// zero); every statement of the connection runs after it.
func (c *Conn) syncNow() {
	if cfg := c.match.cfg; cfg != nil {
		if c.Now.IsZero() {
			cfg.has_now = 0
		} else {
			cfg.now_ms, cfg.has_now = C.int64_t(c.Now.UnixMilli()), 1
		}
	}
}

//export lunoraAssertFailed
func lunoraAssertFailed(h C.uintptr_t, m *C.char, n C.int) {
	c := cgo.Handle(h).Value().(*Conn)
	msg := C.GoStringN(m, n)
	if msg == "" {
		msg = "lunora_assert failed"
	}
	c.assertMsg = msg
}

// totalChanges is sqlite3_total_changes64: one cgo call, where a
// "SELECT total_changes()" costs a statement run and several.
func (c *Conn) totalChanges() int64 { return int64(C.lunora_total_changes(c.match.db)) }

// setFastMatchSteps changes the bound of registerMatch; tests set it to 0
// to send every call to matchText.
func (c *Conn) setFastMatchSteps(n int64) { c.match.cfg.fast_steps = C.int64_t(n) }

// free releases the state; call it only after the connection is closed.
func (m *matchState) free() {
	if m.cfg != nil {
		C.free(unsafe.Pointer(m.cfg))
		m.handle.Delete()
		m.cfg = nil
	}
	if m.slots != nil {
		C.free(m.slots)
		m.slots = nil
	}
}

//export lunoraMatchSlow
func lunoraMatchSlow(h C.uintptr_t, p *C.char, np C.int, s *C.char, ns C.int, esc C.uint, hasEsc C.int, glob C.int) C.int {
	c := cgo.Handle(h).Value().(*Conn)
	pat := C.GoStringN(p, np)
	str := C.GoStringN(s, ns)
	ok, err := c.matchText(pat, str, rune(esc), hasEsc != 0, glob == 0)
	switch {
	case err != nil:
		return -1
	case ok:
		return 1
	}
	return 0
}
