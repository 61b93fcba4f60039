package shardhost

import (
	"context"
	"database/sql/driver"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// query runs a query function on one of the shard's read-only connections,
// in one read transaction: a WAL snapshot that never waits behind the
// writer. The result carries the commit sequence number of that snapshot.
//
// With held set, the result's bytes stay reserved from the node's result
// budget and are added to *held for the caller to release.
func (a *actor) query(ctx context.Context, stmts []string, args []driver.NamedValue, held *int64) (*api.Result, error) {
	r, err := a.reader(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { a.readers <- r }()
	return a.queryOn(ctx, r, stmts, args, held)
}

// queryOn is query on the read connection r, checked out by the caller.
func (a *actor) queryOn(ctx context.Context, r *sqlitex.Conn, stmts []string, args []driver.NamedValue, held *int64) (*api.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, a.h.cfg.StatementTimeout)
	defer cancel()
	r.Reset()
	if _, err := r.ExecSys("BEGIN"); err != nil {
		return nil, r.Classify(err, a.id)
	}
	defer r.ExecSys("COMMIT")
	_, seqRows, err := r.QueryRows(ctx, "SELECT v FROM __lunora_meta WHERE k = 'seq'", nil, sqlitex.Limits{MaxRows: 1, MaxBytes: 64})
	if err != nil || len(seqRows) != 1 {
		return nil, api.Errorf(codes.Internal, "shard %s: read commit sequence: %v", a.id, err)
	}
	res := &api.Result{Seq: uint64(asInt(seqRows[0][0])), ShardID: a.id}
	// I2: the snapshot may hold a commit the node's syncer has not made
	// durable yet (node mode); nothing is read from it before it is.
	if err := a.waitDurableSeq(ctx, res.Seq); err != nil {
		return nil, err
	}
	r.Now = time.Now()
	r.Caller = callerOf(ctx)
	defer func() { r.User, r.Now, r.Caller = false, time.Time{}, sqlitex.Caller{} }()
	for i, stmt := range stmts {
		r.User = true
		lim := a.h.limits()
		if i == len(stmts)-1 {
			lim.Held = held
		}
		// Earlier statements' rows are bounded like any result and dropped.
		cols, rows, err := r.QueryRows(ctx, stmt, args, lim)
		if err != nil {
			return nil, r.Classify(err, a.id)
		}
		res.Columns, res.Rows = cols, rows
	}
	return res, nil
}

// adminRead runs one admin statement on a read connection if SQLite says
// it cannot write (ok true); otherwise it leaves it to the writer. Reads
// never queue behind the shard's writes nor count as mutations.
func (a *actor) adminRead(ctx context.Context, sql string, args []driver.NamedValue, held *int64) (res *api.Result, ok bool, err error) {
	r, err := a.reader(ctx)
	if err != nil {
		return nil, false, err
	}
	defer func() { a.readers <- r }()
	r.Reset()
	r.User = true
	ro, err := r.ReadOnly(sql)
	if err != nil {
		err = r.Classify(err, a.id)
	}
	r.User = false
	if err != nil || !ro {
		return nil, false, err
	}
	// The same connection runs it: the statement ReadOnly prepared is in
	// its cache.
	res, err = a.queryOn(ctx, r, []string{sql}, args, held)
	return res, true, err
}

// reader checks out a read connection, opening one if fewer than ReadConns
// are open, else waiting for one to be returned.
func (a *actor) reader(ctx context.Context) (*sqlitex.Conn, error) {
	select {
	case r := <-a.readers:
		return r, nil
	default:
	}
	select {
	case r := <-a.readers:
		return r, nil
	case a.readerSlot <- struct{}{}:
		r, err := sqlitex.Open(a.path, a.h.connOptions(true))
		if err != nil {
			<-a.readerSlot
			return nil, api.Errorf(codes.Internal, "shard %s: open read connection: %v", a.id, err)
		}
		return r, nil
	case <-ctx.Done():
		return nil, api.Errorf(api.CodeOf(ctx.Err()), "shard %s: waiting for a read connection: %v", a.id, ctx.Err())
	}
}
