package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
)

// errorRow is one row of README.md's error table.
type errorRow struct {
	code       string   // INVALID_ARGUMENT
	status     int      // 400
	retryAfter bool     // "429 + `Retry-After`"
	items      []string // the causes the "when" cell lists
	line       int
}

func (r errorRow) key() string { return fmt.Sprintf("%s %d", r.code, r.status) }

// readErrorTable parses the `| code | HTTP | when |` table of README.md.
// A "when" cell is a list of causes separated by ", " (not inside
// parentheses); text up to a ": " is a heading, not a cause.
func readErrorTable(t *testing.T) []errorRow {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	httpCell := regexp.MustCompile("^([0-9]{3})( \\+ `Retry-After`)?$")
	var rows []errorRow
	in := false
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if !in {
			in = line == "| code | HTTP | when |"
			continue
		}
		if strings.HasPrefix(line, "|---") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("README.md:%d: %d cells in an error-table row, want 3: %s", i+1, len(cells), line)
		}
		code, httpText, when := strings.TrimSpace(cells[0]), strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2])
		m := httpCell.FindStringSubmatch(httpText)
		if m == nil {
			t.Fatalf("README.md:%d: HTTP cell %q is not a status, optionally + `Retry-After`", i+1, httpText)
		}
		status, _ := strconv.Atoi(m[1])
		if _, list, ok := strings.Cut(when, ": "); ok {
			when = list
		}
		rows = append(rows, errorRow{code: code, status: status, retryAfter: m[2] != "", items: splitCauses(when), line: i + 1})
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no `| code | HTTP | when |` table")
	}
	return rows
}

// splitCauses splits s at ", " outside parentheses.
func splitCauses(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 && strings.HasPrefix(s[i:], ", ") { // not 10,000
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

// answer is an HTTP answer of the API.
type answer struct {
	status int
	header http.Header
	code   string // the error body's code; "" without one
	raw    string
}

func (a answer) String() string { return fmt.Sprintf("HTTP %d %s", a.status, strings.TrimSpace(a.raw)) }

func ask(t *testing.T, method, url, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: no answer: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return decodeAnswer(resp, raw)
}

func decodeAnswer(resp *http.Response, raw []byte) answer {
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil {
		a.code = e.Error.Code
	}
	return a
}

// probe makes one real request that the README says answers the code and
// status of key, for the cause named by covers.
type probe struct {
	key, covers string
	run         func(t *testing.T) answer
}

// readmeSchema is the chat example plus two functions that run past any
// time limit and build a result of any size.
var readmeSchema = string(chat.Schema) + `
  test:spin:
    kind: query
    shard_by: room_id
    args:
      room_id: text
    sql:
      - WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c

  test:big:
    kind: query
    shard_by: room_id
    args:
      room_id: text
      n: int
    sql:
      - SELECT printf('%.*c', :n, 'a') AS blob
  test:slowbig:
    kind: query
    shard_by: room_id
    args:
      room_id: text
      n: int
    sql:
      - SELECT printf('%.*c', :n, 'a') AS blob UNION ALL SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT x FROM c)
`

// readmeNode is an in-process node with the gateway (dev wiring) serving
// a data directory, stopped when the test ends unless stopped before.
type readmeNode struct {
	*nodeproc.Process
	app  *schema.App
	url  string
	once sync.Once
}

func startReadmeNode(t *testing.T, dir, schemaText string, sc shardhost.Config, srv server.Config) *readmeNode {
	t.Helper()
	app, err := schema.Parse("lunora.yaml", []byte(schemaText))
	if err != nil {
		t.Fatalf("schema: %v", err)
	}
	sc.Dir, sc.App = dir, app
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: sc, Global: raftglobal.DefaultLocalConfig(), Server: srv,
		App: app, Dir: dir, NodeID: "dev",
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("nodeproc.Start: %v", err)
	}
	n := &readmeNode{Process: p, app: app, url: "http://" + p.HTTPAddr}
	t.Cleanup(func() { n.stop(t) })
	return n
}

func (n *readmeNode) stop(t *testing.T) {
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

func (n *readmeNode) call(t *testing.T, function string, args map[string]any) answer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"function": function, "args": args})
	return ask(t, http.MethodPost, n.url+"/v1/call", string(body))
}

