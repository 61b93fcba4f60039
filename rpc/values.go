package rpc

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/lunora/lunora/api"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc/codes"
)

// ValueToProto converts one Go value to a protobuf Value. It accepts the
// values of api.Result (nil, int64, float64, string, []byte, bool), the other
// Go integer and float kinds, and json.Number (an integer when it parses as
// one, else a float). Anything else is an INVALID_ARGUMENT error.
func ValueToProto(v any) (*lunorav1.Value, error) {
	switch x := v.(type) {
	case nil:
		return &lunorav1.Value{Kind: &lunorav1.Value_Null{Null: true}}, nil
	case int64:
		return intValue(x), nil
	case int:
		return intValue(int64(x)), nil
	case int32:
		return intValue(int64(x)), nil
	case int16:
		return intValue(int64(x)), nil
	case int8:
		return intValue(int64(x)), nil
	case uint32:
		return intValue(int64(x)), nil
	case uint16:
		return intValue(int64(x)), nil
	case uint8:
		return intValue(int64(x)), nil
	case uint64:
		if x > math.MaxInt64 {
			return nil, api.Errorf(codes.InvalidArgument, "integer %d is out of int64 range", x)
		}
		return intValue(int64(x)), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return nil, api.Errorf(codes.InvalidArgument, "integer %d is out of int64 range", x)
		}
		return intValue(int64(x)), nil
	case float64:
		return &lunorav1.Value{Kind: &lunorav1.Value_Real{Real: x}}, nil
	case float32:
		return &lunorav1.Value{Kind: &lunorav1.Value_Real{Real: float64(x)}}, nil
	case string:
		return &lunorav1.Value{Kind: &lunorav1.Value_Text{Text: x}}, nil
	case []byte:
		return &lunorav1.Value{Kind: &lunorav1.Value_Blob{Blob: x}}, nil
	case bool:
		return &lunorav1.Value{Kind: &lunorav1.Value_Boolean{Boolean: x}}, nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return intValue(i), nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, api.Errorf(codes.InvalidArgument, "number %s is out of range", x)
		}
		return &lunorav1.Value{Kind: &lunorav1.Value_Real{Real: f}}, nil
	}
	return nil, api.Errorf(codes.InvalidArgument, "unsupported value of type %T: a value is null, an integer, a real, text, a blob or a boolean", v)
}

func intValue(i int64) *lunorav1.Value {
	return &lunorav1.Value{Kind: &lunorav1.Value_Integer{Integer: i}}
}

// ValueFromProto converts a protobuf Value to nil, int64, float64, string,
// []byte or bool. A nil Value or one with no kind set is NULL.
func ValueFromProto(v *lunorav1.Value) any {
	switch k := v.GetKind().(type) {
	case *lunorav1.Value_Integer:
		return k.Integer
	case *lunorav1.Value_Real:
		return k.Real
	case *lunorav1.Value_Text:
		return k.Text
	case *lunorav1.Value_Blob:
		if k.Blob == nil {
			return []byte{}
		}
		return k.Blob
	case *lunorav1.Value_Boolean:
		return k.Boolean
	}
	return nil
}

// ArgsToProto converts named arguments or parameters; see ValueToProto.
func ArgsToProto(args map[string]any) (map[string]*lunorav1.Value, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := make(map[string]*lunorav1.Value, len(args))
	for name, v := range args {
		pv, err := ValueToProto(v)
		if err != nil {
			return nil, api.Errorf(codes.InvalidArgument, "argument %q: %s", name, err.Error())
		}
		out[name] = pv
	}
	return out, nil
}

// ArgsFromProto converts named arguments or parameters; the map is never nil.
func ArgsFromProto(args map[string]*lunorav1.Value) map[string]any {
	out := make(map[string]any, len(args))
	for name, v := range args {
		out[name] = ValueFromProto(v)
	}
	return out
}

