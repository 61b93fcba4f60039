package sqlitex

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// Conn is one SQLite connection together with the per-connection state its
// SQL functions and authorizer report into. A Conn is used by one goroutine
// at a time.
type Conn struct {
	C *sqlite3.SQLiteConn

	// User is true while a statement from lunora.yaml or admin SQL is being
	// prepared or run: the sandbox applies (see sandbox.go).
	User bool
	// Now is the time lunora_now() reports; the wall clock when zero.
	Now time.Time
	// Caller is who lunora_auth() reports, set like Now around a call's
	// statements; the zero Caller is no one (lunora_auth gives NULL).
	Caller Caller
	// NoCaller, when non-empty, makes the sandbox refuse lunora_auth with
	// this reason: schema checking sets it for SQL that runs where no
	// caller is known (the global tier).
	NoCaller string
	// Sched serves lunora_schedule and lunora_cancel; set by the shard's
	// writer while a mutation runs, nil otherwise (alarms.go).
	Sched Scheduler
	// Attempt is what lunora_attempt() reports: the attempt number while
	// an alarm runs its function (1 on the first), 0 otherwise.
	Attempt int64

	denied     string // the sandbox's reason for its last refusal
	assertMsg  string // set when lunora_assert fails
	tooBig     bool   // set when a Go built-in refuses a value over maxValue
	foreignRow string // set when a row for another shard is written (I1)
	fnErr      error  // a coded error a lunora_* function failed with
	dirty      bool   // set by the update hook when a row changes
	// nested counts rows changed by system statements run inside a user
	// statement (lunora_schedule, lunora_enqueue): not the user's rows.
	nested   int64
	lastSQL  string // the statement last prepared for user SQL, for Classify
	lastUser bool   // whether lastSQL ran sandboxed

	// stmts caches prepared statements keyed by their text *and* whether
	// they were prepared sandboxed (stmtcache.go). The driver's own cache
	// is off: it is keyed by text alone, and SQLite runs the authorizer
	// only when it prepares, so a statement the runtime prepared
	// unsandboxed could be handed to user SQL with the same text.
	stmts stmtCache

	// stmtCtx is the context of the statement QueryRows is running; the
	// Go implementations of SQL functions that can run long (functions.go)
	// poll it, because SQLite checks for interruption only between
	// opcodes.
	stmtCtx context.Context

	match matchState // LIKE and GLOB (match.go), and every callback's state
	funcs []goFunc   // the SQL functions in Go, by slot (callbacks.go)

	// maxValue is the SQLITE_LIMIT_LENGTH Open set (Options.MaxValueBytes);
	// the Go implementations of built-ins (functions.go) keep to it too.
	maxValue int

	// written lists, deduplicated, the tables the update hook saw change
	// since ResetWritten. It is reused between transactions, so noting a
	// row change allocates nothing once a table has been seen.
	written []string
	// reads collects the tables the authorizer reports read (SQLITE_READ)
	// while non-nil; see TablesRead.
	reads *[]string
}

// Options configure Open.
type Options struct {
	// Synchronous is SQLite's synchronous level (FULL, NORMAL).
	Synchronous string
	// CacheKiB is the page cache size.
	CacheKiB int
	// ReadOnly sets query_only: any write fails with ErrReadOnly.
	ReadOnly bool
	// MaxSQLLen bounds a statement's length.
	MaxSQLLen int
	// MaxValueBytes is the largest string or blob a statement may build
	// or bind (SQLITE_LIMIT_LENGTH): zeroblob, randomblob, printf, ||,
	// group_concat and replace over it fail with "string or blob too big"
	// instead of growing. Zero means DefaultMaxValueBytes.
	MaxValueBytes int
	// MaxParams bounds the parameters of a statement
	// (SQLITE_LIMIT_VARIABLE_NUMBER: ?NNN and named ones alike). Zero
	// leaves SQLite's default (32766).
	MaxParams int
	// PersistWAL keeps the -wal and -shm files when the last connection
	// closes (SQLITE_FCNTL_PERSIST_WAL): the close still checkpoints
	// everything into the database file, syncs it and truncates the -wal
	// to zero bytes (journal_size_limit), but the next open creates no
	// -wal. While open, a -wal the checkpoints reset is truncated back to
	// WALLimit bytes when it grew past it.
	PersistWAL bool
}