func (n *readmeNode) sql(t *testing.T, shard, stmt string) answer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"shard_id": shard, "sql": stmt})
	return ask(t, http.MethodPost, n.url+"/v1/sql", string(body))
}

// send posts a message to room from a goroutine of its own; its answer
// does not matter (the test only needs it in flight).
func (n *readmeNode) send(room, author string) {
	body, _ := json.Marshal(map[string]any{"function": "messages:send", "args": map[string]any{"room_id": room, "author": author, "body": "held"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url+"/v1/call", bytes.NewReader(body))
	if err != nil {
		return
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func mustOK(t *testing.T, a answer, what string) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("%s: %v", what, a)
	}
}

// TestREADMEErrorTable walks the error table of README.md: for every cause
// of every row a real request through the HTTP API of an in-process node
// (shard host, global tier, gateway, server listeners) produces it, and the
// answer has the row's code and HTTP status, with a Retry-After header
// exactly when the row says so. A row cause with no request here fails, as
// does a request for a cause the table no longer lists.
func TestREADMEErrorTable(t *testing.T) {
	t.Parallel()
	rows := readErrorTable(t)

	// Node A: a one-mutation mailbox, three requests in flight at most, a
	// 1 s statement limit and a 1 s body timeout; the writers of the
	// shards "held" and "held2" wait at the gate until it opens.
	const bodyTimeout = time.Second
	gate := make(chan struct{})
	entered := make(chan string, 16)
	scA := shardhost.DefaultLocalConfig()
	scA.MailboxSize, scA.MaxInFlight, scA.StatementTimeout = 1, 3, time.Second
	scA.BeforeBatch = func(shardID string) {
		if shardID != "room_id=held" && shardID != "room_id=held2" {
			return
		}
		select {
		case entered <- shardID:
		default:
		}
		<-gate
	}
	a := startReadmeNode(t, t.TempDir(), readmeSchema, scA, server.Config{BodyTimeout: bodyTimeout})
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) })
	mustOK(t, a.call(t, "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "hi"}), "first message")
	mustOK(t, a.call(t, "rooms:create", map[string]any{"room_id": "r1", "title": "one"}), "room r1")

	// Node B: a result budget smaller than one big result; then shut down
	// (its shard host first), and started again as node C with the
	// settings table's value column retyped (a destructive change).
	dirB := t.TempDir()
	scB := shardhost.DefaultLocalConfig()
	scB.ResultBudget = 256 << 10
	b := startReadmeNode(t, dirB, readmeSchema, scB, server.Config{})
	mustOK(t, b.call(t, "settings:set", map[string]any{"key": "k", "value": "v"}), "a setting on node B")

	// A gateway whose node is not there: a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	deadNode, err := rpc.NewNodeClient(deadAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer deadNode.Close()
	gc := gateway.DefaultConfig()
	gc.App, gc.Backend, gc.AuthOff = a.app, deadNode, true // a loopback gateway in the test process
	lonely, err := gateway.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	reg := server.NewRegistry()
	lonelyProc := server.New(reg, nil, nil, server.Config{})
	lonelyAddr, err := lonelyProc.ServeHTTP("127.0.0.1:0", lonelyProc.Handler(reg, lonely.Handler()))
	if err != nil {
		t.Fatal(err)
	}
	defer lonelyProc.Shutdown(context.Background())

	// A gateway with authentication on in front of node A: API keys from
	// A's global tier, HS256 client tokens.
	authed := startAuthedGateway(t, a)
	// Gateways in front of node A with one client limit each at its
	// smallest; the one bounding requests in flight holds messages:count
	// calls at its backend until released.
	limitedGateway := func(tweak func(*gateway.Config), be gateway.Backend) string {
		gc := gateway.DefaultConfig()
		gc.App, gc.Backend, gc.AuthOff = a.app, be, true
		tweak(&gc)
		gw, err := gateway.New(gc)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(gw.Handler())
		t.Cleanup(srv.Close)
		return srv.URL
	}
	rateURL := limitedGateway(func(c *gateway.Config) { c.RateLimit, c.RateBurst = 0.001, 1 }, a.Node)
	bytesURL := limitedGateway(func(c *gateway.Config) { c.BodyBytesPerSecond, c.MaxBodyBytes = 1, 1000 }, a.Node)
	held := &heldBackend{Backend: a.Node, function: "messages:count", entered: make(chan struct{}, 1), release: make(chan struct{})}
	concURL := limitedGateway(func(c *gateway.Config) { c.MaxConcurrentPerClient = 1 }, held)
	wsURL := limitedGateway(func(c *gateway.Config) { c.MaxWebSocketsPerClient = 1 }, a.Node)
	manyParams := func() string {
		names, params := make([]string, 300), map[string]any{}
		for i := range names {
			names[i] = fmt.Sprintf(":p%d", i)
			params[fmt.Sprintf("p%d", i)] = i
		}
		body, _ := json.Marshal(map[string]any{"shard_id": "room_id=r1", "sql": "SELECT " + strings.Join(names, ", "), "params": params})
		return string(body)
	}()

	call := func(n *readmeNode, function string, args map[string]any) func(*testing.T) answer {
		return func(t *testing.T) answer { return n.call(t, function, args) }
	}
	sqlOn := func(n *readmeNode, shard, stmt string) func(*testing.T) answer {
		return func(t *testing.T) answer { return n.sql(t, shard, stmt) }
	}
	post := func(n *readmeNode, path, body string) func(*testing.T) answer {
		return func(t *testing.T) answer { return ask(t, http.MethodPost, n.url+path, body) }
	}
	attached := filepath.Join(t.TempDir(), "escape.db")

	// The probes run in this order; the held-writer ones and node B's
	// shutdown depend on it.
	probes := []probe{
		{"INVALID_ARGUMENT 400", "missing/mistyped/unknown argument", call(a, "messages:send", map[string]any{"room_id": "r1", "author": "ada"})},
		{"INVALID_ARGUMENT 400", "missing/mistyped/unknown argument", call(a, "messages:list", map[string]any{"room_id": "r1", "limit": "ten"})},
		{"INVALID_ARGUMENT 400", "missing/mistyped/unknown argument", call(a, "messages:count", map[string]any{"room_id": "r1", "extra": 1})},
		{"INVALID_ARGUMENT 400", "malformed JSON", post(a, "/v1/call", `{"function":"messages:list","args":{"room_id":`)},
		{"INVALID_ARGUMENT 400", "bad SQL", sqlOn(a, "room_id=r1", "SELECT FROM messages WHERE")},
		{"INVALID_ARGUMENT 400", "more than one statement in a text", sqlOn(a, "room_id=r1", "SELECT 1; SELECT 2")},
		{"INVALID_ARGUMENT 400", "a row whose `shard_by` value belongs to another shard", sqlOn(a, "room_id=r1", "INSERT INTO messages(room_id, author, body, created_at) VALUES ('other', 'a', 'b', 0)")},
		{"INVALID_ARGUMENT 400", "a request body not received within `-http-body-timeout`", func(t *testing.T) answer {
			return stalledBody(t, a.HTTPAddr, 10*bodyTimeout)
		}},

		{"INVALID_ARGUMENT 400", "a statement over `-max-sql-bytes`", sqlOn(a, "room_id=r1", "SELECT '"+strings.Repeat("x", 65<<10)+"'")},
		{"INVALID_ARGUMENT 400", "more parameters than `-max-params`", post(a, "/v1/sql", manyParams)},
		{"INVALID_ARGUMENT 400", "a string or blob over `-max-value-bytes`", sqlOn(a, "room_id=r1", "SELECT length(randomblob(100000000))")},
		{"INVALID_ARGUMENT 400", "a string or blob over `-max-value-bytes`", sqlOn(a, "room_id=r1", "SELECT length(printf('%.*c', 100000000, 'x'))")},

		{"FAILED_PRECONDITION 400", "`lunora_assert` failed", call(a, "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "  "})},
		{"FAILED_PRECONDITION 400", "a constraint failed", sqlOn(a, "room_id=r1", "INSERT INTO messages(room_id, author, body, created_at) VALUES ('r1', 'a', NULL, 0)")},
		{"FAILED_PRECONDITION 400", "a constraint failed", call(a, "rooms:create", map[string]any{"room_id": "r1", "title": "again"})},
		{"FAILED_PRECONDITION 400", "a bookmark this cluster never issued", post(a, "/v1/call", `{"function":"users:get","args":{"user_id":"ada"},"consistency":"bookmark","bookmark":999999999}`)},

		{"OUT_OF_RANGE 400", "result over 10,000 rows", sqlOn(a, "room_id=r1", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10001) SELECT x FROM c")},
		{"OUT_OF_RANGE 400", "result over 8 MiB as encoded", call(a, "test:big", map[string]any{"room_id": "r1", "n": 9 << 20})},
		{"OUT_OF_RANGE 400", "result over 8 MiB as encoded", sqlOn(a, "room_id=r1", "SELECT printf('%.*c', 2000000, char(1))")}, // 2 MB of control characters: 12 MB as JSON

		{"PERMISSION_DENIED 403", "`ATTACH`/`DETACH`", sqlOn(a, "room_id=r1", "ATTACH DATABASE '"+attached+"' AS escape")},
		{"PERMISSION_DENIED 403", "`ATTACH`/`DETACH`", sqlOn(a, "room_id=r1", "DETACH DATABASE main")},
		{"PERMISSION_DENIED 403", "a pragma other than introspection", sqlOn(a, "room_id=r1", "PRAGMA writable_schema=ON")},
		{"PERMISSION_DENIED 403", "a pragma other than introspection", sqlOn(a, "room_id=r1", "PRAGMA journal_mode=DELETE")},
		{"PERMISSION_DENIED 403", "`load_extension`", sqlOn(a, "room_id=r1", "SELECT load_extension('x')")},
		{"PERMISSION_DENIED 403", "DDL", sqlOn(a, "room_id=r1", "CREATE TABLE escape(x)")},
		{"PERMISSION_DENIED 403", "DDL", sqlOn(a, "room_id=r1", "DROP TABLE messages")},
		{"PERMISSION_DENIED 403", "transaction control", sqlOn(a, "room_id=r1", "BEGIN IMMEDIATE")},
		{"PERMISSION_DENIED 403", "transaction control", sqlOn(a, "room_id=r1", "COMMIT")},
		{"PERMISSION_DENIED 403", "transaction control", sqlOn(a, "room_id=r1", "SAVEPOINT s")},
		{"PERMISSION_DENIED 403", "a write to `sqlite_*` or `__lunora_*` tables", sqlOn(a, "room_id=r1", "UPDATE sqlite_master SET sql = sql")},
		{"PERMISSION_DENIED 403", "a write to `sqlite_*` or `__lunora_*` tables", sqlOn(a, "room_id=r1", "INSERT OR REPLACE INTO __lunora_meta(k, v) VALUES ('registered', 1)")},

		{"UNAUTHENTICATED 401", "no credential", authed.ask("", "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`)},
		{"UNAUTHENTICATED 401", "an unknown or malformed credential", authed.ask("lk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`)},
		{"UNAUTHENTICATED 401", "an unknown or malformed credential", authed.ask("not a credential", "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`)},
		{"UNAUTHENTICATED 401", "a revoked API key", func(t *testing.T) answer {
			return authed.ask(authed.revoked, "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`)(t)
		}},
		{"UNAUTHENTICATED 401", "an expired token", func(t *testing.T) answer {
			return authed.ask(readmeToken(t, time.Now().Add(-2*time.Hour), "r1"), "/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`)(t)
		}},
		{"PERMISSION_DENIED 403", "a credential whose role does not allow the request", authed.ask(authed.client, "/v1/sql", `{"shard_id":"room_id=r1","sql":"SELECT 1"}`)},
		{"PERMISSION_DENIED 403", "a client outside its `shard_key_claim`", func(t *testing.T) answer {
			return authed.ask(readmeToken(t, time.Now().Add(time.Hour), "r1"), "/v1/call", `{"function":"messages:list","args":{"room_id":"r2"}}`)(t)
		}},

		{"NOT_FOUND 404", "unknown function", call(a, "messages:nope", map[string]any{"room_id": "r1"})},
		{"NOT_FOUND 404", "unknown endpoint", post(a, "/v1/nope", `{}`)},
		{"UNIMPLEMENTED 405", "an endpoint asked with the wrong HTTP method", func(t *testing.T) answer {
			return ask(t, http.MethodGet, a.url+"/v1/call", "")
		}},

		{"RESOURCE_EXHAUSTED 429", "a client over `-rate-limit` or `-rate-limit-bytes`", func(t *testing.T) answer {
			body := `{"function":"messages:count","args":{"room_id":"r1"}}`
			mustOK(t, ask(t, http.MethodPost, rateURL+"/v1/call", body), "the one request of the burst")
			return ask(t, http.MethodPost, rateURL+"/v1/call", body)
		}},
		{"RESOURCE_EXHAUSTED 429", "a client over `-rate-limit` or `-rate-limit-bytes`", func(t *testing.T) answer {
			// A bucket of 1,000 bytes refilled by 1 a second: two 900-byte
			// bodies are admitted (the second into debt), the third is not.
			body := `{"function":"messages:count","args":{"room_id":"r1"}}`
			body += strings.Repeat(" ", 900-len(body))
			mustOK(t, ask(t, http.MethodPost, bytesURL+"/v1/call", body), "the first body")
			mustOK(t, ask(t, http.MethodPost, bytesURL+"/v1/call", body), "the second body")
			return ask(t, http.MethodPost, bytesURL+"/v1/call", body)
		}},
		{"RESOURCE_EXHAUSTED 429", "a client over `-max-concurrent-per-client`", func(t *testing.T) answer {
			body := `{"function":"messages:count","args":{"room_id":"r1"}}`
			first := make(chan answer, 1)
			go func() { first <- ask(t, http.MethodPost, concURL+"/v1/call", body) }()
			select {
			case <-held.entered:
			case <-time.After(callTimeout):
				t.Fatal("the first call never reached the backend")
			}
			got := ask(t, http.MethodPost, concURL+"/v1/call", body)
			close(held.release)
			mustOK(t, <-first, "the held call")
			return got
		}},
		{"RESOURCE_EXHAUSTED 429", "a client over `-max-websockets-per-client`", func(t *testing.T) answer {
			c, _, err := websocket.Dial(ctxT(t), "ws"+strings.TrimPrefix(wsURL, "http")+"/v1/subscribe", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, wsURL+"/v1/subscribe", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			return decodeAnswer(resp, raw)
		}},
		{"RESOURCE_EXHAUSTED 413", "request body over 1 MiB", call(a, "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": strings.Repeat("x", 1<<20)})},
		{"RESOURCE_EXHAUSTED 429", "shard mailbox full", func(t *testing.T) answer {
			// m1 waits in held's writer, m2 in its one-slot mailbox: m3
			// finds it full.
			go a.send("held", "m1")
			waitEntered(t, entered, "room_id=held")
			go a.send("held", "m2")
			waitInFlight(t, a, 2)
			return a.call(t, "messages:send", map[string]any{"room_id": "held", "author": "m3", "body": "3"})
		}},
		{"RESOURCE_EXHAUSTED 429", "node at its in-flight bound", func(t *testing.T) answer {
			// With m4 waiting in held2's writer, three requests are in
			// flight: any fourth is refused, on any shard.
			go a.send("held2", "m4")
			waitEntered(t, entered, "room_id=held2")
			waitInFlight(t, a, 3)
			got := a.call(t, "messages:list", map[string]any{"room_id": "r1"})
			openGate.Do(func() { close(gate) })
			waitInFlight(t, a, 0)
			return got
		}},
		{"RESOURCE_EXHAUSTED 429", "node's result memory budget (`-result-budget`) in use", func(t *testing.T) answer {
			// A query holds 200 kB of B's 256 KiB budget while it counts
			// on; a 100 kB result, which alone would fit, finds it in use.
			done := make(chan struct{})
			go func() {
				defer close(done)
				body := `{"function":"test:slowbig","args":{"room_id":"r2","n":200000}}`
				if resp, err := http.Post(b.url+"/v1/call", "application/json", strings.NewReader(body)); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
			deadline := time.Now().Add(callTimeout)
			for b.Host.ResultBytesInUse() < 200000 {
				if time.Now().After(deadline) {
					t.Fatalf("the slow query never held its result: %d bytes in use", b.Host.ResultBytesInUse())
				}
				time.Sleep(time.Millisecond)
			}
			got := b.call(t, "test:big", map[string]any{"room_id": "r1", "n": 100000})
			<-done
			return got
		}},
		{"OUT_OF_RANGE 400", "result larger than the node's whole result budget", call(b, "test:big", map[string]any{"room_id": "r1", "n": 1 << 20})},

		{"DEADLINE_EXCEEDED 504", "a statement past its time limit", sqlOn(a, "room_id=r1", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")},
		{"DEADLINE_EXCEEDED 504", "a function call past its time limit", call(a, "test:spin", map[string]any{"room_id": "r1"})},

		{"UNAVAILABLE 503", "node unreachable", func(t *testing.T) answer {
			return ask(t, http.MethodPost, "http://"+lonelyAddr.String()+"/v1/call", `{"function":"messages:list","args":{"room_id":"r1"}}`)
		}},
		{"UNAVAILABLE 503", "node shutting down", func(t *testing.T) answer {
			if err := b.Host.Shutdown(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			return b.call(t, "messages:list", map[string]any{"room_id": "r1"})
		}},
		{"FAILED_PRECONDITION 400", "a destructive schema change", func(t *testing.T) answer {
			b.stop(t)
			retyped := strings.Replace(readmeSchema, "      key: text\n      value: text\n", "      key: text\n      value: int\n", 1)
			if retyped == readmeSchema {
				t.Fatal("the settings table of the chat schema changed; update this probe")
			}
			c := startReadmeNode(t, dirB, retyped, shardhost.DefaultLocalConfig(), server.Config{})
			return c.call(t, "settings:get", map[string]any{"key": "k"})
		}},
	}

	byRow := map[string]errorRow{}
	for _, r := range rows {
		byRow[r.key()] = r
	}
	covered := map[string]bool{} // row key + cause
	for _, p := range probes {
		r, ok := byRow[p.key]
		if !ok || !contains(r.items, p.covers) {
			t.Errorf("a request for %s %q, which README.md's error table does not list: update the table or this test", p.key, p.covers)
			continue
		}
		got := p.run(t)
		covered[p.key+"\x00"+p.covers] = true
		switch {
		case got.status != r.status || got.code != r.code:
			t.Errorf("README.md:%d %s %q: the request answered %v", r.line, p.key, p.covers, got)
		case r.retryAfter && got.header.Get("Retry-After") == "":
			t.Errorf("README.md:%d %s %q: no Retry-After header: %v", r.line, p.key, p.covers, got)
		case !r.retryAfter && got.header.Get("Retry-After") != "":
			t.Errorf("README.md:%d %s %q: a Retry-After header (%s) the table does not promise: %v", r.line, p.key, p.covers, got.header.Get("Retry-After"), got)
		}
	}
	for _, r := range rows {
		for _, item := range r.items {
			if !covered[r.key()+"\x00"+item] {
				t.Errorf("README.md:%d %s %q: no request here produces it", r.line, r.key(), item)
			}
		}
	}
	if _, err := os.Stat(attached); !os.IsNotExist(err) {
		t.Errorf("the refused ATTACH created %s (stat: %v)", attached, err)
	}
}

// heldBackend holds calls of one function until release is closed,
// saying on entered when the first arrives.
type heldBackend struct {
	gateway.Backend
	function string
	entered  chan struct{}
	release  chan struct{}
}

func (h *heldBackend) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	if function == h.function {
		select {
		case h.entered <- struct{}{}:
		default:
		}
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.Backend.Call(ctx, shardID, function, args, read)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// stalledBody sends a /v1/call whose body stops halfway and returns the
// answer the server gives when its body timeout passes.
func stalledBody(t *testing.T, addr string, limit time.Duration) answer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `{"function":"messages:list","args":{"room_id":"r1"}}`
	fmt.Fprintf(c, "POST /v1/call HTTP/1.1\r\nHost: lunora\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)/2])
	c.SetReadDeadline(time.Now().Add(limit))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body within %s: %v", limit, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return decodeAnswer(resp, bytes.TrimSpace(raw))
}

func waitEntered(t *testing.T, entered <-chan string, shardID string) {
	t.Helper()
	timeout := time.After(callTimeout)
	for {
		select {
		case id := <-entered:
			if id == shardID {
				return
			}
		case <-timeout:
			t.Fatalf("the writer of %s never started its batch", shardID)
		}
	}
}

func waitInFlight(t *testing.T, n *readmeNode, want int64) {
	t.Helper()
	lunoratest.WaitFor(t, callTimeout, func() error {
		st, err := n.Host.Status(context.Background())
		if err != nil {
			return err
		}
		if st.InFlight != want {
			return fmt.Errorf("%d requests in flight, want %d", st.InFlight, want)
		}
		return nil
	})
}

var readmeSecret = []byte("readme-table-secret-0123456789abcdef-0123")

// authedGateway is a gateway with authentication on in front of a
// readmeNode, with a live client key and a revoked one.
type authedGateway struct {
	url     string
	client  string // a live API key of role client
	revoked string // a revoked API key
}

func startAuthedGateway(t *testing.T, n *readmeNode) *authedGateway {
	t.Helper()
	authn, err := auth.New(auth.Config{Keys: n.Node, KeyCacheTTL: time.Second,
		JWT: &auth.JWTConfig{Issuer: "https://idp.readme", Audience: []string{"lunora"}, HS256Secret: readmeSecret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { authn.Close() })
	gc := gateway.DefaultConfig()
	gc.App, gc.Backend, gc.Auth = n.app, n.Node, authn
	gw, err := gateway.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	client, _, err := n.Node.CreateKey(ctxT(t), "readme client", auth.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	revoked, rec, err := n.Node.CreateKey(ctxT(t), "readme revoked", auth.RoleService)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Node.RevokeKey(ctxT(t), rec.ID, false); err != nil {
		t.Fatal(err)
	}
	return &authedGateway{url: srv.URL, client: client, revoked: revoked}
}

// ask posts body to path with the credential token ("" for none).
func (g *authedGateway) ask(token, path, body string) func(*testing.T) answer {
	return func(t *testing.T) answer {
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, g.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		a := decodeAnswer(resp, raw)
		if a.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("POST %s: 401 without a Bearer challenge", path)
		}
		return a
	}
}

// readmeToken is a client JWT allowed in rooms, expiring at exp.
func readmeToken(t *testing.T, exp time.Time, rooms ...any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: readmeSecret}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	std := jwt.Claims{Issuer: "https://idp.readme", Subject: "ada", Audience: jwt.Audience{"lunora"}, Expiry: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(exp.Add(-time.Hour))}
	tok, err := jwt.Signed(sig).Claims(std).Claims(map[string]any{"rooms": rooms}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
