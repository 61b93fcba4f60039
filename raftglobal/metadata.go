package raftglobal

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// The cluster metadata lives in the FSM's __lunora_* tables, written only
// through the log by the system statements below (user SQL may read them
// but the sandbox refuses writes). Writes are leader-only, like Write;
// reads are served by the local replica (stale): a caller that needs more
// passes the Seq of its write... or reads on the leader.

// RingNode is one node of a ring epoch.
type RingNode struct {
	ID     string
	Weight int
}

// NodeInfo is what the cluster records about a node.
type NodeInfo struct {
	ID        string
	GRPCAddr  string
	RaftAddr  string
	State     string // e.g. joining, active, leaving, down
	UpdatedMs int64  // lunora_now() of the write that set it
}

// RootShard is the shard of tables that neither shard by a column nor are
// global; it is its own group in the registry.
const RootShard = "__root__"

// ShardGroup is the registry group of a shard ID: the shard_by column before
// '=' ("room_id=r1" → "room_id"), or the ID itself for "__root__".
func ShardGroup(shardID string) string {
	if i := strings.IndexByte(shardID, '='); i >= 0 {
		return shardID[:i]
	}
	return shardID
}

// system runs one metadata write through the log.
func (s *Store) system(ctx context.Context, args map[string]any, sql ...string) (*api.Result, error) {
	w, err := toWire(Command{SQL: sql, Args: args}, true, 1<<20)
	if err != nil {
		return nil, err
	}
	return s.propose(ctx, w)
}

// systemRead reads metadata from the local replica.
func (s *Store) systemRead(ctx context.Context, args map[string]any, sql ...string) (*api.Result, error) {
	w, err := toWire(Command{SQL: sql, Args: args}, true, 1<<20)
	if err != nil {
		return nil, err
	}
	return s.fsm.read(ctx, &w)
}

// SetRing commits a new ring epoch (leader only) and returns its number,
// one more than the last. Nodes are stored sorted by ID.
func (s *Store) SetRing(ctx context.Context, nodes []RingNode) (uint64, error) {
	epoch, _, err := s.CASRing(ctx, 0, false, nodes)
	return epoch, err
}

// CASRing commits a new ring epoch only if the newest one is still expect
// (when check is set): concurrent joins and leaves each read the ring,
// change it and retry on a conflict, so none is lost. It returns the newest
// epoch after the call and whether this call created it.
func (s *Store) CASRing(ctx context.Context, expect uint64, check bool, nodes []RingNode) (uint64, bool, error) {
	if len(nodes) == 0 {
		return 0, false, api.Errorf(codes.InvalidArgument, "a ring needs at least one node")
	}
	sorted, err := sortedRing(nodes)
	if err != nil {
		return 0, false, err
	}
	js, _ := json.Marshal(sorted)
	res, err := s.system(ctx, map[string]any{"nodes": string(js), "expect": int64(expect), "check": check},
		`INSERT INTO __lunora_ring (epoch, nodes, created_ms)
		 SELECT coalesce(max(epoch), 0) + 1, :nodes, lunora_now() FROM __lunora_ring
		 HAVING NOT :check OR coalesce(max(epoch), 0) = :expect`,
		`SELECT (SELECT max(epoch) FROM __lunora_ring), changes()`)
	if err != nil {
		return 0, false, err
	}
	n, _ := cell(res, 1).(int64)
	return uint64(firstInt(res)), n == 1, nil
}

// Ring returns the newest ring epoch this replica has (0 and no nodes when
// none was ever set).
func (s *Store) Ring(ctx context.Context) (uint64, []RingNode, error) {
	res, err := s.systemRead(ctx, nil, `SELECT epoch, nodes FROM __lunora_ring ORDER BY epoch DESC LIMIT 1`)
	if err != nil || len(res.Rows) == 0 {
		return 0, nil, err
	}
	var nodes []RingNode
	js, _ := res.Rows[0][1].(string)
	if err := json.Unmarshal([]byte(js), &nodes); err != nil {
		return 0, nil, api.Errorf(codes.Internal, "ring epoch %v: %v", res.Rows[0][0], err)
	}
	epoch, _ := res.Rows[0][0].(int64)
	return uint64(epoch), nodes, nil
}

