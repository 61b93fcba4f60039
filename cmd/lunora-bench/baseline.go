package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/schema"
	sqlite3 "github.com/mattn/go-sqlite3"
)

// runBaseline measures what Lunora is compared with: the same inserts made
// straight against SQLite in this process with the same durability — a
// fresh file with the chat app's room_id table DDL, WAL, the same
// synchronous level, one writer, each INSERT its own (autocommit)
// transaction. With -baseline-files N there are N such files, each with its
// own writer, the rooms dealt out among them (the plain-SQLite counterpart
// of N shards). Like the Lunora phases it runs warmup+duration and counts
// the inserts that complete in the last duration.
func runBaseline(ctx context.Context, dir string, o *options) (*phaseResult, error) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		return nil, err
	}
	ddl := app.GroupDDL("room_id")
	writers := make([]*baselineWriter, o.baselineFiles)
	for i := range writers {
		var rooms []string
		for r := i % o.shards; r < o.shards; r += o.baselineFiles {
			rooms = append(rooms, roomName(r))
		}
		if len(rooms) == 0 {
			rooms = []string{roomName(i % o.shards)}
		}
		w, err := openBaselineWriter(ctx, filepath.Join(dir, fmt.Sprintf("baseline-%d.db", i)), o.synchronous, ddl, rooms)
		if w != nil {
			defer w.close()
		}
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		writers[i] = w
	}

	desc := "1 writer"
	if n := o.baselineFiles; n > 1 {
		desc = fmt.Sprintf("%d files, a writer each", n)
	}
	res := &phaseResult{
		name:     fmt.Sprintf("baseline sqlite INSERT (%s, autocommit, %s)", o.synchronous, desc),
		window:   o.duration,
		errors:   map[string]uint64{},
		baseline: true,
	}
	now := time.Now()
	win := &window{start: now.Add(o.warmup), end: now.Add(o.warmup + o.duration)}
	var cpuStart, cpuEnd, busyStart, busyEnd time.Duration
	win.onStart = func() { cpuStart, busyStart = processCPU(), machineBusy() }
	win.onEnd = func() { cpuEnd, busyEnd = processCPU(), machineBusy() }
	hooksDone := win.watch(ctx)
	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Go(func() { w.run(ctx, win) })
	}
	wg.Wait()
	hooksDone()
	for _, w := range writers {
		res.hist.merge(&w.hist)
		res.ops += w.ops
		for k, n := range w.errors {
			res.errors[k] += n
		}
	}
	if ctx.Err() != nil {
		res.window = min(max(time.Since(win.start), 0), o.duration)
		cpuEnd, busyEnd = processCPU(), machineBusy()
	}
	res.cpu, res.busy = cpuEnd-cpuStart, busyEnd-busyStart
	return res, nil
}

// baselineWriter is one plain-SQLite file and the goroutine inserting into
// it.
type baselineWriter struct {
	db    *sql.DB
	ins   *sql.Stmt
	rooms []string

	hist   histogram
	ops    uint64
	errors map[string]uint64
}

func openBaselineWriter(ctx context.Context, path, synchronous string, ddl, rooms []string) (*baselineWriter, error) {
	// A private driver instance: no global registration needed.
	db := sql.OpenDB(connector{dsn: "file:" + path + "?_busy_timeout=10000"})
	w := &baselineWriter{db: db, rooms: rooms, errors: map[string]uint64{}}
	db.SetMaxOpenConns(1) // SQLite has one writer; one connection keeps it honest.
	db.SetMaxIdleConns(1)
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return w, err
	}
	if !strings.EqualFold(mode, "wal") {
		return w, fmt.Errorf("journal_mode is %q, not wal", mode)
	}
	for _, stmt := range append([]string{"PRAGMA synchronous=" + synchronous}, ddl...) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return w, fmt.Errorf("%s: %w", stmt, err)
		}
	}
	ins, err := db.PrepareContext(ctx, "INSERT INTO messages(room_id, author, body, created_at) VALUES (?, ?, ?, ?)")
	if err != nil {
		return w, err
	}
	w.ins = ins
	return w, nil
}

// run inserts, one autocommit transaction each, until the window ends.
func (w *baselineWriter) run(ctx context.Context, win *window) {
	for i := 0; ctx.Err() == nil; i++ {
		start := time.Now()
		_, err := w.ins.ExecContext(ctx, w.rooms[i%len(w.rooms)], benchAuthor, benchBody, start.UnixMilli())
		end := time.Now()
		if end.After(win.start) && !end.After(win.end) {
			if err != nil {
				w.errors[errorKind(err)]++
			} else {
				w.ops++
				w.hist.record(end.Sub(start))
			}
		}
		if end.After(win.end) {
			return
		}
	}
}

func (w *baselineWriter) close() {
	if w.ins != nil {
		w.ins.Close()
	}
	w.db.Close()
}

// connector opens go-sqlite3 connections without the driver's global
// registration.
type connector struct{ dsn string }

func (c connector) Connect(context.Context) (driver.Conn, error) {
	return (&sqlite3.SQLiteDriver{}).Open(c.dsn)
}

func (c connector) Driver() driver.Driver { return &sqlite3.SQLiteDriver{} }

func errorKind(err error) string {
	if se, ok := err.(sqlite3.Error); ok {
		return "sqlite:" + se.Code.Error()
	}
	return "error"
}
