package sqlitex

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	sqlite3 "github.com/mattn/go-sqlite3"
	"google.golang.org/grpc/codes"
)

// busyRetryAfter is the retry hint for a busy database.
const busyRetryAfter = 50 * time.Millisecond

// Sentinel errors of user SQL, matched with errors.Is.
var (
	// ErrAssert: lunora_assert failed.
	ErrAssert = api.New(codes.FailedPrecondition, "assertion failed")
	// ErrForeignRow: a row's shard_by value is not the shard's key (I1).
	ErrForeignRow = api.New(codes.InvalidArgument, "row belongs to another shard")
	// ErrSandbox: the statement tried something the sandbox refuses.
	ErrSandbox = api.New(codes.PermissionDenied, "not allowed in a shard")
	// ErrResultTooLarge: a result is over the row or byte bound.
	ErrResultTooLarge = api.New(codes.OutOfRange, "result too large")
	// ErrMultiStatement: a text held more than one statement.
	ErrMultiStatement = api.New(codes.InvalidArgument, "one statement per entry: list further statements as separate entries")
	// ErrEmptyStatement: a text held only whitespace or comments.
	ErrEmptyStatement = api.New(codes.InvalidArgument, "empty statement: only whitespace or comments")
	// ErrReadOnly: a query tried to write.
	ErrReadOnly = api.New(codes.FailedPrecondition, "query functions cannot write; declare the function as a mutation")
)

// Authorizer action codes (sqlite3.h).
const (
	authCreateIndex      = 1
	authCreateTable      = 2
	authCreateTempIndex  = 3
	authCreateTempTable  = 4
	authCreateTempTrig   = 5
	authCreateTempView   = 6
	authCreateTrigger    = 7
	authCreateView       = 8
	authDelete           = 9
	authDropIndex        = 10
	authDropTable        = 11
	authInsert           = 18
	authPragma           = 19
	authRead             = 20
	authSelect           = 21
	authTransaction      = 22
	authUpdate           = 23
	authAttach           = 24
	authDetach           = 25
	authAlterTable       = 26
	authReindex          = 27
	authAnalyze          = 28
	authCreateVTable     = 29
	authDropVTable       = 30
	authFunction         = 31
	authSavepoint        = 32
	authRecursive        = 33
	sqliteOK             = 0
	sqliteDeny           = 1
	sqliteIgnore         = 2
	firstDropAfterCreate = 10
)

// readOnlyPragmas are the pragmas user SQL may run: introspection only.
var readOnlyPragmas = map[string]bool{
	"table_info": true, "table_xinfo": true, "index_list": true, "index_info": true,
	"index_xinfo": true, "foreign_key_list": true, "data_version": true,
}

// deniedFunctions are SQL functions user SQL may not call. The last six
// are the driver's user-authentication functions, which it registers on
// every connection (no-ops in this build, and no business of user SQL).
var deniedFunctions = map[string]bool{
	"load_extension": true, "fts3_tokenizer": true, "readfile": true, "writefile": true,
	"edit":         true,
	"authenticate": true, "auth_user_add": true, "auth_user_change": true, "auth_user_delete": true,
	"auth_enabled": true, "sqlite_crypt": true,
}