func rowsToProto(rows [][]any) ([]*lunorav1.Row, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	out := make([]*lunorav1.Row, len(rows))
	for i, row := range rows {
		vals := make([]*lunorav1.Value, len(row))
		for j, v := range row {
			pv, err := ValueToProto(v)
			if err != nil {
				// A result value the glue cannot carry is a bug on the
				// serving side, not the caller's fault.
				return nil, api.Errorf(codes.Internal, "result row %d, column %d: %s", i, j, err.Error())
			}
			vals[j] = pv
		}
		out[i] = &lunorav1.Row{Values: vals}
	}
	return out, nil
}

func rowsFromProto(rows []*lunorav1.Row) [][]any {
	if len(rows) == 0 {
		return nil
	}
	out := make([][]any, len(rows))
	for i, row := range rows {
		vals := make([]any, len(row.GetValues()))
		for j, v := range row.GetValues() {
			vals[j] = ValueFromProto(v)
		}
		out[i] = vals
	}
	return out
}

// CallResponseFromResult converts a result for the Call methods.
func CallResponseFromResult(r *api.Result) (*lunorav1.CallResponse, error) {
	if r == nil {
		return nil, api.New(codes.Internal, "internal error: no result")
	}
	rows, err := rowsToProto(r.Rows)
	if err != nil {
		return nil, err
	}
	return &lunorav1.CallResponse{
		Columns:      r.Columns,
		Rows:         rows,
		CommitSeq:    r.Seq,
		ShardId:      r.ShardID,
		RowsAffected: r.RowsAffected,
		Bookmark:     r.Bookmark,
	}, nil
}

// ResultFromCallResponse converts a Call answer back to a result.
func ResultFromCallResponse(m *lunorav1.CallResponse) *api.Result {
	return &api.Result{
		Columns:      m.GetColumns(),
		Rows:         rowsFromProto(m.GetRows()),
		Seq:          m.GetCommitSeq(),
		ShardID:      m.GetShardId(),
		RowsAffected: m.GetRowsAffected(),
		Bookmark:     m.GetBookmark(),
	}
}

// SqlResponseFromResult converts a result for the Sql methods.
func SqlResponseFromResult(r *api.Result) (*lunorav1.SqlResponse, error) {
	c, err := CallResponseFromResult(r)
	if err != nil {
		return nil, err
	}
	return &lunorav1.SqlResponse{
		Columns:      c.Columns,
		Rows:         c.Rows,
		CommitSeq:    c.CommitSeq,
		ShardId:      c.ShardId,
		RowsAffected: c.RowsAffected,
		Bookmark:     c.Bookmark,
	}, nil
}

// ResultFromSqlResponse converts a Sql answer back to a result.
func ResultFromSqlResponse(m *lunorav1.SqlResponse) *api.Result {
	return &api.Result{
		Columns:      m.GetColumns(),
		Rows:         rowsFromProto(m.GetRows()),
		Seq:          m.GetCommitSeq(),
		ShardID:      m.GetShardId(),
		RowsAffected: m.GetRowsAffected(),
		Bookmark:     m.GetBookmark(),
	}
}

// StatusResponseFromStatus converts a process status.
func StatusResponseFromStatus(s *api.Status) (*lunorav1.StatusResponse, error) {
	if s == nil {
		return nil, api.New(codes.Internal, "internal error: no status")
	}
	return &lunorav1.StatusResponse{
		NodeId:        s.NodeID,
		NodeAddress:   s.NodeAddress,
		Version:       s.Version,
		ActiveShards:  s.ActiveShards,
		ShardsOnDisk:  s.ShardsOnDisk,
		InFlight:      s.InFlight,
		UptimeSeconds: s.UptimeSeconds,
		Cluster:       clusterToProto(s.Cluster),
	}, nil
}

