package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/schema"
	sqlite3 "github.com/mattn/go-sqlite3"
)

// runBaseline measures what Lunora is compared with: the same inserts made
// straight against SQLite in this process with the same durability — a
// fresh file with the chat app's room_id table DDL, WAL, the same
// synchronous level, one writer, each INSERT its own (autocommit)
// transaction. Like the Lunora phases it runs warmup+duration and counts the
// inserts that complete in the last duration.
func runBaseline(ctx context.Context, dir string, o *options) (*phaseResult, error) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "baseline.db")
	// A private driver instance: no global registration needed.
	db := sql.OpenDB(connector{dsn: "file:" + path + "?_busy_timeout=10000"})
	defer db.Close()
	db.SetMaxOpenConns(1) // SQLite has one writer; one connection keeps it honest.
	db.SetMaxIdleConns(1)
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return nil, fmt.Errorf("baseline: journal_mode is %q, not wal", mode)
	}
	for _, stmt := range append([]string{"PRAGMA synchronous=" + o.synchronous}, app.GroupDDL("room_id")...) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("baseline: %s: %w", stmt, err)
		}
	}
	ins, err := db.PrepareContext(ctx, "INSERT INTO messages(room_id, author, body, created_at) VALUES (?, ?, ?, ?)")
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	defer ins.Close()

	rooms := make([]string, o.shards)
	for i := range rooms {
		rooms[i] = roomName(i)
	}
	res := &phaseResult{
		name:     fmt.Sprintf("baseline sqlite INSERT (%s, autocommit, 1 writer)", o.synchronous),
		window:   o.duration,
		errors:   map[string]uint64{},
		baseline: true,
	}
	now := time.Now()
	winStart, winEnd := now.Add(o.warmup), now.Add(o.warmup+o.duration)
	measuring := false
	var cpuStart, busyStart time.Duration
	for i := 0; ctx.Err() == nil; i++ {
		start := time.Now()
		if !measuring && start.After(winStart) {
			measuring, cpuStart, busyStart = true, processCPU(), machineBusy()
		}
		_, err := ins.ExecContext(ctx, rooms[i%len(rooms)], benchAuthor, benchBody, start.UnixMilli())
		end := time.Now()
		if end.After(winStart) && !end.After(winEnd) {
			if err != nil {
				res.errors[errorKind(err)]++
			} else {
				res.ops++
				res.hist.record(end.Sub(start))
			}
		}
		if end.After(winEnd) {
			break
		}
	}
	res.cpu, res.busy = processCPU()-cpuStart, machineBusy()-busyStart
	if ctx.Err() != nil {
		res.window = min(max(time.Since(winStart), 0), o.duration)
	}
	return res, nil
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
