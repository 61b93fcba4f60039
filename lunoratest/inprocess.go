package lunoratest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
)

// Dev is a whole Lunora in the test's own process, wired as "lunora-node
// dev" wires it: a shard host, a gateway over it, the public gRPC API and
// the HTTP API, on real loopback listeners.
type Dev struct {
	Host     *shardhost.Host
	Gateway  *gateway.Gateway
	HTTPAddr string
	GRPCAddr string
	DataDir  string
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
	reg := server.NewRegistry()
	cfg.Logger, cfg.Registerer = log, reg
	host, err := shardhost.New(cfg)
	if err != nil {
		t.Fatalf("shardhost.New: %v", err)
	}
	proc := server.New(reg, log, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		proc.Shutdown(ctx)
		if err := host.Shutdown(ctx); err != nil {
			t.Errorf("host shutdown: %v", err)
		}
	})
	gcfg := gateway.DefaultConfig()
	gcfg.App, gcfg.Backend, gcfg.Logger, gcfg.Registerer = cfg.App, host, log, reg
	gw, err := gateway.New(gcfg)
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	rpc.RegisterPublicServer(proc.GRPC, rpc.NewPublicServer(gw, log))
	rpc.RegisterNodeServer(proc.GRPC, rpc.NewNodeServer(host, log))
	grpcAddr, err := proc.ServeGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, err := proc.ServeHTTP("127.0.0.1:0", proc.Handler(reg, gw.Handler()))
	if err != nil {
		t.Fatal(err)
	}
	return &Dev{Host: host, Gateway: gw, HTTPAddr: httpAddr.String(), GRPCAddr: grpcAddr.String(), DataDir: cfg.Dir}
}
