package shardhost

import (
	"context"
	"database/sql/driver"
	"sort"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

// Alarms lists one shard's alarms: the pending ones by due time, then the
// dead ones by when they died, up to limit in all. A shard not held here
// answers ErrShardElsewhere; it is never created.
func (h *Host) Alarms(ctx context.Context, shardID string, limit int) ([]api.Alarm, error) {
	if limit < 1 || limit > 10000 {
		return nil, api.Errorf(codes.InvalidArgument, "limit must be between 1 and 10000, not %d", limit)
	}
	var out []api.Alarm
	err := h.onHeldShard(ctx, shardID, func(a *actor) error {
		r, err := a.reader(ctx)
		if err != nil {
			return err
		}
		defer func() { a.readers <- r }()
		lim := sqlitex.Limits{MaxRows: limit, MaxBytes: 1 << 40}
		_, rows, err := r.QueryRows(ctx, "SELECT id, due_ms, function, args, attempt, created_ms FROM __lunora_alarms ORDER BY due_ms, id LIMIT ?",
			[]driver.NamedValue{{Ordinal: 1, Value: int64(limit)}}, lim)
		if err != nil {
			return err
		}
		for _, row := range rows {
			out = append(out, api.Alarm{ID: row[0].(string), ShardID: a.id, Due: time.UnixMilli(asInt(row[1])), Function: row[2].(string),
				Args: row[3].(string), Attempts: int(asInt(row[4])), Created: time.UnixMilli(asInt(row[5]))})
		}
		if len(out) >= limit {
			return nil
		}
		_, rows, err = r.QueryRows(ctx, "SELECT id, due_ms, function, args, attempts, created_ms, dead_ms, error FROM __lunora_dead_alarms ORDER BY dead_ms, id LIMIT ?",
			[]driver.NamedValue{{Ordinal: 1, Value: int64(limit - len(out))}}, lim)
		if err != nil {
			return err
		}
		for _, row := range rows {
			out = append(out, api.Alarm{ID: row[0].(string), ShardID: a.id, Due: time.UnixMilli(asInt(row[1])), Function: row[2].(string),
				Args: row[3].(string), Attempts: int(asInt(row[4])), Created: time.UnixMilli(asInt(row[5])),
				Dead: true, Died: time.UnixMilli(asInt(row[6])), Error: row[7].(string)})
		}
		return nil
	})
	return out, err
}

// AlarmsDue lists this node's alarm index by due time, up to limit: each
// shard with a pending alarm and when its next one is due.
func (h *Host) AlarmsDue(limit int) []api.AlarmDue {
	idx := h.AlarmIndex()
	out := make([]api.AlarmDue, 0, len(idx))
	for id, due := range idx {
		out = append(out, api.AlarmDue{ShardID: id, Node: h.cfg.NodeID, Due: time.UnixMilli(due)})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Due.Equal(out[j].Due) {
			return out[i].Due.Before(out[j].Due)
		}
		return out[i].ShardID < out[j].ShardID
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}