// SetNodeState records a node's addresses and state (leader only).
func (s *Store) SetNodeState(ctx context.Context, n NodeInfo) error {
	if n.ID == "" || n.State == "" {
		return api.Errorf(codes.InvalidArgument, "node state needs an ID and a state")
	}
	_, err := s.system(ctx, map[string]any{"id": n.ID, "grpc": n.GRPCAddr, "raft": n.RaftAddr, "state": n.State},
		`INSERT INTO __lunora_nodes (id, grpc_addr, raft_addr, state, updated_ms)
		 VALUES (:id, :grpc, :raft, :state, lunora_now())
		 ON CONFLICT (id) DO UPDATE SET grpc_addr = excluded.grpc_addr, raft_addr = excluded.raft_addr,
		   state = excluded.state, updated_ms = excluded.updated_ms`)
	return err
}

// Nodes returns the recorded nodes, by ID, from this replica.
func (s *Store) Nodes(ctx context.Context) ([]NodeInfo, error) {
	res, err := s.systemRead(ctx, nil, `SELECT id, grpc_addr, raft_addr, state, updated_ms FROM __lunora_nodes ORDER BY id`)
	if err != nil {
		return nil, err
	}
	out := make([]NodeInfo, 0, len(res.Rows))
	for _, r := range res.Rows {
		n := NodeInfo{}
		n.ID, _ = r[0].(string)
		n.GRPCAddr, _ = r[1].(string)
		n.RaftAddr, _ = r[2].(string)
		n.State, _ = r[3].(string)
		n.UpdatedMs, _ = r[4].(int64)
		out = append(out, n)
	}
	return out, nil
}

// RegisterShard records that shardID exists and is held by creator, the
// node creating it (leader only), atomically in the FSM: existed is false for the call that created
// the entry and true for every later one (invariant I4: a node never
// creates a shard the registry already holds). A creator that is not in
// the newest ring epoch (when there is one) creates nothing
// (ErrNotInRing): like MoveShard's check, it makes a leaving node's
// replica, once at its leave's epoch, list every shard the node must hand
// off — a creation that raced the leave would otherwise commit after the
// leave's last handoff pass and strand the shard on a node outside the
// ring. It returns the holder the
// registry names after the call and the log index of the write.
func (s *Store) RegisterShard(ctx context.Context, shardID, creator string) (existed bool, holder string, index uint64, err error) {
	if shardID == "" {
		return false, "", 0, api.Errorf(codes.InvalidArgument, "shard ID is empty")
	}
	res, err := s.system(ctx, map[string]any{"id": shardID, "grp": ShardGroup(shardID), "holder": creator},
		`INSERT INTO __lunora_shards (id, grp, created_ms, owner) SELECT :id, :grp, lunora_now(), :holder
		   WHERE NOT EXISTS (SELECT 1 FROM __lunora_ring)
		      OR EXISTS (SELECT 1 FROM json_each((SELECT nodes FROM __lunora_ring ORDER BY epoch DESC LIMIT 1))
		                 WHERE json_extract(value, '$.ID') = :holder)
		 ON CONFLICT (id) DO NOTHING`,
		`SELECT changes() = 0, owner FROM __lunora_shards WHERE id = :id`)
	if err != nil {
		return false, "", 0, err
	}
	if len(res.Rows) == 0 {
		return false, "", res.Seq, api.Wrap(ErrNotInRing, fmt.Sprintf("node %s cannot create shard %s", creator, shardID))
	}
	holder, _ = cell(res, 1).(string)
	return firstInt(res) == 1, holder, res.Seq, nil
}

