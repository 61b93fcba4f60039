package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/gateway"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// authSchema is a chat app whose functions say who may call them.
const authSchema = `
tables:
  messages:
    shard_by: room_id
    columns: {room_id: text, id: int, author: text, body: text}
    primary_key: [id]
  inbox:
    shard_by: user_id
    columns: {user_id: text, id: int, body: text}
    primary_key: [id]
queues:
  room-events:
functions:
  messages:list:
    kind: query
    shard_by: room_id
    args: {room_id: text}
    sql:
      - "SELECT id, author, body FROM messages ORDER BY id"
    auth: {roles: [client], shard_key_claim: rooms}
  messages:send:
    kind: mutation
    shard_by: room_id
    args: {room_id: text, body: text}
    sql:
      - "INSERT INTO messages(room_id, author, body) VALUES (:room_id, lunora_auth('sub'), :body)"
    auth: {roles: [client], shard_key_claim: rooms}
  messages:purge:
    kind: mutation
    shard_by: room_id
    args: {room_id: text}
    sql:
      - "DELETE FROM messages"
  inbox:read:
    kind: query
    shard_by: user_id
    args: {user_id: text}
    sql:
      - "SELECT id, body FROM inbox ORDER BY id"
    auth: {roles: [client], shard_key_claim: sub}
`

const (
	testIssuer   = "https://idp.test"
	testAudience = "lunora-test"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// memKeys is the global tier's key table in memory: a KeyStore for the
// authenticator and the KeyAdmin half of authBackend.
type memKeys struct {
	mu      sync.Mutex
	keys    map[string]auth.KeyRecord
	lookups int
}

func (m *memKeys) LookupKey(ctx context.Context, id string) (*auth.KeyRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	rec, ok := m.keys[id]
	if !ok {
		return nil, nil
	}
	return &rec, nil
}

func (m *memKeys) CreateKey(ctx context.Context, name string, role auth.Role) (string, auth.KeyRecord, error) {
	token, rec, err := auth.NewKey(name, role, time.Now())
	if err != nil {
		return "", auth.KeyRecord{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[rec.ID] = rec
	rec.Hash = nil
	return token, rec, nil
}

func (m *memKeys) RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.keys[id]
	if !ok {
		return auth.KeyRecord{}, api.Errorf(codes.NotFound, "no API key with ID %q", id)
	}
	if rec.Revoked.IsZero() {
		rec.Revoked = time.Now()
		m.keys[id] = rec
	}
	rec.Hash = nil
	return rec, nil
}

func (m *memKeys) ListKeys(ctx context.Context, limit int) ([]auth.KeyRecord, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []auth.KeyRecord
	for _, k := range m.keys {
		k.Hash = nil
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, false, nil
}

// authBackend is fakeBackend with API keys, recording the caller each
// request reached the backend as.
type authBackend struct {
	*fakeBackend
	*memKeys
	cmu     sync.Mutex
	callers []*auth.Identity
}

func (b *authBackend) saw(ctx context.Context) {
	b.cmu.Lock()
	defer b.cmu.Unlock()
	b.callers = append(b.callers, auth.FromContext(ctx))
}

func (b *authBackend) lastCaller() *auth.Identity {
	b.cmu.Lock()
	defer b.cmu.Unlock()
	if len(b.callers) == 0 {
		return nil
	}
	return b.callers[len(b.callers)-1]
}

func (b *authBackend) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	b.saw(ctx)
	return b.fakeBackend.Call(ctx, shardID, function, args, read)
}

func (b *authBackend) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	b.saw(ctx)
	return b.fakeBackend.Exec(ctx, shardID, sql, params, read)
}

func (b *authBackend) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	b.saw(ctx)
	st, err := b.fakeBackend.Subscribe(ctx, shardID, function, args, sinceSeq)
	if err != nil {
		return nil, err
	}
	return &openCtxStream{Stream: st, ctx: ctx}, nil
}

// openCtxStream waits, like a node's stream (rpc.NodeClient), only on the
// context the stream was opened with, not on the one Next is given.
type openCtxStream struct {
	api.Stream
	ctx context.Context
}

