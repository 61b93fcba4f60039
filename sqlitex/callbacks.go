package sqlitex

/*
#include <stdlib.h>
#include <string.h>
#include "match_shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime/cgo"
	"unsafe"
)

// Lunora's SQL functions written in Go, its authorizer and its update
// hook reach SQLite through the C trampolines of callbacks_shim.c, not
// through the driver's RegisterFunc/RegisterAuthorizer/RegisterUpdateHook.
// The driver keeps every such callback of every connection in one
// process-wide map and scans all of it when any connection closes: with
// thousands of active shards (15 callbacks per connection) a close cost
// milliseconds of CPU, paid by every hibernation. It also converts each
// call's arguments by reflection. Here a connection's callbacks hang off
// its own state (the cgo.Handle registerMatch made), and a close frees
// them in O(1).

// argKind is how a Go function's parameter receives its SQL value. The
// conversions and their errors are the driver's, so that functions
// behave as they did when it registered them.
type argKind uint8

const (
	// argAny: INTEGER as int64, REAL as float64, TEXT as string, BLOB as
	// []byte and NULL as a nil []byte.
	argAny argKind = iota
	// argText: TEXT or BLOB as a string; anything else is an error.
	argText
	// argInt: INTEGER as int64; anything else is an error.
	argInt
)

// goFunc is one SQL function implemented in Go.
type goFunc struct {
	name string
	args []argKind
	// pure functions are registered SQLITE_DETERMINISTIC.
	pure bool
	impl func(args []any) (any, error)
}

// emptyText is a non-NULL C string for empty TEXT results: SQLite takes a
// NULL pointer as SQL NULL.
var emptyText = C.CString("")

// registerGoFuncs registers fs on c; registerMatch must have run. The
// slots SQLite hands back to the trampoline are C memory freed with the
// connection's other callback state (matchState.free).
func (c *Conn) registerGoFuncs(fs []goFunc) error {
	if c.match.cfg == nil || c.match.db == nil {
		return errors.New("sqlitex: register functions before the connection's callback state exists")
	}
	n := len(fs)
	if n == 0 {
		return nil
	}
	mem := C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.lunora_fn_slot{})))
	slots := unsafe.Slice((*C.lunora_fn_slot)(mem), n)
	c.funcs, c.match.slots = fs, mem
	for i, f := range fs {
		slots[i].handle = C.uintptr_t(c.match.handle)
		slots[i].id = C.int(i)
		name := C.CString(f.name)
		pure := 0
		if f.pure {
			pure = 1
		}
		rc := C.lunora_register_go_fn(c.match.db, name, C.int(len(f.args)), C.int(pure), &slots[i])
		C.free(unsafe.Pointer(name))
		if rc != 0 {
			return fmt.Errorf("register %s: SQLite error %d", f.name, int(rc))
		}
	}
	return nil
}

// registerHooks installs the authorizer (Conn.authorize) and the update
// hook (Conn.dirty, Conn.written) through the C trampolines.
func (c *Conn) registerHooks() {
	C.lunora_set_hooks(c.match.db, c.match.cfg)
}

//export lunoraFunc
func lunoraFunc(h C.uintptr_t, id C.int, ctx *C.sqlite3_context, argc C.int, argv **C.sqlite3_value) {
	c := cgo.Handle(h).Value().(*Conn)
	f := &c.funcs[id]
	var buf [4]any
	args := buf[:0]
	for i, k := range f.args {
		v, err := argValue(argv, C.int(i), k)
		if err != nil {
			resultError(ctx, err)
			return
		}
		args = append(args, v)
	}
	res, err := f.impl(args)
	if err != nil {
		resultError(ctx, err)
		return
	}
	if err := setResult(ctx, res); err != nil {
		resultError(ctx, err)
	}
}

// SQLite's fundamental datatypes (sqlite3_value_type).
const (
	sqlInteger = 1
	sqlFloat   = 2
	sqlText    = 3
	sqlBlob    = 4
)

func argValue(argv **C.sqlite3_value, i C.int, k argKind) (any, error) {
	t := C.lunora_value_type(argv, i)
	switch k {
	case argInt:
		if t != sqlInteger {
			return nil, errors.New("argument must be an INTEGER")
		}
		return int64(C.lunora_value_int64(argv, i)), nil
	case argText:
		if t != sqlText && t != sqlBlob {
			return nil, errors.New("argument must be BLOB or TEXT")
		}
		return valueString(argv, i, t == sqlText), nil
	}
	switch t {
	case sqlInteger:
		return int64(C.lunora_value_int64(argv, i)), nil
	case sqlFloat:
		return float64(C.lunora_value_double(argv, i)), nil
	case sqlText:
		return valueString(argv, i, true), nil
	case sqlBlob:
		var n C.int
		p := C.lunora_value_bytes_ptr(argv, i, &n, 0)
		return C.GoBytes(p, n), nil
	}
	return []byte(nil), nil
}

func valueString(argv **C.sqlite3_value, i C.int, text bool) string {
	var n C.int
	asText := C.int(0)
	if text {
		asText = 1
	}
	p := C.lunora_value_bytes_ptr(argv, i, &n, asText)
	return C.GoStringN((*C.char)(p), n)
}

// setResult gives SQLite a Go function's result as the driver did: nil as
// NULL, an empty []byte as NULL, integers and booleans as INTEGER.
func setResult(ctx *C.sqlite3_context, v any) error {
	switch x := v.(type) {
	case nil:
		C.lunora_result_null(ctx)
	case int64:
		C.lunora_result_int64(ctx, C.int64_t(x))
	case int:
		C.lunora_result_int64(ctx, C.int64_t(x))
	case bool:
		b := int64(0)
		if x {
			b = 1
		}
		C.lunora_result_int64(ctx, C.int64_t(b))
	case float64:
		C.lunora_result_double(ctx, C.double(x))
	case string:
		switch {
		case len(x) > math.MaxInt32:
			return errTooBig
		case len(x) == 0:
			C.lunora_result_text(ctx, emptyText, 0)
		default:
			C.lunora_result_text(ctx, (*C.char)(unsafe.Pointer(unsafe.StringData(x))), C.int(len(x)))
		}
	case []byte:
		switch {
		case len(x) > math.MaxInt32:
			return errTooBig
		case len(x) == 0:
			C.lunora_result_null(ctx)
		default:
			C.lunora_result_blob(ctx, unsafe.Pointer(&x[0]), C.int(len(x)))
		}
	default:
		return fmt.Errorf("cannot convert %T to an SQL value", v)
	}
	return nil
}

func resultError(ctx *C.sqlite3_context, err error) {
	msg := err.Error()
	if msg == "" {
		C.lunora_result_error(ctx, emptyText, 0)
		return
	}
	C.lunora_result_error(ctx, (*C.char)(unsafe.Pointer(unsafe.StringData(msg))), C.int(len(msg)))
}

//export lunoraAuthorize
func lunoraAuthorize(h C.uintptr_t, action C.int, a1, a2, a3 *C.char) C.int {
	c := cgo.Handle(h).Value().(*Conn)
	return C.int(c.authorize(int(action), C.GoString(a1), C.GoString(a2), C.GoString(a3)))
}

//export lunoraUpdated
func lunoraUpdated(h C.uintptr_t, table *C.char) {
	c := cgo.Handle(h).Value().(*Conn)
	c.dirty = true
	name := unsafe.Slice((*byte)(unsafe.Pointer(table)), int(C.strlen(table)))
	for _, t := range c.written {
		if t == string(name) { // compared without a copy
			return
		}
	}
	c.noteWritten(string(name))
}
