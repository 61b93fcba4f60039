package rpc_test

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc/codes"
)

// callerShards records the caller each request ran as, and keeps API
// keys in a map.
type callerShards struct {
	fakeShards
	mu      sync.Mutex
	callers map[string]*auth.Identity // by method
	keys    map[string]auth.KeyRecord
}

func (s *callerShards) saw(ctx context.Context, method string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.callers[method] = auth.FromContext(ctx)
}

func (s *callerShards) seen(method string) *auth.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callers[method]
}

func (s *callerShards) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	s.saw(ctx, "call")
	return &api.Result{ShardID: shardID}, nil
}

func (s *callerShards) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	s.saw(ctx, "sql")
	return &api.Result{ShardID: shardID}, nil
}

type oneUpdate struct{ sent bool }

func (o *oneUpdate) Next(ctx context.Context) (*api.Update, error) {
	if !o.sent {
		o.sent = true
		return &api.Update{Kind: api.UpdateSnapshot, Seq: 1}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}
func (o *oneUpdate) Close() {}

func (s *callerShards) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	s.saw(ctx, "subscribe")
	return &oneUpdate{}, nil
}

func (s *callerShards) CreateKey(ctx context.Context, name string, role auth.Role) (string, auth.KeyRecord, error) {
	rec := auth.KeyRecord{ID: "0123456789abcdef", Name: name, Role: role, Hash: make([]byte, 32), Created: time.UnixMilli(1000)}
	return s.storeAndToken(rec)
}

func (s *callerShards) storeAndToken(rec auth.KeyRecord) (string, auth.KeyRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[rec.ID] = rec
	return "lk_" + rec.ID + "_secret", rec, nil
}

func (s *callerShards) StoreKey(ctx context.Context, rec auth.KeyRecord, forwarded bool) (auth.KeyRecord, error) {
	if !forwarded {
		return auth.KeyRecord{}, api.New(codes.Internal, "StoreKey without forwarded")
	}
	_, rec, err := s.storeAndToken(rec)
	return rec, err
}

func (s *callerShards) RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.keys[id]
	if !ok {
		return auth.KeyRecord{}, api.Errorf(codes.NotFound, "no API key with ID %q", id)
	}
	rec.Revoked = time.UnixMilli(2000)
	s.keys[id] = rec
	return rec, nil
}

func (s *callerShards) ListKeys(ctx context.Context, limit int) ([]auth.KeyRecord, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []auth.KeyRecord
	for _, k := range s.keys {
		k.Hash = nil
		out = append(out, k)
	}
	return out, false, nil
}

func (s *callerShards) LookupKey(ctx context.Context, id string) (*auth.KeyRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.keys[id]
	if !ok {
		return nil, nil
	}
	return &rec, nil
}

// The caller's identity crosses the node API with Call, Sql and
// Subscribe and is back in the context the node runs them with.
func TestNodeAPICarriesTheCaller(t *testing.T) {
	shards := &callerShards{callers: map[string]*auth.Identity{}, keys: map[string]auth.KeyRecord{}}
	c := startNode(t, shards)
	id := &auth.Identity{
		Method: auth.MethodJWT, Role: auth.RoleClient, Subject: "ada",
		Claims:  map[string]any{"sub": "ada", "rooms": []any{"r1", "r2"}, "n": 3.5, "ok": true},
		Expires: time.UnixMilli(time.Now().Add(time.Hour).UnixMilli()),
	}
	ctx := auth.NewContext(testCtx(t), id)
	if _, err := c.Call(ctx, "room_id=r1", "messages:list", nil, api.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "room_id=r1", "SELECT 1", nil, api.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Subscribe(ctx, "room_id=r1", "messages:list", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, m := range []string{"call", "sql", "subscribe"} {
		got := shards.seen(m)
		if got == nil || !reflect.DeepEqual(*got, *id) || !got.Expires.Equal(id.Expires) {
			t.Fatalf("%s ran as %+v, sent as %+v", m, got, id)
		}
	}
	// No identity in: none out.
	if _, err := c.Call(testCtx(t), "room_id=r1", "messages:list", nil, api.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := shards.seen("call"); got != nil {
		t.Fatalf("a call without a caller ran as %+v", got)
	}
}

func TestNodeAPIKeys(t *testing.T) {
	shards := &callerShards{callers: map[string]*auth.Identity{}, keys: map[string]auth.KeyRecord{}}
	c := startNode(t, shards)
	ctx := testCtx(t)
	token, rec, err := c.CreateKey(ctx, "ci", auth.RoleService)
	if err != nil || token != "lk_0123456789abcdef_secret" || rec.ID != "0123456789abcdef" || rec.Role != auth.RoleService || rec.Hash != nil || !rec.Created.Equal(time.UnixMilli(1000)) {
		t.Fatalf("CreateKey: %q %+v %v (the answer must not carry the hash)", token, rec, err)
	}
	got, err := c.LookupKey(ctx, rec.ID)
	if err != nil || got == nil || len(got.Hash) != 32 {
		t.Fatalf("LookupKey: %+v %v (a lookup carries the hash)", got, err)
	}
	if none, err := c.LookupKey(ctx, "ffffffffffffffff"); err != nil || none != nil {
		t.Fatalf("LookupKey of an unknown key: %+v %v", none, err)
	}
	stored, err := c.StoreKey(ctx, auth.KeyRecord{ID: "1123456789abcdef", Name: "app", Role: auth.RoleClient, Hash: make([]byte, 32)}, true)
	if err != nil || stored.ID != "1123456789abcdef" {
		t.Fatalf("StoreKey: %+v %v", stored, err)
	}
	keys, more, err := c.ListKeys(ctx, 0)
	if err != nil || more || len(keys) != 2 || keys[0].Hash != nil || keys[1].Hash != nil {
		t.Fatalf("ListKeys: %+v %v %v", keys, more, err)
	}
	r, err := c.RevokeKey(ctx, rec.ID, false)
	if err != nil || !r.Revoked.Equal(time.UnixMilli(2000)) {
		t.Fatalf("RevokeKey: %+v %v", r, err)
	}
	if _, err := c.RevokeKey(ctx, "nope", false); api.CodeOf(err) != codes.NotFound {
		t.Fatalf("RevokeKey of an unknown key: %v", err)
	}
	// A node without keys says so.
	plain := startNode(t, &fakeShards{})
	if _, err := plain.LookupKey(ctx, rec.ID); api.CodeOf(err) != codes.Unimplemented {
		t.Fatalf("LookupKey on a node without keys: %v", err)
	}
}

func TestCallerFromProtoRefusesBadInput(t *testing.T) {
	m, _ := rpc.CallerToProto(&auth.Identity{Method: auth.MethodAPIKey, Role: auth.RoleAdmin, Subject: "k"})
	m.Role = "root"
	if _, err := rpc.CallerFromProto(m); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("unknown role: %v", err)
	}
	m.Role, m.Claims = "admin", []byte("[1]")
	if _, err := rpc.CallerFromProto(m); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("claims that are not an object: %v", err)
	}
}