// WALLimit is the journal_size_limit of a PersistWAL connection: the
// size a reset -wal is truncated back to (auto-checkpoints keep it near
// 4 MiB, so this rarely truncates while the shard is open).
const WALLimit = 16 << 20

// DefaultMaxValueBytes is Options.MaxValueBytes when zero.
const DefaultMaxValueBytes = 16 << 20

// Limits bound a result.
type Limits struct {
	MaxRows int
	// MaxBytes bounds the result's size as the JSON API encodes it (text
	// escapes, base64 blobs), the largest of its encodings.
	MaxBytes int
	// Budget, when set, is the process-wide bound the result's bytes are
	// reserved from while it is collected (ErrBudget when it is in use).
	Budget *Budget
	// Held, when set, keeps a successful result's reservation and adds its
	// size to *Held: the caller releases it with Budget.Release once it has
	// handed the result on. Otherwise it is released when QueryRows returns.
	Held *int64
}

var sqliteDriver = &sqlite3.SQLiteDriver{}

// Open opens path with the pragmas every Lunora connection uses, WAL mode,
// the lunora_* functions and the sandbox.
func Open(path string, o Options) (*Conn, error) {
	// No _stmt_cache_size: the driver's statement cache must stay off (see
	// Conn.stmts).
	dsn := "file:" + path + "?_txlock=immediate&_busy_timeout=10000"
	dc, err := sqliteDriver.Open(dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	c := &Conn{C: dc.(*sqlite3.SQLiteConn)}
	pragmas := []string{
		"PRAGMA journal_mode=WAL",
		"PRAGMA synchronous=" + o.Synchronous,
		fmt.Sprintf("PRAGMA cache_size=-%d", o.CacheKiB),
		"PRAGMA foreign_keys=ON",
	}
	if o.ReadOnly {
		pragmas = append(pragmas, "PRAGMA query_only=ON")
	}
	if o.PersistWAL {
		pragmas = append(pragmas, fmt.Sprintf("PRAGMA journal_size_limit=%d", WALLimit))
	}
	for _, p := range pragmas {
		if _, err := c.C.Exec(p, nil); err != nil {
			c.C.Close()
			return nil, fmt.Errorf("%s on %s: %w", p, path, err)
		}
	}
	if o.PersistWAL {
		if err := c.C.SetFileControlInt("main", sqlite3.SQLITE_FCNTL_PERSIST_WAL, 1); err != nil {
			c.C.Close()
			return nil, fmt.Errorf("persist the write-ahead log of %s: %w", path, err)
		}
	}
	// trusted_schema stays at its default (ON): the ownership triggers call
	// __lunora_foreign_row, and the schema is written only by migrations —
	// the sandbox refuses every schema change from user SQL.
	//
	// No attached databases at all: the shard's own file is the only one a
	// connection can ever see.
	c.C.SetLimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
	c.maxValue = o.MaxValueBytes
	if c.maxValue <= 0 {
		c.maxValue = DefaultMaxValueBytes
	}
	c.C.SetLimit(sqlite3.SQLITE_LIMIT_LENGTH, c.maxValue)
	c.C.SetLimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, o.MaxSQLLen)
	if o.MaxParams > 0 {
		c.C.SetLimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, o.MaxParams)
	}
	c.stmts.init(stmtCacheSize)
	if err := c.register(); err != nil {
		c.Close() // also frees the callback state register made
		return nil, err
	}
	return c, nil
}

func (c *Conn) register() error {
	// The callback state (C memory and the Conn's cgo.Handle) comes
	// first: every function and hook below reaches the Conn through it.
	if err := c.registerMatch(fastMatchSteps); err != nil {
		return err
	}
	if err := c.registerCore(); err != nil {
		return err
	}
	foreign := func(a []any) (any, error) {
		c.foreignRow = fmt.Sprintf("table %s: a row with %v", a[0], a[1])
		return nil, errors.New(c.foreignRow)
	}
	fs := []goFunc{
		// lunora_assert and lunora_now are in C (registerCore).
		{name: "__lunora_foreign_row", args: []argKind{argText, argAny}, impl: foreign},
		// lunora_auth is constant while a statement runs; registered
		// deterministic, SQLite evaluates a call with constant arguments
		// once per run of the statement, not once per row (caller.go).
		{name: "lunora_auth", args: []argKind{argAny}, pure: true, impl: func(a []any) (any, error) { return c.Caller.claim(a[0]) }},
		{name: "lunora_auth", pure: true, impl: func([]any) (any, error) { return c.Caller.subject(), nil }},
	}
	fs = append(fs, c.alarmFuncs()...)
	fs = append(fs, c.boundedFuncs()...)
	if err := c.registerGoFuncs(fs); err != nil {
		return err
	}
	c.registerHooks()
	return nil
}