func (s *openCtxStream) Next(ctx context.Context) (*api.Update, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Stream.Next(s.ctx)
}

func (b *authBackend) ListShards(ctx context.Context, group, after string, limit int) ([]string, string, error) {
	return []string{"room_id=r1", "room_id=r2"}, "", nil
}

// fixedAuth answers fixed identities for fixed tokens and passes every
// other credential to the real authenticator.
type fixedAuth struct {
	fixed map[string]*auth.Identity
	next  *auth.Authenticator
}

func (f *fixedAuth) Authenticate(ctx context.Context, cred string) (*auth.Identity, error) {
	if id, ok := f.fixed[cred]; ok {
		return id, nil
	}
	return f.next.Authenticate(ctx, cred)
}

type authEnv struct {
	reg     *prometheus.Registry
	gw      *gateway.Gateway
	backend *authBackend
	url     string
	admin   string // an admin API key
	fixed   map[string]*auth.Identity
}

func newAuthEnv(t *testing.T, keyTTL time.Duration) *authEnv {
	t.Helper()
	app, err := schema.Parse("lunora.yaml", []byte(authSchema))
	if err != nil {
		t.Fatal(err)
	}
	keys := &memKeys{keys: map[string]auth.KeyRecord{}}
	be := &authBackend{fakeBackend: &fakeBackend{}, memKeys: keys}
	admin, _, err := keys.CreateKey(context.Background(), "bootstrap", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	real, err := auth.New(auth.Config{Keys: keys, KeyCacheTTL: keyTTL,
		JWT: &auth.JWTConfig{Issuer: testIssuer, Audience: []string{testAudience}, HS256Secret: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { real.Close() })
	fixed := map[string]*auth.Identity{}
	cfg := gateway.DefaultConfig()
	cfg.App, cfg.Backend, cfg.Auth = app, be, &fixedAuth{fixed: fixed, next: real}
	cfg.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &authEnv{reg: reg, gw: gw, backend: be, url: srv.URL, admin: admin, fixed: fixed}
}

// clientToken signs an HS256 JWT for a client with the claims given.
func clientToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: testSecret}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	std := jwt.Claims{Issuer: testIssuer, Audience: jwt.Audience{testAudience}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour)), IssuedAt: jwt.NewNumericDate(time.Now())}
	tok, err := jwt.Signed(sig).Claims(std).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type authAnswer struct {
	status int
	header http.Header
	code   string
	body   map[string]any
	raw    string
}

func (e *authEnv) do(t *testing.T, token, method, path, body string) authAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := authAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&a.body)
	if e, ok := a.body["error"].(map[string]any); ok {
		a.code, _ = e["code"].(string)
	}
	return a
}

// grpcConn serves the gateway's public gRPC API on loopback.
func (e *authEnv) grpcClient(t *testing.T) lunorav1.LunoraClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(rpc.ServerOptions()...)
	rpc.RegisterPublicServer(srv, rpc.NewPublicServer(e.gw, nil))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return lunorav1.NewLunoraClient(conn)
}

