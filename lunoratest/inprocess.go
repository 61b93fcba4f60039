package lunoratest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

// Dev is a whole Lunora in the test's own process, wired as "lunora-node
// dev" wires it (nodeproc): a shard host, a one-voter global tier, a
// gateway, the public gRPC API and the HTTP API, on real loopback
// listeners.
type Dev struct {
	*nodeproc.Process
	DataDir string
}

// StartDev starts a Dev on 127.0.0.1:0. cfg starts from
// shardhost.DefaultLocalConfig(); Dir defaults to a t.TempDir() and App to
// the built-in chat example. Logs are kept and written to t only if the
// test fails. Everything is shut down when the test ends.
func StartDev(t testing.TB, cfg shardhost.Config) *Dev {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.App == nil {
		app, err := schema.Parse(chat.SchemaName, chat.Schema)
		if err != nil {
			t.Fatalf("chat schema: %v", err)
		}
		cfg.App = app
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("in-process dev logs:\n%s", logs.tail(logTail))
		}
	})
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: cfg, Global: raftglobal.DefaultLocalConfig(),
		App: cfg.App, Dir: cfg.Dir, NodeID: "dev",
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Logger: log,
	})
	if err != nil {
		t.Fatalf("nodeproc.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &Dev{Process: p, DataDir: cfg.Dir}
}