// DropStatements finalizes every cached prepared statement (they are
// prepared again when next used). Only the connection's goroutine may
// call it, as for any statement.
func (c *Conn) DropStatements() { c.stmts.closeAll() }

// Close closes the connection and its cached statements.
func (c *Conn) Close() error {
	c.stmts.closeAll()
	err := c.C.Close()
	c.match.free()
	return err
}

// ExecSys runs one of the runtime's own statements (BEGIN, SAVEPOINT,
// RELEASE, COMMIT, bookkeeping) from the connection's statement cache,
// unsandboxed and without a context: such statements are never
// interrupted, and the driver spawns a goroutine per statement run under a
// cancellable context. Never pass user SQL here: it would run outside the
// sandbox and the statement timeout.
func (c *Conn) ExecSys(query string, args ...driver.NamedValue) (int64, error) {
	st, err := c.prepare(query, false)
	if err != nil {
		return 0, err
	}
	c.syncNow()
	// Run as a system statement too: called from inside a user statement
	// (lunora_enqueue), SQLite may re-prepare it on its first step, and
	// the authorizer must judge it as what it is.
	was := c.User
	c.User = false
	res, err := st.(driver.StmtExecContext).ExecContext(context.Background(), args)
	c.User = was
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	if was {
		c.nested += n
	}
	return n, nil
}

// prepare returns the statement for query prepared sandboxed (user) or
// not, from the cache or freshly. A fresh one is prepared with User set to
// user, so the authorizer judges it as what it will run as; the cache key
// carries the same flag, so a statement prepared one way is never run the
// other. SQLite re-prepares a cached statement after a schema change,
// calling the authorizer again with User as it is then: user statements
// run only while User is set, system statements only while it is not.
// A text holding more than one statement is refused.
func (c *Conn) prepare(query string, user bool) (driver.Stmt, error) {
	if st := c.stmts.get(query, user); st != nil {
		return st, nil
	}
	was := c.User
	c.User = user
	st, err := c.C.Prepare(query)
	c.User = was
	if err != nil {
		return nil, err
	}
	if err := checkOneStatement(st); err != nil {
		st.Close()
		return nil, err
	}
	c.stmts.put(query, user, st)
	return st, nil
}

// ReadOnly prepares query sandboxed (as QueryRows would with User set,
// into the same cache) and reports whether SQLite says running it cannot
// change the database.
func (c *Conn) ReadOnly(query string) (bool, error) {
	c.lastSQL, c.lastUser = query, true
	st, err := c.prepare(query, true)
	if err != nil {
		return false, err
	}
	ro, ok := st.(interface{ Readonly() bool })
	return ok && ro.Readonly(), nil
}

// checkOneStatement refuses a prepared text that held no statement or more
// than one.
func checkOneStatement(st driver.Stmt) error {
	if stmtEmpty(st) {
		return ErrEmptyStatement
	}
	if tail := stmtTail(st); tail != "" {
		return fmt.Errorf("%w: %.40q follows the first statement", ErrMultiStatement, tail)
	}
	return nil
}

// Dirty reports whether a row changed since the last Reset.
func (c *Conn) Dirty() bool { return c.dirty }

// NestedChanges is the number of rows system statements changed from
// inside user statements since the last Reset (the alarm and outbox rows
// of lunora_schedule and lunora_enqueue).
func (c *Conn) NestedChanges() int64 { return c.nested }

// noteWritten records table in the written set. Called by the update hook
// for every row change, so it must stay cheap: a transaction touches a few
// tables, a linear scan beats a map, and nothing is allocated once the
// table is in the set.
func (c *Conn) noteWritten(table string) {
	for _, t := range c.written {
		if t == table {
			return
		}
	}
	c.written = append(c.written, table)
}

// Written returns the tables whose rows changed since the last
// ResetWritten, as the update hook names them. Rows changed and then
// rolled back (a failed SAVEPOINT) still count: the set may be larger than
// what committed, never smaller. The slice is reused by the next
// ResetWritten; copy what must outlive it.
func (c *Conn) Written() []string { return c.written }

