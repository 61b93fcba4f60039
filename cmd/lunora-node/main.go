// Command lunora-node hosts shards: one SQLite database per shard key,
// served to gateways over gRPC. "lunora-node dev" runs a whole Lunora in
// one process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
)

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lunora-node:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lunora-node:", err)
		os.Exit(1)
	}
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func loadApp(o *options) (*schema.App, string, error) {
	if o.schemaPath == "" {
		app, err := schema.Parse(chat.SchemaName, chat.Schema)
		return app, chat.SchemaName + " (built in)", err
	}
	app, err := schema.Load(o.schemaPath)
	return app, o.schemaPath, err
}

// run serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	app, schemaName, err := loadApp(o)
	if err != nil {
		return err // a *schema.LineError names file:line
	}
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return err
	}
	reg := server.NewRegistry()
	cfg := shardhost.DefaultConfig()
	cfg.Dir, cfg.App, cfg.NodeID, cfg.Logger, cfg.Registerer = o.dataDir, app, o.nodeID, log, reg
	cfg.Synchronous, cfg.IdleTimeout, cfg.MaxActive = o.synchronous, o.idleTimeout, o.maxActive
	cfg.MailboxSize, cfg.MaxInFlight = o.mailbox, o.maxInFlight
	host, err := shardhost.New(cfg)
	if err != nil {
		return err
	}
	proc := server.New(reg, log, nil)

	var grpcAddr, httpAddr fmt.Stringer
	if o.dev {
		gcfg := gateway.DefaultConfig()
		gcfg.App, gcfg.Backend, gcfg.Logger, gcfg.Registerer = app, host, log, reg
		gw, err := gateway.New(gcfg)
		if err != nil {
			return err
		}
		rpc.RegisterPublicServer(proc.GRPC, rpc.NewPublicServer(gw, nil))
		rpc.RegisterNodeServer(proc.GRPC, rpc.NewNodeServer(host, log))
		if grpcAddr, err = proc.ServeGRPC(o.grpcAddr); err != nil {
			return err
		}
		if httpAddr, err = proc.ServeHTTP(o.httpAddr, proc.Handler(reg, gw.Handler())); err != nil {
			return err
		}
		abs, _ := filepath.Abs(o.dataDir)
		printDevBanner(stdout, httpAddr.String(), grpcAddr.String(), abs, schemaName)
	} else {
		rpc.RegisterNodeServer(proc.GRPC, rpc.NewNodeServer(host, log))
		if grpcAddr, err = proc.ServeGRPC(o.grpcAddr); err != nil {
			return err
		}
		if httpAddr, err = proc.ServeHTTP(o.httpAddr, proc.Handler(reg, nil)); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "LUNORA_READY node=%s http=%s grpc=%s\n", o.nodeID, httpAddr, grpcAddr)
	log.Info("lunora-node serving", "node", o.nodeID, "dev", o.dev, "grpc", grpcAddr.String(), "http", httpAddr.String(), "data", o.dataDir, "schema", schemaName)

	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	proc.Shutdown(sctx)
	return host.Shutdown(sctx)
}

func printDevBanner(w io.Writer, httpAddr, grpcAddr, data, schemaName string) {
	fmt.Fprintf(w, `Lunora dev mode: node + gateway in one process
  data     %s
  schema   %s
  HTTP     http://%s   (POST /v1/call, POST /v1/sql, GET /v1/status, /metrics, /healthz, /readyz)
  gRPC     %s   (lunora.v1.Lunora, grpc.health.v1, reflection)

Try:
  curl -s http://%s/v1/call -d '{"function":"messages:send","args":{"room_id":"r1","author":"ada","body":"hello"}}'
  curl -s http://%s/v1/call -d '{"function":"messages:list","args":{"room_id":"r1"}}'
  grpcurl -plaintext -d '{"function":"messages:list","args":{"room_id":{"text":"r1"}}}' %s lunora.v1.Lunora/Call
`, data, schemaName, httpAddr, grpcAddr, httpAddr, httpAddr, grpcAddr)
}
