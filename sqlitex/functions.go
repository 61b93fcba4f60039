package sqlitex

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SQLite checks for interruption (sqlite3_interrupt, which the driver
// calls when a statement's context ends) only between the opcodes of a
// statement. A few built-in functions do work quadratic in their
// arguments inside one opcode — LIKE and GLOB with '%'/'*' patterns,
// instr(), replace(), trim() with a character set — so one call on two
// long strings could run for minutes past the statement's deadline,
// holding the shard's writer. Lunora replaces them with implementations
// that do the same thing in linear time where the algorithm allows
// (instr, replace, trim) and, for pattern matching, poll the statement's
// context every checkEvery steps.

const (
	// checkEvery is how many matching steps run between two looks at the
	// statement's context (some tens of microseconds of work).
	checkEvery = 1 << 12
	// maxPatternLen is SQLite's default SQLITE_MAX_LIKE_PATTERN_LENGTH.
	maxPatternLen = 50000
)

var (
	errTooBig      = errors.New("string or blob too big")
	errInterrupted = errors.New("interrupted")
)

// boundedFuncs replace instr, replace and trim/ltrim/rtrim with a set
// (2 arguments) by linear implementations; registerMatch did LIKE/GLOB.
func (c *Conn) boundedFuncs() []goFunc {
	two := []argKind{argAny, argAny}
	trim := func(left, right bool) func([]any) (any, error) {
		f := trimFunc(left, right)
		return func(a []any) (any, error) { return f(a[0], a[1]) }
	}
	return []goFunc{
		{name: "instr", args: two, pure: true, impl: func(a []any) (any, error) { return instr(a[0], a[1]) }},
		{name: "replace", args: []argKind{argAny, argAny, argAny}, pure: true, impl: func(a []any) (any, error) { return c.replace(a[0], a[1], a[2]) }},
		{name: "trim", args: two, pure: true, impl: trim(true, true)},
		{name: "ltrim", args: two, pure: true, impl: trim(true, false)},
		{name: "rtrim", args: two, pure: true, impl: trim(false, true)},
	}
}

// interrupted reports whether the running statement's context has ended.
func (c *Conn) interrupted() bool {
	return c.stmtCtx != nil && c.stmtCtx.Err() != nil
}

// text converts a SQL value to text as SQLite does; ok is false for NULL.
func text(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case []byte:
		// The driver passes SQL NULL as a nil []byte; an empty blob is
		// non-nil.
		return string(x), x != nil
	case int64:
		return strconv.FormatInt(x, 10), true
	case float64:
		return realText(x), true
	}
	return fmt.Sprint(v), true
}

// realText renders a REAL as SQLite's "%!.15g" does: 15 significant
// digits and always a decimal point in the mantissa.
func realText(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	s := strconv.FormatFloat(f, 'g', 15, 64)
	mant, exp, hasExp := strings.Cut(s, "e")
	if !strings.Contains(mant, ".") {
		mant += ".0"
	}
	if hasExp {
		return mant + "e" + exp
	}
	return mant
}

// patToken is one element of a compiled LIKE or GLOB pattern.
type patToken struct {
	kind   byte // tokLit, tokOne, tokAll, tokSet
	r      rune
	ranges []runeRange // tokSet
	invert bool        // tokSet: [^...]
}

type runeRange struct{ lo, hi rune }

const (
	tokLit = iota
	tokOne
	tokAll
	tokSet
)

// compilePattern parses a LIKE (with an optional escape character) or GLOB
// pattern. never is true for a pattern SQLite can match nothing with (an
// escape at its end, an unterminated [set]).
func compilePattern(p string, like bool, esc rune, hasEsc bool) (toks []patToken, never bool) {
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRuneInString(p[i:])
		i += n
		switch {
		case like && hasEsc && r == esc:
			if i >= len(p) {
				return nil, true
			}
			r, n = utf8.DecodeRuneInString(p[i:])
			i += n
			toks = append(toks, patToken{kind: tokLit, r: r})
		case (like && r == '%') || (!like && r == '*'):
			if len(toks) == 0 || toks[len(toks)-1].kind != tokAll {
				toks = append(toks, patToken{kind: tokAll})
			}
		case (like && r == '_') || (!like && r == '?'):
			toks = append(toks, patToken{kind: tokOne})
		case !like && r == '[':
			t := patToken{kind: tokSet}
			if i < len(p) && p[i] == '^' {
				t.invert = true
				i++
			}
			if i < len(p) && p[i] == ']' {
				t.ranges = append(t.ranges, runeRange{']', ']'})
				i++
			}
			closed := false
			var prior rune = -1
			for i < len(p) {
				c, n := utf8.DecodeRuneInString(p[i:])
				i += n
				if c == ']' {
					closed = true
					break
				}
				if c == '-' && prior >= 0 && i < len(p) && p[i] != ']' {
					hi, n := utf8.DecodeRuneInString(p[i:])
					i += n
					t.ranges[len(t.ranges)-1].hi = hi
					prior = -1
					continue
				}
				t.ranges = append(t.ranges, runeRange{c, c})
				prior = c
			}
			if !closed {
				return nil, true
			}
			toks = append(toks, t)
		default:
			toks = append(toks, patToken{kind: tokLit, r: r})
		}
	}
	return toks, false
}