func clusterToProto(c *api.ClusterStatus) *lunorav1.ClusterStatus {
	if c == nil {
		return nil
	}
	conv := func(ns []api.RingNode) []*lunorav1.ClusterNode {
		out := make([]*lunorav1.ClusterNode, len(ns))
		for i, n := range ns {
			out[i] = &lunorav1.ClusterNode{Id: n.ID, Weight: int32(n.Weight), GrpcAddr: n.GRPCAddr, State: n.State, Shards: n.Shards, Alive: n.Alive, Raft: n.Raft, InRing: n.InRing}
		}
		return out
	}
	moves := make([]*lunorav1.ShardMove, len(c.Moves))
	for i, m := range c.Moves {
		moves[i] = &lunorav1.ShardMove{ShardId: m.ShardID, From: m.From, To: m.To, Bytes: m.Bytes, Size: m.Size, ElapsedMs: m.Elapsed.Milliseconds()}
	}
	return &lunorav1.ClusterStatus{RingEpoch: c.Ring.Epoch, Nodes: conv(c.Ring.Nodes), Members: conv(c.Ring.Members), MovesInFlight: c.MovesInFlight, Moves: moves}
}

func clusterFromProto(m *lunorav1.ClusterStatus) *api.ClusterStatus {
	if m == nil {
		return nil
	}
	conv := func(ns []*lunorav1.ClusterNode) []api.RingNode {
		out := make([]api.RingNode, len(ns))
		for i, n := range ns {
			out[i] = api.RingNode{ID: n.GetId(), Weight: int(n.GetWeight()), GRPCAddr: n.GetGrpcAddr(), State: n.GetState(), Shards: n.GetShards(), Alive: n.GetAlive(), Raft: n.GetRaft(), InRing: n.GetInRing()}
		}
		return out
	}
	var moves []api.ShardMove
	for _, mv := range m.GetMoves() {
		moves = append(moves, api.ShardMove{ShardID: mv.GetShardId(), From: mv.GetFrom(), To: mv.GetTo(), Bytes: mv.GetBytes(), Size: mv.GetSize(), Elapsed: time.Duration(mv.GetElapsedMs()) * time.Millisecond})
	}
	return &api.ClusterStatus{Ring: api.Ring{Epoch: m.GetRingEpoch(), Nodes: conv(m.GetNodes()), Members: conv(m.GetMembers())}, MovesInFlight: m.GetMovesInFlight(), Moves: moves}
}

// StatusFromStatusResponse converts a process status back.
func StatusFromStatusResponse(m *lunorav1.StatusResponse) *api.Status {
	return &api.Status{
		NodeID:        m.GetNodeId(),
		NodeAddress:   m.GetNodeAddress(),
		Version:       m.GetVersion(),
		ActiveShards:  m.GetActiveShards(),
		ShardsOnDisk:  m.GetShardsOnDisk(),
		InFlight:      m.GetInFlight(),
		UptimeSeconds: m.GetUptimeSeconds(),
		Cluster:       clusterFromProto(m.GetCluster()),
	}
}

// ReadOptionsFromProto converts read options; nil means the defaults.
func ReadOptionsFromProto(r *lunorav1.ReadOptions) api.ReadOptions {
	out := api.ReadOptions{Bookmark: r.GetBookmark(), MaxStaleness: time.Duration(r.GetMaxStalenessMs()) * time.Millisecond}
	switch r.GetConsistency() {
	case lunorav1.ReadOptions_STRONG:
		out.Consistency = api.Strong
	case lunorav1.ReadOptions_BOOKMARK:
		out.Consistency = api.Bookmark
	case lunorav1.ReadOptions_STALE:
		out.Consistency = api.Stale
	}
	return out
}

// ReadOptionsToProto converts read options; the defaults become nil.
func ReadOptionsToProto(r api.ReadOptions) *lunorav1.ReadOptions {
	if r.Consistency == api.ConsistencyDefault && r.Bookmark == 0 && r.MaxStaleness == 0 {
		return nil
	}
	out := &lunorav1.ReadOptions{Bookmark: r.Bookmark, MaxStalenessMs: uint64(r.MaxStaleness / time.Millisecond)}
	switch r.Consistency {
	case api.Strong:
		out.Consistency = lunorav1.ReadOptions_STRONG
	case api.Bookmark:
		out.Consistency = lunorav1.ReadOptions_BOOKMARK
	case api.Stale:
		out.Consistency = lunorav1.ReadOptions_STALE
	}
	return out
}