// authorize is the SQLite authorizer. System statements (migrations, the
// commit sequence bookkeeping, savepoints) pass; user statements — function
// SQL and admin SQL — may read and write the shard's declared tables and
// nothing else: no ATTACH/DETACH, no transaction control (the writer owns
// the transaction), no schema changes (lunora.yaml owns the schema), no
// pragmas but introspection, no extension loading, no writes to sqlite_* or
// __lunora_* tables. This is invariant I1's sandbox half: a tenant can never
// reach another shard's file.
func (c *Conn) authorize(action int, arg1, arg2, arg3 string) int {
	if action == authRead && c.reads != nil {
		c.noteRead(arg1)
	}
	if !c.User {
		return sqliteOK
	}
	deny := func(format string, args ...any) int {
		c.denied = fmt.Sprintf(format, args...)
		return sqliteDeny
	}
	switch action {
	case authSelect, authRecursive, authAnalyze:
		return sqliteOK
	case authRead:
		if strings.EqualFold(arg1, secretTable) {
			return deny("reading %s is not allowed", arg1)
		}
		return sqliteOK
	case authInsert, authUpdate:
		if systemTable(arg1) {
			return deny("writing to %s is not allowed", arg1)
		}
		return sqliteOK
	case authDelete:
		if systemTable(arg1) {
			return deny("writing to %s is not allowed", arg1)
		}
		// IGNORE on a DELETE still deletes, but row by row: SQLite's
		// truncate optimization (DELETE without WHERE) would skip the update
		// hook, and subscriptions learn which tables a commit wrote from it.
		return sqliteIgnore
	case authFunction:
		if deniedFunctions[strings.ToLower(arg2)] {
			return deny("function %s() is not allowed", arg2)
		}
		if c.NoCaller != "" && strings.EqualFold(arg2, "lunora_auth") {
			return deny("lunora_auth() is not available here: %s", c.NoCaller)
		}
		return sqliteOK
	case authPragma:
		if readOnlyPragmas[strings.ToLower(arg1)] && arg2 == "" {
			return sqliteOK
		}
		return deny("PRAGMA %s is not allowed (only introspection pragmas without a value are)", arg1)
	case authAttach:
		return deny("ATTACH is not allowed: a shard sees only its own database")
	case authDetach:
		return deny("DETACH is not allowed")
	case authTransaction, authSavepoint:
		return deny("transaction control is not allowed: each call runs in its own transaction")
	case authCreateVTable, authDropVTable:
		return deny("virtual tables are not allowed")
	}
	if action >= authCreateIndex && action <= authDropVTable {
		return deny("schema changes are not allowed here; declare tables and indexes in lunora.yaml")
	}
	return deny("operation %d is not allowed", action)
}

// noteRead records a table the statement being prepared reads.
func (c *Conn) noteRead(table string) {
	if table == "" {
		return
	}
	table = strings.ToLower(table)
	for _, t := range *c.reads {
		if t == table {
			return
		}
	}
	*c.reads = append(*c.reads, table)
}

// secretTable is the global tier's table of API keys (hashes of their
// secrets): not even read by user SQL.
const secretTable = "__lunora_keys"

func systemTable(name string) bool {
	l := strings.ToLower(name)
	return strings.HasPrefix(l, "sqlite_") || strings.HasPrefix(l, "__lunora")
}

// Classify turns an error from running user SQL on c into a coded error,
// using what the connection's functions and authorizer recorded — never the
// message text. shardID names the database in messages.
func (c *Conn) Classify(err error, shardID string) error {
	if err == nil {
		return nil
	}
	var coded *api.Error
	if errors.As(err, &coded) {
		return err
	}
	switch {
	case c.assertMsg != "":
		return api.Wrap(ErrAssert, c.assertMsg)
	case c.fnErr != nil:
		return c.fnErr
	case c.foreignRow != "":
		return api.Wrap(ErrForeignRow, fmt.Sprintf("%s does not belong in shard %s", c.foreignRow, shardID))
	case c.denied != "":
		return api.Wrap(ErrSandbox, c.denied)
	case c.tooBig:
		return c.tooBigError(err)
	case errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(codes.DeadlineExceeded, "statement ran past its time limit: %v", err)
	case errors.Is(err, context.Canceled):
		return api.Errorf(codes.Canceled, "request canceled")
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrAuth:
			return api.Wrap(ErrSandbox, se.Error())
		case sqlite3.ErrReadonly:
			return ErrReadOnly
		case sqlite3.ErrConstraint:
			return api.Errorf(codes.FailedPrecondition, "constraint failed: %v", se)
		case sqlite3.ErrInterrupt:
			return api.Errorf(codes.DeadlineExceeded, "statement interrupted: it ran past its time limit or was canceled")
		case sqlite3.ErrTooBig:
			return c.tooBigError(se)
		case sqlite3.ErrBusy, sqlite3.ErrLocked:
			return &api.Error{Code: codes.Unavailable, Msg: "shard is busy: " + se.Error(), RetryAfter: busyRetryAfter}
		case sqlite3.ErrFull, sqlite3.ErrIoErr, sqlite3.ErrCorrupt, sqlite3.ErrNotADB, sqlite3.ErrCantOpen, sqlite3.ErrNomem:
			return api.Errorf(codes.Internal, "storage error on shard %s: %v", shardID, se)
		case sqlite3.ErrError, sqlite3.ErrRange, sqlite3.ErrMismatch:
			// SQLite refuses writes to its own tables while parsing,
			// before the authorizer is asked; it is still the sandbox's
			// refusal.
			if t := writeTarget(c.lastSQL); c.lastUser && systemTable(t) {
				return api.Wrap(ErrSandbox, fmt.Sprintf("writing to %s is not allowed", t))
			}
			return api.Errorf(codes.InvalidArgument, "SQL error: %v", se)
		}
		return api.Errorf(codes.Internal, "SQLite error on shard %s: %v", shardID, se)
	}
	return api.Errorf(codes.InvalidArgument, "SQL error: %v", err)
}