// MoveShard hands shardID from one holder to another (leader only): a
// compare-and-set that changes the registry only while from still holds
// it. It returns the holder after the call — to when the move took effect
// now or earlier — and the log index of the write. The old holder calls it
// once the new holder has made its copy durable; it is the move's commit
// point. A move to a node that is not in the newest ring epoch (when there
// is one) does not take effect: a node that has left the ring never
// becomes a holder after its leave's epoch, so the shards it must hand off
// are exactly those its replica lists once it has applied that epoch (a
// move that raced the leave stays with its sender, which moves it to the
// shard's owner at the new epoch).
//
// toIncarnation, when not 0, fences the move to one process of the
// receiver: it takes effect only while to's newest recorded incarnation
// (NodeIncarnation) is toIncarnation. A receiver that restarts records
// its new incarnation before it discards a copy it received but that no
// move had committed yet, so a commit delayed past that (a sender cut off
// by a partition) cannot name it the holder of a copy it no longer has.
func (s *Store) MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64) (holder string, index uint64, err error) {
	if shardID == "" || from == "" || to == "" {
		return "", 0, api.Errorf(codes.InvalidArgument, "a shard move needs a shard ID, the current holder and the new one")
	}
	res, err := s.system(ctx, map[string]any{"id": shardID, "from": from, "to": to, "inc": int64(toIncarnation)},
		`UPDATE __lunora_shards SET owner = :to, moved_ms = lunora_now() WHERE id = :id AND owner = :from
		   AND (NOT EXISTS (SELECT 1 FROM __lunora_ring)
		     OR EXISTS (SELECT 1 FROM json_each((SELECT nodes FROM __lunora_ring ORDER BY epoch DESC LIMIT 1))
		                WHERE json_extract(value, '$.ID') = :to))
		   AND (:inc = 0 OR coalesce((SELECT incarnation FROM __lunora_ring_ops WHERE id = :to), 0) = :inc)`,
		`SELECT owner FROM __lunora_shards WHERE id = :id`)
	if err != nil {
		return "", 0, err
	}
	if len(res.Rows) == 0 {
		return "", res.Seq, api.Errorf(codes.NotFound, "shard %s is not in the registry", shardID)
	}
	holder, _ = cell(res, 0).(string)
	return holder, res.Seq, nil
}

// NodeIncarnation reports, from this replica, the newest incarnation of
// node id's processes that the log has recorded (a join or leave of the
// ring records it), or 0.
func (s *Store) NodeIncarnation(ctx context.Context, id string) (uint64, error) {
	res, err := s.systemRead(ctx, map[string]any{"id": id}, `SELECT incarnation FROM __lunora_ring_ops WHERE id = :id`)
	if err != nil || len(res.Rows) == 0 {
		return 0, err
	}
	inc, _ := cell(res, 0).(int64)
	return uint64(inc), nil
}

// ShardHolder reports, from this replica, whether the registry holds
// shardID and which node holds its file ("" for a shard registered before
// holders were recorded).
func (s *Store) ShardHolder(ctx context.Context, shardID string) (holder string, exists bool, err error) {
	res, err := s.systemRead(ctx, map[string]any{"id": shardID}, `SELECT owner FROM __lunora_shards WHERE id = :id`)
	if err != nil || len(res.Rows) == 0 {
		return "", false, err
	}
	holder, _ = cell(res, 0).(string)
	return holder, true, nil
}

// ShardExists reports whether this replica's registry holds shardID.
func (s *Store) ShardExists(ctx context.Context, shardID string) (bool, error) {
	_, ok, err := s.ShardHolder(ctx, shardID)
	return ok, err
}

// HeldShards pages, from this replica, through the shards the registry
// says holder holds, in ID order: up to limit IDs after after, and the
// cursor of the next page ("" at the end).
func (s *Store) HeldShards(ctx context.Context, holder, after string, limit int) (ids []string, next string, err error) {
	return s.pageShards(ctx, `SELECT id FROM __lunora_shards WHERE owner = :key AND id > :after ORDER BY id LIMIT :limit`, holder, after, limit)
}

// ShardsPerHolder counts, from this replica, the registered shards of each
// holder.
func (s *Store) ShardsPerHolder(ctx context.Context) (map[string]int64, error) {
	res, err := s.systemRead(ctx, nil, `SELECT owner, count(*) FROM __lunora_shards GROUP BY owner`)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(res.Rows))
	for _, r := range res.Rows {
		holder, _ := r[0].(string)
		n, _ := r[1].(int64)
		out[holder] = n
	}
	return out, nil
}

