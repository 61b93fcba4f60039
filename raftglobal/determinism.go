package raftglobal

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/lunora/lunora/api"
)

// timeFunctions are SQLite's date and time functions: they read the wall
// clock for 'now' (or no time value at all) and the host's time zone for
// the 'localtime' and 'utc' modifiers.
var timeFunctions = map[string]bool{
	"date": true, "time": true, "datetime": true, "julianday": true,
	"unixepoch": true, "strftime": true, "timediff": true,
}

// clockKeywords read the wall clock.
var clockKeywords = map[string]bool{
	"current_timestamp": true, "current_date": true, "current_time": true,
}

// clockWords are the time values and modifiers that depend on the host.
var clockWords = map[string]bool{"now": true, "localtime": true, "utc": true}

// CheckDeterministic refuses SQL that would read the wall clock or the
// host's time zone, which differ on each replica of the global tier:
// CURRENT_TIMESTAMP, CURRENT_DATE, CURRENT_TIME, a date/time function given
// 'now' (or no time value, which means now), or the 'localtime'/'utc'
// modifiers. The error is INVALID_ARGUMENT and tells the user to use
// lunora_now(). random() and randomblob() are fine: the global tier makes
// them deterministic.
//
// It is a lexical check: a clock word reaching a time function through a
// column value is not seen (CheckArgsDeterministic covers bound args).
func CheckDeterministic(sql string) error {
	return factsOf(sql).err
}

func checkDeterministic(sql string) error {
	toks := lex(sql)
	for i, t := range toks {
		if t.kind == tokWord && clockKeywords[t.lower] {
			return nonDeterministic(strings.ToUpper(t.lower))
		}
		if t.kind != tokWord || !timeFunctions[t.lower] || i+1 >= len(toks) || toks[i+1].text != "(" {
			continue
		}
		// Walk the call's arguments.
		depth, args, empty := 0, 0, true
		for j := i + 1; j < len(toks); j++ {
			u := toks[j]
			switch {
			case u.text == "(":
				depth++
				continue
			case u.text == ")":
				depth--
			case u.text == "," && depth == 1:
				args++
			case u.kind == tokString && clockWords[strings.ToLower(strings.TrimSpace(u.text))]:
				return nonDeterministic(fmt.Sprintf("%s(… '%s' …)", t.lower, strings.TrimSpace(u.text)))
			}
			if depth == 0 {
				break
			}
			empty = false
		}
		if empty || (t.lower == "strftime" && args == 0) {
			return nonDeterministic(t.lower + "() without a time value (it means now)")
		}
	}
	return nil
}

// CheckArgsDeterministic refuses a clock word passed as a bound argument to
// SQL that calls a date/time function (datetime(:t) with t = 'now').
func CheckArgsDeterministic(sql string, args map[string]any) error {
	if !factsOf(sql).callsTime {
		return nil
	}
	for name, v := range args {
		if s, ok := v.(string); ok && clockWords[strings.ToLower(strings.TrimSpace(s))] {
			return nonDeterministic(fmt.Sprintf("arg %q = '%s' passed to a date/time function", name, s))
		}
	}
	return nil
}

// sqlFacts is what the determinism checks learn from a statement's text.
type sqlFacts struct {
	err       error // CheckDeterministic's verdict
	callsTime bool  // it names a date/time function
}

// factCache keeps the facts of the statements seen, so that a declared
// function's statements are lexed once rather than on every write. It
// stops growing at maxCachedFacts (ad-hoc statements are lexed each time
// then).
var factCache struct {
	sync.RWMutex
	m map[string]sqlFacts
}

const maxCachedFacts = 4096

func factsOf(sql string) sqlFacts {
	factCache.RLock()
	f, ok := factCache.m[sql]
	factCache.RUnlock()
	if ok {
		return f
	}
	f.err = checkDeterministic(sql)
	for _, t := range lex(sql) {
		if t.kind == tokWord && timeFunctions[t.lower] {
			f.callsTime = true
			break
		}
	}
	factCache.Lock()
	if factCache.m == nil {
		factCache.m = map[string]sqlFacts{}
	}
	if len(factCache.m) < maxCachedFacts {
		factCache.m[sql] = f
	}
	factCache.Unlock()
	return f
}

func nonDeterministic(what string) error {
	return api.Wrap(ErrNonDeterministic, what+" reads the clock or time zone of each replica, which differ; "+
		"use lunora_now() (milliseconds since the Unix epoch, the same on every replica), "+
		"e.g. datetime(lunora_now()/1000, 'unixepoch')")
}

type tokKind int

const (
	tokWord tokKind = iota
	tokString
	tokPunct
)

type token struct {
	kind  tokKind
	text  string // a string literal's content, unquoted
	lower string // words only
}

// lex splits SQL into words, string literals and punctuation, skipping
// comments and quoted identifiers.
func lex(sql string) []token {
	var out []token
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return out
			}
			i += end + 4
		case c == '\'':
			var b strings.Builder
			i++
			for i < len(sql) {
				if sql[i] == '\'' {
					if i+1 < len(sql) && sql[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(sql[i])
				i++
			}
			out = append(out, token{kind: tokString, text: b.String()})
		case c == '"' || c == '`' || c == '[':
			closer := c
			if c == '[' {
				closer = ']'
			}
			i++
			for i < len(sql) && sql[i] != closer {
				i++
			}
			i++
			out = append(out, token{kind: tokPunct, text: "ident"})
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(sql) && (sql[j] == '_' || sql[j] == '$' || sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] >= '0' && sql[j] <= '9') {
				j++
			}
			w := sql[i:j]
			out = append(out, token{kind: tokWord, text: w, lower: strings.ToLower(w)})
			i = j
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{kind: tokPunct, text: string(c)})
			i++
		case c == ':' || c == '@' || c == '$' || c == '?':
			// A parameter: skip its name so it is not taken for a function.
			j := i + 1
			for j < len(sql) && (sql[j] == '_' || sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] >= '0' && sql[j] <= '9') {
				j++
			}
			out = append(out, token{kind: tokPunct, text: "param"})
			i = j
		default:
			i++
		}
	}
	return out
}

// entropy is the deterministic source behind random() and randomblob() in
// the FSM: a PCG seeded from the entry's log index and the command's
// position in it, so every replica draws the same numbers.
type entropy struct{ r *rand.Rand }

func (e *entropy) seed(index uint64, position int) {
	e.r = rand.New(rand.NewPCG(index, uint64(position)+0x9e3779b97f4a7c15))
}

func (e *entropy) random() int64 {
	if e.r == nil {
		e.seed(0, 0)
	}
	return int64(e.r.Uint64())
}

func (e *entropy) randomBlob(n int64) ([]byte, error) {
	if n < 1 {
		n = 1
	}
	if n > maxRandomBlob {
		return nil, fmt.Errorf("randomblob(%d): at most %d bytes", n, maxRandomBlob)
	}
	if e.r == nil {
		e.seed(0, 0)
	}
	b := make([]byte, (n+7)/8*8)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], e.r.Uint64())
	}
	return b[:n], nil
}

// maxRandomBlob is SQLite's length limit on a connection (sqlitex.Open).
const maxRandomBlob = 16 << 20