func lowerASCII(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + ('a' - 'A')
	}
	return r
}

// matches reports whether token t (not tokAll) matches rune r.
func (t *patToken) matches(r rune, noCase bool) bool {
	switch t.kind {
	case tokOne:
		return true
	case tokLit:
		if noCase {
			return lowerASCII(t.r) == lowerASCII(r)
		}
		return t.r == r
	case tokSet:
		in := false
		for _, rg := range t.ranges {
			if r >= rg.lo && r <= rg.hi {
				in = true
				break
			}
		}
		return in != t.invert
	}
	return false
}

// matchText matches s against a LIKE (with an optional escape) or GLOB
// pattern p, for the calls match_shim.c does not leave to SQLite. The
// greedy algorithm backtracks only to the last '%' (every other token
// matches exactly one character), so it takes at most len(s)·len(p)
// steps, and it gives up when the statement's context ends.
func (c *Conn) matchText(p, s string, esc rune, hasEsc, like bool) (bool, error) {
	toks, never := compilePattern(p, like, esc, hasEsc)
	if never {
		return false, nil
	}
	steps := 0
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		if steps++; steps%checkEvery == 0 && c.interrupted() {
			return false, errInterrupted
		}
		r, n := utf8.DecodeRuneInString(s[si:])
		if pi < len(toks) {
			t := &toks[pi]
			if t.kind == tokAll {
				starP, starS = pi, si
				pi++
				continue
			}
			if t.matches(r, like) {
				pi++
				si += n
				continue
			}
		}
		if starP < 0 {
			return false, nil
		}
		// Let the last '%' swallow one more character and retry after it.
		_, n = utf8.DecodeRuneInString(s[starS:])
		starS += n
		pi, si = starP+1, starS
	}
	for pi < len(toks) && toks[pi].kind == tokAll {
		pi++
	}
	return pi == len(toks), nil
}

// instr(X, Y): the 1-based position of the first Y in X, in bytes when both
// are blobs and in characters otherwise; 0 when absent; NULL if either is
// NULL.
func instr(xv, yv any) (any, error) {
	if xb, ok := xv.([]byte); ok && xb != nil {
		if yb, ok := yv.([]byte); ok && yb != nil {
			return int64(strings.Index(string(xb), string(yb)) + 1), nil
		}
	}
	x, ok1 := text(xv)
	y, ok2 := text(yv)
	if !ok1 || !ok2 {
		return nil, nil
	}
	i := strings.Index(x, y)
	if i < 0 {
		return int64(0), nil
	}
	return int64(utf8.RuneCountInString(x[:i]) + 1), nil
}

// replace(X, Y, Z): X with every Y replaced by Z; X itself when Y is
// empty; NULL if any is NULL.
func (c *Conn) replace(xv, yv, zv any) (any, error) {
	x, ok1 := text(xv)
	y, ok2 := text(yv)
	if !ok1 || !ok2 {
		return nil, nil
	}
	if y == "" {
		return x, nil
	}
	z, ok3 := text(zv)
	if !ok3 {
		return nil, nil
	}
	if n := strings.Count(x, y); len(x)+n*(len(z)-len(y)) > c.maxValue {
		c.tooBig = true
		return nil, errTooBig
	}
	return strings.ReplaceAll(x, y, z), nil
}

// trimFunc returns trim(X, Y), ltrim(X, Y) or rtrim(X, Y): X without the
// characters of Y at its start and/or end; NULL if either is NULL. The set
// is looked up in a map, so the cost is linear in both arguments.
func trimFunc(left, right bool) func(xv, yv any) (any, error) {
	return func(xv, yv any) (any, error) {
		x, ok1 := text(xv)
		y, ok2 := text(yv)
		if !ok1 || !ok2 {
			return nil, nil
		}
		set := make(map[rune]struct{}, min(len(y), 256))
		for _, r := range y {
			set[r] = struct{}{}
		}
		in := func(r rune) bool { _, ok := set[r]; return ok }
		if left {
			x = strings.TrimLeftFunc(x, in)
		}
		if right {
			x = strings.TrimRightFunc(x, in)
		}
		return x, nil
	}
}