func bearer(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Without credentials (or with a bad one) every endpoint answers 401 with
// a Bearer challenge, WebSocket upgrades included, and every gRPC method
// UNAUTHENTICATED; nothing reaches the backend.
func TestNoCredentialIsUnauthenticated(t *testing.T) {
	e := newAuthEnv(t, time.Second)
	requests := []struct{ method, path, body string }{
		{"POST", "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`},
		{"POST", "/v1/sql", `{"shard_id":"room_id=r1","sql":"SELECT 1"}`},
		{"POST", "/v1/fanout", `{"function":"messages:list","all_shards":true}`},
		{"GET", "/v1/status", ``},
		{"GET", "/v1/subscribe", ``},
		{"GET", "/v1/admin/keys", ``},
		{"POST", "/v1/admin/keys", `{"name":"x","role":"admin"}`},
		{"DELETE", "/v1/admin/keys/0123456789abcdef", ``},
		{"GET", "/v1/nope", ``},
	}
	for _, token := range []string{"", "lk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "not-a-jwt", clientToken(t, map[string]any{"sub": "ada"})[:40] + "x"} {
		for _, r := range requests {
			a := e.do(t, token, r.method, r.path, r.body)
			if a.status != http.StatusUnauthorized || a.code != "UNAUTHENTICATED" {
				t.Fatalf("%s %s with credential %.12q: %d %s", r.method, r.path, token, a.status, a.raw)
			}
			ch := a.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, "Bearer") || (token != "") != strings.Contains(ch, "invalid_token") {
				t.Fatalf("%s %s with credential %.12q: WWW-Authenticate %q", r.method, r.path, token, ch)
			}
		}
	}
	// A WebSocket client sees the refusal of its upgrade.
	ctx := testCtx(t)
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.url, "http")+"/v1/subscribe", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("WebSocket without a credential: %v, %+v", err, resp)
	}

	c := e.grpcClient(t)
	for _, token := range []string{"", "garbage"} {
		gctx := bearer(ctx, token)
		calls := map[string]func() error{
			"Call": func() error {
				_, err := c.Call(gctx, &lunorav1.CallRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r1")}})
				return err
			},
			"Sql": func() error {
				_, err := c.Sql(gctx, &lunorav1.SqlRequest{ShardId: "room_id=r1", Sql: "SELECT 1"})
				return err
			},
			"Status": func() error { _, err := c.Status(gctx, &lunorav1.StatusRequest{}); return err },
			"FanOut": func() error {
				_, err := c.FanOut(gctx, &lunorav1.FanOutRequest{Function: "messages:list", AllShards: true})
				return err
			},
			"Subscribe": func() error {
				st, err := c.Subscribe(gctx, &lunorav1.SubscribeRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r1")}})
				if err != nil {
					return err
				}
				_, err = st.Recv()
				return err
			},
		}
		for name, call := range calls {
			if err := call(); status.Code(err) != codes.Unauthenticated {
				t.Fatalf("gRPC %s with credential %q: %v", name, token, err)
			}
		}
	}
	if n := e.backend.count(); n != 0 {
		t.Fatalf("%d unauthenticated requests reached the backend", n)
	}
	// Refusals are counted: HTTP under the "auth" label (before routing),
	// gRPC under the function asked for (Call and FanOut of messages:list,
	// with each of the two bad credentials).
	counts := requestCounts(t, &env{reg: e.reg})
	if counts["http auth UNAUTHENTICATED"] != float64(4*len(requests)+1) || counts["grpc messages:list UNAUTHENTICATED"] != 4 {
		t.Fatalf("request counts: %v", counts)
	}
}

// A client may call only the functions granted to clients, on the shard
// keys its claims allow; admin SQL, other shards and ungranted functions
// are PERMISSION_DENIED over HTTP, gRPC and WebSocket alike.
func TestClientScopes(t *testing.T) {
	e := newAuthEnv(t, time.Second)
	ada := clientToken(t, map[string]any{"sub": "ada", "rooms": []any{"r1", "r3"}})
	call := func(fn, args string) authAnswer {
		return e.do(t, ada, "POST", "/v1/call", `{"function":"`+fn+`","args":`+args+`}`)
	}
	if a := call("messages:list", `{"room_id":"r1"}`); a.status != 200 {
		t.Fatalf("list in a granted room: %d %s", a.status, a.raw)
	}
	if id := e.backend.lastCaller(); id == nil || id.Subject != "ada" || id.Role != auth.RoleClient || id.Method != auth.MethodJWT {
		t.Fatalf("the backend ran the call as %+v", id)
	}
	if a := call("messages:send", `{"room_id":"r3","body":"hi"}`); a.status != 200 {
		t.Fatalf("send in a granted room: %d %s", a.status, a.raw)
	}
	if a := e.do(t, ada, "GET", "/v1/status", ""); a.status != 200 {
		t.Fatalf("status with a client token: %d %s", a.status, a.raw)
	}
	before := e.backend.count()
	denied := []struct{ what, method, path, body string }{
		{"another room", "POST", "/v1/call", `{"function":"messages:list","args":{"room_id":"r2"}}`},
		{"another room by shard_key", "POST", "/v1/call", `{"function":"messages:list","args":{},"shard_key":"r2"}`},
		{"another user's inbox", "POST", "/v1/call", `{"function":"inbox:read","args":{"user_id":"bob"}}`},
		{"an ungranted function", "POST", "/v1/call", `{"function":"messages:purge","args":{"room_id":"r1"}}`},
		{"admin SQL", "POST", "/v1/sql", `{"shard_id":"room_id=r1","sql":"DELETE FROM messages"}`},
		{"a fan-out reaching another room", "POST", "/v1/fanout", `{"function":"messages:list","shard_keys":["r1","r2"]}`},
		{"a fan-out over all rooms", "POST", "/v1/fanout", `{"function":"messages:list","all_shards":true}`},
		{"key management", "GET", "/v1/admin/keys", ``},
		{"key creation", "POST", "/v1/admin/keys", `{"name":"mine","role":"admin"}`},
	}
	for _, d := range denied {
		if a := e.do(t, ada, d.method, d.path, d.body); a.status != http.StatusForbidden || a.code != "PERMISSION_DENIED" {
			t.Fatalf("%s: %d %s", d.what, a.status, a.raw)
		}
	}
	if n := e.backend.count(); n != before {
		t.Fatalf("%d refused requests reached the backend", n-before)
	}
	if a := call("inbox:read", `{"user_id":"ada"}`); a.status != 200 {
		t.Fatalf("own inbox: %d %s", a.status, a.raw)
	}
	if a := e.do(t, ada, "POST", "/v1/fanout", `{"function":"messages:list","shard_keys":["r1","r3"]}`); a.status != 200 {
		t.Fatalf("fan-out over granted rooms: %d %s", a.status, a.raw)
	}

	// gRPC: the same decisions.
	c := e.grpcClient(t)
	ctx := bearer(testCtx(t), ada)
	if _, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r1")}}); err != nil {
		t.Fatalf("gRPC list in a granted room: %v", err)
	}
	if _, err := c.Call(ctx, &lunorav1.CallRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r2")}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC list in another room: %v", err)
	}
	if _, err := c.Sql(ctx, &lunorav1.SqlRequest{ShardId: "room_id=r1", Sql: "SELECT 1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC admin SQL: %v", err)
	}
	if _, err := c.FanOut(ctx, &lunorav1.FanOutRequest{Function: "messages:list", ShardKeys: []string{"r1", "r2"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC fan-out reaching another room: %v", err)
	}
	st, err := c.Subscribe(ctx, &lunorav1.SubscribeRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r2")}})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC subscribe to another room: %v", err)
	}

	// WebSocket, the browser way: the token in the query string.
	ws := e.dialWS(t, url.Values{gateway.AccessTokenParam: {ada}}, nil)
	wctx := testCtx(t)
	if err := wsjson.Write(wctx, ws, map[string]any{"type": "subscribe", "id": "s2", "function": "messages:list", "args": map[string]any{"room_id": "r2"}}); err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := wsjson.Read(wctx, ws, &f); err != nil || f["type"] != "error" || f["code"] != "PERMISSION_DENIED" || f["id"] != "s2" {
		t.Fatalf("WebSocket subscribe to another room: %v %v", f, err)
	}
	if err := wsjson.Write(wctx, ws, map[string]any{"type": "subscribe", "id": "s1", "function": "messages:list", "args": map[string]any{"room_id": "r1"}}); err != nil {
		t.Fatal(err)
	}
	if err := wsjson.Read(wctx, ws, &f); err != nil || f["type"] != "data" || f["id"] != "s1" {
		t.Fatalf("WebSocket subscribe to a granted room: %v %v", f, err)
	}

	// A service key runs admin SQL and any function; a client key nothing
	// ungranted.
	svc := e.createKey(t, "svc", "service")
	if a := e.do(t, svc, "POST", "/v1/sql", `{"shard_id":"room_id=r1","sql":"SELECT 1"}`); a.status != 200 {
		t.Fatalf("admin SQL with a service key: %d %s", a.status, a.raw)
	}
	if a := e.do(t, svc, "POST", "/v1/call", `{"function":"messages:purge","args":{"room_id":"r2"}}`); a.status != 200 {
		t.Fatalf("any function with a service key: %d %s", a.status, a.raw)
	}
	if a := e.do(t, svc, "GET", "/v1/admin/keys", ""); a.status != http.StatusForbidden {
		t.Fatalf("key management with a service key: %d %s", a.status, a.raw)
	}
}

