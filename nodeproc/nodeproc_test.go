package nodeproc_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

func TestWallClockGlobalFunctionRefusedAtStart(t *testing.T) {
	app, err := schema.Parse("app.yaml", []byte(`tables:
  users:
    global: true
    columns: {id: text, at: text}
    primary_key: [id]
functions:
  users:touch:
    kind: mutation
    global: true
    args: {id: text}
    sql:
      - UPDATE users SET at = datetime('now') WHERE id = :id
`))
	if err != nil {
		t.Fatal(err)
	}
	_, err = nodeproc.Start(nodeproc.Config{App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0"})
	var le *schema.LineError
	if !errors.As(err, &le) || le.Line != 7 || !strings.Contains(err.Error(), "lunora_now") || !strings.HasPrefix(err.Error(), "app.yaml:7:") {
		t.Fatalf("want app.yaml:7 refusing datetime('now'), got %v", err)
	}
}

// TestNeverCreateWhatExists is invariant I4: a shard the registry holds is
// never created empty on a node that lacks its file.
func TestNeverCreateWhatExists(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func() *nodeproc.Process {
		t.Helper()
		p, err := nodeproc.Start(nodeproc.Config{
			Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
			App: app, Dir: dir, NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	send := func(p *nodeproc.Process, room string) error {
		_, err := p.Node.Call(ctx, "room_id="+room, "messages:send", map[string]any{"room_id": room, "author": "a", "body": "b"}, api.ReadOptions{})
		return err
	}
	p := start()
	if err := send(p, "kept"); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Lose the shard's file (a wiped disk, or a shard that lives elsewhere).
	files, _ := filepath.Glob(filepath.Join(dir, "shards", "*", "*", "*"))
	if len(files) == 0 {
		t.Fatal("no shard files written")
	}
	for _, f := range files {
		os.Remove(f)
	}
	p = start()
	defer p.Shutdown(context.Background())
	err = send(p, "kept")
	if !errors.Is(err, shardhost.ErrShardElsewhere) || api.CodeOf(err) != codes.Unavailable {
		t.Fatalf("registered shard without its file: got %v, want ErrShardElsewhere (UNAVAILABLE)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "shards", "*", "*", "*")); len(left) != 0 {
		t.Fatalf("an empty shard was created over the registered one: %v", left)
	}
	// A shard the registry does not hold is created as usual.
	if err := send(p, "new"); err != nil {
		t.Fatal(err)
	}
	// Admin SQL cannot erase the registry to get around the check.
	for _, sql := range []string{"DELETE FROM __lunora_shards", "UPDATE __lunora_shards SET id = 'x'"} {
		_, err := p.Node.Exec(ctx, "__global__", sql, nil, api.ReadOptions{})
		if api.CodeOf(err) != codes.PermissionDenied {
			t.Fatalf("%s on the global tier: got %v, want PERMISSION_DENIED", sql, err)
		}
	}
	if err := send(p, "kept"); !errors.Is(err, shardhost.ErrShardElsewhere) {
		t.Fatalf("after refused registry writes: %v", err)
	}
}

// TestStartFailureIsAnError: a node whose Raft address is taken fails to
// start with an error naming it — it used to panic cleaning up (the
// deferred Shutdown ran on the nil *Process the error return had set).
func TestStartFailureIsAnError(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	p, err := nodeproc.Start(nodeproc.Config{
		Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
		App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: taken.Addr().String(),
	})
	if err == nil || p != nil {
		t.Fatalf("Start with a taken Raft address: %v, %v; want an error", p, err)
	}
	if !errors.Is(err, syscall.EADDRINUSE) { // lunora-bench retries on it
		t.Errorf("Start with a taken Raft address: %v; want it to wrap EADDRINUSE", err)
	}
}

// Dev mode is anonymous: it is refused on any address but loopback,
// before anything listens or opens the data directory.
func TestDevModeRefusesNonLoopback(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	for _, addrs := range [][2]string{{":0", "127.0.0.1:0"}, {"127.0.0.1:0", "0.0.0.0:0"}} {
		_, err := nodeproc.Start(nodeproc.Config{Dev: true, App: app, Dir: t.TempDir(), NodeID: "dev",
			GRPCAddr: addrs[0], HTTPAddr: addrs[1], RaftAddr: "127.0.0.1:0"})
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Fatalf("dev mode on %v: %v", addrs, err)
		}
	}
}