// WaitApplied waits until this replica has applied log index idx, so that
// its local reads see that write, or ctx ends.
func (s *Store) WaitApplied(ctx context.Context, idx uint64) error {
	if err := s.fsm.waitApplied(ctx, idx); err != nil {
		return api.Errorf(codes.Unavailable, "global tier: this replica has not applied index %d yet: %v", idx, err)
	}
	return nil
}

// ListShards pages through the registered shard IDs of one group (all
// groups when group is empty) in key order, from this replica: up to limit
// IDs after the ID after, and the cursor of the next page ("" at the end).
func (s *Store) ListShards(ctx context.Context, group, after string, limit int) (ids []string, next string, err error) {
	if group == "" {
		return s.pageShards(ctx, `SELECT id FROM __lunora_shards WHERE :key = '' AND id > :after ORDER BY id LIMIT :limit`, group, after, limit)
	}
	return s.pageShards(ctx, `SELECT id FROM __lunora_shards WHERE grp = :key AND id > :after ORDER BY id LIMIT :limit`, group, after, limit)
}

func (s *Store) pageShards(ctx context.Context, query, key, after string, limit int) (ids []string, next string, err error) {
	if limit < 1 || limit > s.cfg.MaxResultRows {
		return nil, "", api.Errorf(codes.InvalidArgument, "limit must be between 1 and %d", s.cfg.MaxResultRows)
	}
	res, err := s.systemRead(ctx, map[string]any{"key": key, "after": after, "limit": int64(limit + 1)}, query)
	if err != nil {
		return nil, "", err
	}
	for _, r := range res.Rows {
		id, _ := r[0].(string)
		ids = append(ids, id)
	}
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	return ids, next, nil
}

func cell(res *api.Result, col int) any {
	if res == nil || len(res.Rows) == 0 || len(res.Rows[0]) <= col {
		return nil
	}
	return res.Rows[0][col]
}

func firstInt(res *api.Result) int64 {
	if res == nil || len(res.Rows) == 0 || len(res.Rows[0]) == 0 {
		return 0
	}
	switch v := res.Rows[0][0].(type) {
	case int64:
		return v
	case bool:
		if v {
			return 1
		}
	}
	return 0
}

// RingOp is a node's join or leave of the ring, made by one process of the
// node: Incarnation increases with every start of the node (0 is an
// operator's removal, which applies to every process so far).
type RingOp struct {
	Node        string
	Incarnation uint64
	Leave       bool
}

// staleOp is true when op is superseded: a join or leave of a process older
// than the newest recorded one, or a join of a process that has left.
const staleOp = `EXISTS (SELECT 1 FROM __lunora_ring_ops WHERE id = :id AND :inc > 0
	AND (incarnation > :inc OR (incarnation = :inc AND has_left AND NOT :leave)))`

// ChangeRing records op and, when nodes is not nil, commits a new ring
// epoch with nodes if the newest epoch is still expect — in one log entry,
// so joins and leaves are ordered by the log: a join a later leave of the
// same process has overtaken, or a leave of a process a newer one has
// replaced, is refused (stale, nothing changed) wherever it arrives.
// It returns the newest epoch after the call and whether this call
// created it (leader only).
func (s *Store) ChangeRing(ctx context.Context, expect uint64, nodes []RingNode, op RingOp) (epoch uint64, created, stale bool, err error) {
	if op.Node == "" {
		return 0, false, false, api.Errorf(codes.InvalidArgument, "a ring operation needs a node ID")
	}
	js := []byte("[]")
	if nodes != nil {
		if len(nodes) == 0 {
			return 0, false, false, api.Errorf(codes.InvalidArgument, "a ring needs at least one node")
		}
		sorted, err := sortedRing(nodes)
		if err != nil {
			return 0, false, false, err
		}
		js, _ = json.Marshal(sorted)
	}
	res, err := s.system(ctx, map[string]any{"id": op.Node, "inc": int64(op.Incarnation), "leave": op.Leave,
		"nodes": string(js), "has_nodes": nodes != nil, "expect": int64(expect)},
		`INSERT INTO __lunora_ring_ops (id, incarnation, has_left, updated_ms)
		 SELECT :id, :inc, :leave, lunora_now() WHERE NOT `+staleOp+`
		 ON CONFLICT (id) DO UPDATE SET incarnation = max(incarnation, excluded.incarnation),
		   has_left = excluded.has_left, updated_ms = excluded.updated_ms`,
		`INSERT INTO __lunora_ring (epoch, nodes, created_ms)
		 SELECT coalesce(max(epoch), 0) + 1, :nodes, lunora_now() FROM __lunora_ring
		 HAVING :has_nodes AND coalesce(max(epoch), 0) = :expect AND NOT `+staleOp,
		`SELECT (SELECT max(epoch) FROM __lunora_ring), changes(), `+staleOp)
	if err != nil {
		return 0, false, false, err
	}
	n, _ := cell(res, 1).(int64)
	st, _ := cell(res, 2).(int64)
	return uint64(firstInt(res)), n == 1, st == 1, nil
}