func (c *Conn) tooBigError(err error) error {
	return api.Errorf(codes.InvalidArgument, "value or statement too large (a string or blob may hold at most %d bytes): %v", c.maxValue, err)
}

// writeTarget returns the table a statement writes (UPDATE t, INSERT INTO
// t, REPLACE INTO t, DELETE FROM t), without its schema prefix, or "" if
// it writes none. It reads the statement's words, skipping strings and
// comments; it is used only to name the refusal of a statement SQLite
// already refused.
func writeTarget(sql string) string {
	words := sqlWords(sql)
	for i, w := range words {
		var rest []string
		switch strings.ToUpper(w) {
		case "UPDATE":
			rest = words[i+1:]
			if len(rest) >= 2 && strings.EqualFold(rest[0], "OR") {
				rest = rest[2:]
			}
		case "INTO", "FROM":
			if i == 0 {
				continue
			}
			prev := strings.ToUpper(words[i-1])
			if w2 := strings.ToUpper(w); (w2 == "INTO" && prev != "INSERT" && prev != "REPLACE" && prev != "ROLLBACK" && prev != "ABORT" && prev != "FAIL" && prev != "IGNORE") || (w2 == "FROM" && prev != "DELETE") {
				continue
			}
			rest = words[i+1:]
		default:
			continue
		}
		if len(rest) == 0 {
			return ""
		}
		name := rest[0]
		if len(rest) >= 3 && rest[1] == "." {
			name = rest[2]
		}
		return name
	}
	return ""
}

// sqlWords splits sql into identifiers/keywords (quotes removed) and
// punctuation, dropping string literals and comments.
func sqlWords(sql string) []string {
	var out []string
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				return out
			}
			i += j
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			j := strings.Index(sql[i+2:], "*/")
			if j < 0 {
				return out
			}
			i += j + 4
		case c == '\'':
			j := strings.IndexByte(sql[i+1:], '\'')
			if j < 0 {
				return out
			}
			i += j + 2
		case c == '"' || c == '`' || c == '[':
			end := c
			if c == '[' {
				end = ']'
			}
			j := strings.IndexByte(sql[i+1:], end)
			if j < 0 {
				return out
			}
			out = append(out, sql[i+1:i+1+j])
			i += j + 2
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
			j := i
			for j < len(sql) && (sql[j] == '_' || sql[j] == '$' || sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] >= '0' && sql[j] <= '9' || sql[j] >= 0x80) {
				j++
			}
			out = append(out, sql[i:j])
			i = j
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		default:
			out = append(out, sql[i:i+1])
			i++
		}
	}
	return out
}
