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
func (a *actor) query(ctx context.Context, stmts []string, args []driver.NamedValue) (*api.Result, error) {
	r, err := a.reader(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { a.readers <- r }()
	ctx, cancel := context.WithTimeout(ctx, a.h.cfg.StatementTimeout)
	defer cancel()
	r.Reset()
	if _, err := r.Exec(ctx, "BEGIN"); err != nil {
		return nil, r.Classify(err, a.id)
	}
	defer r.Exec(context.Background(), "COMMIT")
	_, seqRows, err := r.QueryRows(ctx, "SELECT v FROM __lunora_meta WHERE k = 'seq'", nil, a.h.limits())
	if err != nil || len(seqRows) != 1 {
		return nil, api.Errorf(codes.Internal, "shard %s: read commit sequence: %v", a.id, err)
	}
	res := &api.Result{Seq: uint64(asInt(seqRows[0][0])), ShardID: a.id}
	r.Now = time.Now()
	defer func() { r.User, r.Now = false, time.Time{} }()
	for i, stmt := range stmts {
		r.User = true
		if i < len(stmts)-1 {
			if _, err := r.Exec(ctx, stmt, args...); err != nil {
				return nil, r.Classify(err, a.id)
			}
			continue
		}
		cols, rows, err := r.QueryRows(ctx, stmt, args, a.h.limits())
		if err != nil {
			return nil, r.Classify(err, a.id)
		}
		res.Columns, res.Rows = cols, rows
	}
	return res, nil
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