// staleIncarnation reports, from this replica, whether a join of node id's
// process incarnation is superseded (see ChangeRing).
func (s *Store) staleIncarnation(ctx context.Context, id string, incarnation uint64) (bool, error) {
	res, err := s.systemRead(ctx, map[string]any{"id": id, "inc": int64(incarnation), "leave": false}, `SELECT `+staleOp)
	if err != nil {
		return false, err
	}
	return firstInt(res) == 1, nil
}

// RingOps returns the newest recorded ring operation of every node, from
// this replica.
func (s *Store) RingOps(ctx context.Context) (map[string]RingOp, error) {
	res, err := s.systemRead(ctx, nil, `SELECT id, incarnation, has_left FROM __lunora_ring_ops ORDER BY id`)
	if err != nil {
		return nil, err
	}
	out := make(map[string]RingOp, len(res.Rows))
	for _, r := range res.Rows {
		id, _ := r[0].(string)
		inc, _ := r[1].(int64)
		left, _ := r[2].(int64)
		out[id] = RingOp{Node: id, Incarnation: uint64(inc), Leave: left == 1}
	}
	return out, nil
}

// SetNodeStateFor is SetNodeState for a node's process (incarnation, see
// ChangeRing): nothing is written, and stale is true, when that process is
// superseded (it has left, or a newer one has joined).
func (s *Store) SetNodeStateFor(ctx context.Context, n NodeInfo, incarnation uint64) (stale bool, err error) {
	if n.ID == "" || n.State == "" {
		return false, api.Errorf(codes.InvalidArgument, "node state needs an ID and a state")
	}
	res, err := s.system(ctx, map[string]any{"id": n.ID, "grpc": n.GRPCAddr, "raft": n.RaftAddr, "state": n.State,
		"inc": int64(incarnation), "leave": false},
		`INSERT INTO __lunora_nodes (id, grpc_addr, raft_addr, state, updated_ms)
		 SELECT :id, :grpc, :raft, :state, lunora_now() WHERE NOT `+staleOp+`
		 ON CONFLICT (id) DO UPDATE SET grpc_addr = excluded.grpc_addr, raft_addr = excluded.raft_addr,
		   state = excluded.state, updated_ms = excluded.updated_ms`,
		`SELECT `+staleOp)
	if err != nil {
		return false, err
	}
	return firstInt(res) == 1, nil
}

// MarkNode changes a recorded node's state, keeping its addresses
// (leader only); a node not recorded yet is recorded without addresses.
func (s *Store) MarkNode(ctx context.Context, id, state string) error {
	if id == "" || state == "" {
		return api.Errorf(codes.InvalidArgument, "node state needs an ID and a state")
	}
	_, err := s.system(ctx, map[string]any{"id": id, "state": state},
		`INSERT INTO __lunora_nodes (id, grpc_addr, raft_addr, state, updated_ms)
		 VALUES (:id, '', '', :state, lunora_now())
		 ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms`)
	return err
}

func sortedRing(nodes []RingNode) ([]RingNode, error) {
	sorted := append([]RingNode(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	for i, n := range sorted {
		if n.ID == "" || n.Weight < 1 {
			return nil, api.Errorf(codes.InvalidArgument, "ring node %+v needs an ID and a weight of at least 1", n)
		}
		if i > 0 && sorted[i-1].ID == n.ID {
			return nil, api.Errorf(codes.InvalidArgument, "ring names node %q twice", n.ID)
		}
	}
	return sorted, nil
}