func (e *authEnv) dialWS(t *testing.T, q url.Values, h http.Header) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(e.url, "http") + "/v1/subscribe"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	c, resp, err := websocket.Dial(testCtx(t), u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial %s: %v (%+v)", u, err, resp)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func (e *authEnv) createKey(t *testing.T, name, role string) string {
	t.Helper()
	a := e.do(t, e.admin, "POST", "/v1/admin/keys", `{"name":"`+name+`","role":"`+role+`"}`)
	if a.status != http.StatusCreated {
		t.Fatalf("create key %s: %d %s", name, a.status, a.raw)
	}
	if a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("the answer carrying a token may be cached: Cache-Control %q", a.header.Get("Cache-Control"))
	}
	token, _ := a.body["token"].(string)
	if !strings.HasPrefix(token, "lk_") || a.body["role"] != role || a.body["name"] != name {
		t.Fatalf("created key: %s", a.raw)
	}
	return token
}

// The admin key API creates, lists and revokes keys; a revoked key stops
// working within the key cache's TTL, measured here.
func TestAdminKeysAndRevocationBound(t *testing.T) {
	const ttl = 500 * time.Millisecond
	e := newAuthEnv(t, ttl)
	token := e.createKey(t, "app", "service")
	if a := e.do(t, token, "POST", "/v1/call", `{"function":"messages:purge","args":{"room_id":"r1"}}`); a.status != 200 {
		t.Fatalf("call with the new key: %d %s", a.status, a.raw)
	}
	id := strings.Split(token, "_")[1]
	a := e.do(t, e.admin, "GET", "/v1/admin/keys", "")
	if a.status != 200 || !strings.Contains(a.raw, `"id":"`+id+`"`) || strings.Contains(a.raw, "token") || strings.Contains(a.raw, "hash") {
		t.Fatalf("list keys: %d %s", a.status, a.raw)
	}
	for _, bad := range []string{`{"name":"x","role":"root"}`, `{"name":"","role":"client"}`, `{"name":"x","role":"client","extra":1}`} {
		if a := e.do(t, e.admin, "POST", "/v1/admin/keys", bad); a.status != http.StatusBadRequest {
			t.Fatalf("create key %s: %d %s", bad, a.status, a.raw)
		}
	}
	if a := e.do(t, e.admin, "DELETE", "/v1/admin/keys/ffffffffffffffff", ""); a.status != http.StatusNotFound {
		t.Fatalf("revoke an unknown key: %d %s", a.status, a.raw)
	}
	if a := e.do(t, e.admin, "PUT", "/v1/admin/keys", ""); a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "GET, POST" {
		t.Fatalf("PUT /v1/admin/keys: %d %s", a.status, a.raw)
	}
	if a := e.do(t, e.admin, "GET", "/v1/admin/keys/"+id, ""); a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "DELETE" {
		t.Fatalf("GET /v1/admin/keys/{id}: %d %s", a.status, a.raw)
	}
	for _, p := range []string{"/v1/admin/keys/", "/v1/admin/keys/a/b", "/v1/admin/keysx"} {
		if a := e.do(t, e.admin, "DELETE", p, ""); a.status != http.StatusNotFound {
			t.Fatalf("DELETE %s: %d %s", p, a.status, a.raw)
		}
	}

	revoked := time.Now()
	if a := e.do(t, e.admin, "DELETE", "/v1/admin/keys/"+id, ""); a.status != 200 || a.body["revoked"] == nil {
		t.Fatalf("revoke: %d %s", a.status, a.raw)
	}
	var refusedAfter time.Duration
	for {
		a := e.do(t, token, "POST", "/v1/call", `{"function":"messages:purge","args":{"room_id":"r1"}}`)
		if a.status == http.StatusUnauthorized {
			refusedAfter = time.Since(revoked)
			break
		}
		if a.status != 200 {
			t.Fatalf("call with the key being revoked: %d %s", a.status, a.raw)
		}
		if time.Since(revoked) > 10*ttl {
			t.Fatalf("the revoked key still worked %v after its revocation (cache TTL %v)", time.Since(revoked), ttl)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("revoked key refused %v after the revocation (key cache TTL %v)", refusedAfter, ttl)
	if refusedAfter > ttl+250*time.Millisecond {
		t.Fatalf("the revoked key was refused only after %v, over the bound of TTL %v", refusedAfter, ttl)
	}
}

// A live query ends with UNAUTHENTICATED when its caller's credential
// expires, over gRPC and over WebSocket (which then closes with 1008).
func TestSubscriptionEndsAtExpiry(t *testing.T) {
	e := newAuthEnv(t, time.Second)
	expires := time.Now().Add(1500 * time.Millisecond)
	e.fixed["short"] = &auth.Identity{Method: auth.MethodJWT, Role: auth.RoleAdmin, Subject: "ops", Expires: expires}
	e.fixed["stale"] = &auth.Identity{Method: auth.MethodJWT, Role: auth.RoleAdmin, Subject: "ops", Expires: time.Now().Add(-time.Second)}
	c := e.grpcClient(t)
	// An identity already past its Expires cannot start a live query.
	stale, err := c.Subscribe(bearer(testCtx(t), "stale"), &lunorav1.SubscribeRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r1")}})
	if err == nil {
		_, err = stale.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a subscription by an expired identity: %v", err)
	}

	st, err := c.Subscribe(bearer(testCtx(t), "short"), &lunorav1.SubscribeRequest{Function: "messages:list", Args: map[string]*lunorav1.Value{"room_id": text("r1")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("first event: %v", err)
	}
	_, err = st.Recv()
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "expired") {
		t.Fatalf("gRPC subscription past the credential's expiry: %v", err)
	}
	if time.Now().Before(expires) {
		t.Fatalf("the subscription ended before the credential expired")
	}

	expires = time.Now().Add(1500 * time.Millisecond)
	e.fixed["short"].Expires = expires
	ws := e.dialWS(t, nil, http.Header{"Authorization": {"Bearer short"}})
	ctx := testCtx(t)
	if err := wsjson.Write(ctx, ws, map[string]any{"type": "subscribe", "id": "s1", "function": "messages:list", "args": map[string]any{"room_id": "r1"}}); err != nil {
		t.Fatal(err)
	}
	sawExpiry := false
	for {
		var f map[string]any
		err := wsjson.Read(ctx, ws, &f)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("WebSocket ended with %v, want close 1008", err)
			}
			break
		}
		if f["type"] == "error" && f["code"] == "UNAUTHENTICATED" {
			sawExpiry = true
		}
	}
	if !sawExpiry || time.Now().Before(expires) {
		t.Fatalf("WebSocket closed (at %v, expiry %v) without an UNAUTHENTICATED frame (%v)", time.Now(), expires, sawExpiry)
	}
}

// AuthOff makes every caller the dev admin; a Config without Auth is
// refused.
func TestAuthOffAndConfig(t *testing.T) {
	app, err := schema.Parse("lunora.yaml", []byte(authSchema))
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.App, cfg.Backend = app, &fakeBackend{}
	if _, err := gateway.New(cfg); err == nil {
		t.Fatal("a gateway without Auth or AuthOff was built")
	}
	be := &authBackend{fakeBackend: &fakeBackend{}, memKeys: &memKeys{keys: map[string]auth.KeyRecord{}}}
	cfg.Backend, cfg.AuthOff = be, true
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Sql(context.Background(), "room_id=r1", "SELECT 1", nil, api.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if id := be.lastCaller(); id != gateway.DevIdentity {
		t.Fatalf("an anonymous dev request ran as %+v", id)
	}
}