// ResetWritten empties the written set; the writer calls it when it opens a
// transaction.
func (c *Conn) ResetWritten() { c.written = c.written[:0] }

// TablesRead prepares each statement with the sandbox on and returns the
// tables the authorizer reports they read, in order of first report,
// deduplicated (lower case). The statements are prepared outside the
// connection's statement cache — the authorizer runs only when SQLite
// prepares a statement, and a cached one is not prepared again — and are
// not run. A statement the sandbox refuses fails here as it would when run.
func (c *Conn) TablesRead(stmts []string) ([]string, error) {
	var reads []string
	c.reads = &reads
	c.User = true
	defer func() { c.reads, c.User = nil, false }()
	for _, q := range stmts {
		c.lastSQL, c.lastUser = q, true
		st, err := c.C.Prepare(q)
		if err != nil {
			return nil, err
		}
		err = checkOneStatement(st)
		st.Close()
		if err != nil {
			return nil, err
		}
	}
	return reads, nil
}

// Reset clears what the functions and sandbox reported.
func (c *Conn) Reset() {
	c.denied, c.assertMsg, c.foreignRow, c.dirty, c.tooBig, c.fnErr = "", "", "", false, false, nil
	c.nested = 0
}

// Exec runs the runtime's own SQL (migrations, DDL; several statements
// allowed), unsandboxed and uncached, and returns the rows the last
// statement changed as SQLite reports them. Never pass user SQL here; user
// SQL runs through QueryRows with User set.
func (c *Conn) Exec(ctx context.Context, query string, args ...driver.NamedValue) (int64, error) {
	was := c.User
	c.User = false
	defer func() { c.User = was }()
	c.syncNow()
	res, err := c.C.ExecContext(ctx, query, args)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// QueryRows runs one statement — sandboxed while User is set — and
// collects its rows within the bounds. It returns the column names (nil
// for a statement that returns none).
func (c *Conn) QueryRows(ctx context.Context, query string, args []driver.NamedValue, lim Limits) ([]string, [][]any, error) {
	c.lastSQL, c.lastUser = query, c.User
	st, err := c.prepare(query, c.User)
	if err != nil {
		return nil, nil, err
	}
	c.stmtCtx = ctx
	defer func() { c.stmtCtx = nil }()
	c.syncNow()
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var held int64 // bytes reserved from lim.Budget
	kept := false
	defer func() {
		if !kept {
			lim.Budget.Release(held)
		}
	}()
	cols := rows.Columns()
	if len(cols) == 0 {
		// Not a row-returning statement; step it to completion.
		if err := rows.Next(nil); err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, err
		}
		return nil, nil, nil
	}
	var out [][]any
	size := 0
	for {
		dest := make([]driver.Value, len(cols))
		err := rows.Next(dest)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		row := make([]any, len(cols))
		size += rowOverhead
		for i, v := range dest {
			size += encodedLen(v)
			if b, ok := v.([]byte); ok {
				v = append([]byte(nil), b...)
			}
			row[i] = v
		}
		out = append(out, row)
		if len(out) > lim.MaxRows {
			return nil, nil, fmt.Errorf("%w: more than %d rows; add a LIMIT or paginate", ErrResultTooLarge, lim.MaxRows)
		}
		if size > lim.MaxBytes {
			return nil, nil, fmt.Errorf("%w: more than %d bytes once encoded; select fewer columns or paginate", ErrResultTooLarge, lim.MaxBytes)
		}
		if int64(size) > held {
			if lim.Budget != nil && int64(size) > lim.Budget.max {
				// No retry could ever fit it: too large, not busy.
				return nil, nil, fmt.Errorf("%w: more than the node's whole result budget of %d bytes; select fewer columns or paginate", ErrResultTooLarge, lim.Budget.max)
			}
			want := min(int64(size)+budgetChunk, max(int64(size), lim.Budget.limit()))
			if err := lim.Budget.reserve(want - held); err != nil {
				return nil, nil, err
			}
			held = want
		}
	}
	if lim.Held != nil {
		*lim.Held += held
		kept = true
	}
	return cols, out, nil
}

// TotalChanges is SQLite's count of rows changed on this connection.
func (c *Conn) TotalChanges() (int64, error) {
	return c.totalChanges(), nil
}
