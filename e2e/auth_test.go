package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/lunora/lunora/lunoratest"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// authAnswer is one HTTP answer of the gateway.
type authAnswer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (a authAnswer) code() string {
	e, _ := a.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// authDo sends one request with an optional bearer credential.
func authDo(t *testing.T, addr, token, method, path, body string) authAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, "http://"+addr+path, strings.NewReader(body))
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
	return a
}

// keysCLI runs "lunora-node keys ..." and returns its stdout.
func keysCLI(t *testing.T, b *lunoratest.Binaries, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctxT(t), b.Node, append([]string{"keys"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("lunora-node keys %q: %v\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

const (
	e2eIssuer   = "https://idp.e2e.test"
	e2eAudience = "lunora-e2e"
)

var e2eSecret = []byte("e2e-shared-secret-0123456789abcdef-0123")

// userToken is an HS256 JWT for a client user allowed in rooms, valid
// for an hour.
func userToken(t *testing.T, sub string, rooms ...string) string {
	t.Helper()
	return userTokenUntil(t, time.Now().Add(time.Hour), sub, rooms...)
}

func userTokenUntil(t *testing.T, exp time.Time, sub string, rooms ...string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: e2eSecret}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	r := make([]any, len(rooms))
	for i, x := range rooms {
		r[i] = x
	}
	std := jwt.Claims{Issuer: e2eIssuer, Subject: sub, Audience: jwt.Audience{e2eAudience}, Expiry: jwt.NewNumericDate(exp)}
	tok, err := jwt.Signed(sig).Claims(std).Claims(map[string]any{"rooms": r}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAuthThroughGateway runs a real lunora-node behind a real
// lunora-gateway with authentication on: nothing is served without a
// credential; the operator makes the first admin key with the CLI, the
// admin makes a service key over the admin API; client JWTs are held to
// their rooms, and the chat example's row rule (only the author edits a
// message, lunora_auth('sub')) holds end to end; a key revoked with the
// CLI is refused within the gateway's key cache TTL (measured).
func TestAuthThroughGateway(t *testing.T) {
	t.Parallel()
	b := lunoratest.Build(t)
	schema := chatSchemaFile(t)
	secret := filepath.Join(t.TempDir(), "hs256")
	if err := os.WriteFile(secret, e2eSecret, 0o600); err != nil {
		t.Fatal(err)
	}
	const ttl = time.Second
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", schema))
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schema, node.GRPCAddr(), "-auth=on",
		"-key-cache-ttl", ttl.String(), "-jwt-issuer", e2eIssuer, "-jwt-audience", e2eAudience, "-jwt-hs256-secret-file", secret))
	addr := gw.HTTPAddr()

	// No credential: 401 on every endpoint, WebSocket and gRPC included.
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/status", ""},
		{"POST", "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`},
		{"POST", "/v1/sql", `{"shard_id":"room_id=r1","sql":"SELECT 1"}`},
		{"POST", "/v1/fanout", `{"function":"messages:list","all_shards":true}`},
		{"GET", "/v1/admin/keys", ""},
	} {
		if a := authDo(t, addr, "", r.method, r.path, r.body); a.status != 401 || a.code() != "UNAUTHENTICATED" || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("%s %s without a credential: %d %s", r.method, r.path, a.status, a.raw)
		}
	}
	if _, resp, err := websocket.Dial(ctxT(t), "ws://"+addr+"/v1/subscribe", nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("WebSocket without a credential: %v %+v", err, resp)
	}
	g := lunoratest.DialGRPC(t, gw.GRPCAddr())
	if _, err := g.Call(ctxT(t), &lunorav1.CallRequest{Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": "r1"})}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC without a credential: %v", err)
	}
	// The ops endpoints stay open.
	if a := authDo(t, addr, "", "GET", "/healthz", ""); a.status != 200 {
		t.Fatalf("/healthz: %d %s", a.status, a.raw)
	}

	// The first admin key comes from the CLI, through the node API.
	admin := strings.TrimSpace(keysCLI(t, b, "create", "-node", node.GRPCAddr(), "-name", "ops", "-role", "admin"))
	if !strings.HasPrefix(admin, "lk_") {
		t.Fatalf("keys create printed %q", admin)
	}
	a := authDo(t, addr, admin, "POST", "/v1/admin/keys", `{"name":"backend","role":"service"}`)
	if a.status != 201 {
		t.Fatalf("create a service key: %d %s", a.status, a.raw)
	}
	service, _ := a.body["token"].(string)
	serviceID, _ := a.body["id"].(string)
	if a := authDo(t, addr, service, "POST", "/v1/sql", `{"shard_id":"room_id=r1","sql":"SELECT count(*) FROM messages"}`); a.status != 200 {
		t.Fatalf("admin SQL with the service key: %d %s", a.status, a.raw)
	}
	if list := keysCLI(t, b, "list", "-node", node.GRPCAddr()); !strings.Contains(list, serviceID) || !strings.Contains(list, "backend") {
		t.Fatalf("keys list:\n%s", list)
	}

	// Client JWTs: their rooms only, the row rule enforced by the node.
	ada, bob := userToken(t, "ada", "r1"), userToken(t, "bob", "r1")
	a = authDo(t, addr, ada, "POST", "/v1/call", `{"function":"messages:post","args":{"room_id":"r1","body":"hello"}}`)
	if a.status != 200 {
		t.Fatalf("ada posts in r1: %d %s", a.status, a.raw)
	}
	rows, _ := a.body["rows"].([]any)
	if len(rows) != 1 {
		t.Fatalf("messages:post answered %s", a.raw)
	}
	id := rows[0].([]any)[0].(json.Number).String()
	if a := authDo(t, addr, bob, "POST", "/v1/call", `{"function":"messages:edit","args":{"room_id":"r1","id":`+id+`,"body":"mine now"}}`); a.status != 400 || a.code() != "FAILED_PRECONDITION" || !strings.Contains(a.raw, "only the author") {
		t.Fatalf("bob edits ada's message: %d %s", a.status, a.raw)
	}
	if a := authDo(t, addr, ada, "POST", "/v1/call", `{"function":"messages:edit","args":{"room_id":"r1","id":`+id+`,"body":"hello, edited"}}`); a.status != 200 {
		t.Fatalf("ada edits her message: %d %s", a.status, a.raw)
	}
	a = authDo(t, addr, ada, "POST", "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`)
	if a.status != 200 || !strings.Contains(a.raw, `"ada"`) || !strings.Contains(a.raw, "hello, edited") {
		t.Fatalf("list r1: %d %s", a.status, a.raw)
	}
	for _, d := range []struct{ what, path, body string }{
		{"another room", "/v1/call", `{"function":"messages:list","args":{"room_id":"r2"}}`},
		{"an ungranted function", "/v1/call", `{"function":"messages:send","args":{"room_id":"r1","author":"carol","body":"x"}}`},
		{"admin SQL", "/v1/sql", `{"shard_id":"room_id=r1","sql":"SELECT 1"}`},
	} {
		if a := authDo(t, addr, ada, "POST", d.path, d.body); a.status != 403 || a.code() != "PERMISSION_DENIED" {
			t.Fatalf("ada: %s: %d %s", d.what, a.status, a.raw)
		}
	}
	gctx := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+ada)
	if _, err := g.Call(gctx, &lunorav1.CallRequest{Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": "r2"})}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC: ada lists r2: %v", err)
	}
	if _, err := g.Call(gctx, &lunorav1.CallRequest{Function: "messages:list", Args: lunoratest.Args(map[string]any{"room_id": "r1"})}); err != nil {
		t.Fatalf("gRPC: ada lists r1: %v", err)
	}

	// A browser's WebSocket: the token in the query string, live rows of
	// its room only, and the socket closed when the token expires.
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second).Add(time.Second)
	ws, _, err := websocket.Dial(ctxT(t), "ws://"+addr+"/v1/subscribe?access_token="+userTokenUntil(t, exp, "ada", "r1"), nil)
	if err != nil {
		t.Fatalf("WebSocket with ?access_token=: %v", err)
	}
	defer ws.CloseNow()
	wsSend := func(v any) {
		if err := wsjson.Write(ctxT(t), ws, v); err != nil {
			t.Fatal(err)
		}
	}
	wsSend(map[string]any{"type": "subscribe", "id": "r2", "function": "messages:list", "args": map[string]any{"room_id": "r2"}})
	wsSend(map[string]any{"type": "subscribe", "id": "r1", "function": "messages:list", "args": map[string]any{"room_id": "r1"}})
	var denied, data, expired bool
	for {
		var f map[string]any
		err := wsjson.Read(ctxT(t), ws, &f)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("the WebSocket ended with %v, want close 1008 at the token's expiry", err)
			}
			break
		}
		switch {
		case f["type"] == "error" && f["id"] == "r2" && f["code"] == "PERMISSION_DENIED":
			denied = true
		case f["type"] == "data" && f["id"] == "r1" && strings.Contains(fmt.Sprint(f["rows"]), "hello, edited"):
			data = true
		case f["type"] == "error" && f["code"] == "UNAUTHENTICATED":
			expired = true
		}
	}
	if !denied || !data || !expired || time.Now().Before(exp) {
		t.Fatalf("WebSocket: denied r2 %v, data of r1 %v, expiry frame %v, closed at %v (token exp %v)", denied, data, expired, time.Now(), exp)
	}

	// Revoke the service key with the CLI; measure until the gateway
	// refuses it.
	revokedAt := time.Now()
	if out := keysCLI(t, b, "revoke", "-node", node.GRPCAddr(), serviceID); !strings.Contains(out, serviceID) {
		t.Fatalf("keys revoke printed %q", out)
	}
	var took time.Duration
	for {
		a := authDo(t, addr, service, "GET", "/v1/status", "")
		if a.status == 401 {
			took = time.Since(revokedAt)
			break
		}
		if a.status != 200 {
			t.Fatalf("status with the key being revoked: %d %s", a.status, a.raw)
		}
		if time.Since(revokedAt) > 10*ttl {
			t.Fatalf("the revoked key still works %v after its revocation (key cache TTL %v)", time.Since(revokedAt), ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revoked API key refused by the gateway %v after `lunora-node keys revoke` started (key cache TTL %v)", took, ttl)
	if took > ttl+time.Second {
		t.Fatalf("revocation took %v, over the TTL %v plus 1s for the CLI process and replication", took, ttl)
	}
	// Another key is unaffected.
	if a := authDo(t, addr, admin, "GET", "/v1/admin/keys", ""); a.status != 200 || !strings.Contains(a.raw, `"revoked"`) {
		t.Fatalf("list keys after the revocation: %d %s", a.status, a.raw)
	}
}
