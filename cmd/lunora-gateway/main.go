// Command lunora-gateway serves Lunora's public API and forwards each call
// to the node that hosts its shard.
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
	"syscall"
	"time"

	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/internal/cli"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/router"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
)

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lunora-gateway:", err)
		os.Exit(2)
	}
	if o.validate {
		if err := validate(o, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "lunora-gateway:", err)
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lunora-gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	app, err := schema.Load(o.schemaPath)
	if err != nil {
		return err
	}
	rc := router.DefaultConfig()
	rc.App, rc.Seeds, rc.Logger = app, cli.SplitList(o.nodeAddr), log
	var members *membership.Membership
	if o.gossipAddr != "" {
		members, err = membership.Start(membership.Config{
			BindAddr: o.gossipAddr, AdvertiseAddr: o.gossipAdv, Seeds: o.gossipSeeds, SecretKey: o.gossipKey,
			Meta:   membership.Meta{ID: o.gatewayID, Role: membership.RoleGateway},
			Logger: log,
		})
		if err != nil {
			return fmt.Errorf("gossip: %w", err)
		}
		defer members.Shutdown()
		rc.Gossip = members
	}
	rt, err := router.New(rc)
	if err != nil {
		return err
	}
	defer rt.Close()
	rt.Start()
	reg := server.NewRegistry()
	gcfg := gateway.DefaultConfig()
	gcfg.App, gcfg.Backend, gcfg.Logger, gcfg.Registerer = app, rt, log, reg
	gcfg.RequestTimeout, gcfg.MaxBodyBytes = o.requestTimeout, o.maxBodyBytes
	o.applyLimits(&gcfg)
	gw, err := gateway.New(gcfg)
	if err != nil {
		return err
	}
	// Ready once the ring is known: a gateway without it only fails.
	ready := func() error {
		if rt.Epoch() > 0 {
			return nil
		}
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := rt.Refresh(cctx, 1)
		return err
	}
	proc := server.New(reg, log, ready, o.server)
	rpc.RegisterPublicServer(proc.GRPC, rpc.NewPublicServer(gw, nil))
	grpcAddr, err := proc.ServeGRPC(o.grpcAddr)
	if err != nil {
		return err
	}
	httpAddr, err := proc.ServeHTTP(o.httpAddr, gateway.SecurityHeaders(proc.Handler(reg, gw.Handler())))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "LUNORA_READY gateway http=%s grpc=%s node=%s\n", httpAddr, grpcAddr, o.nodeAddr)
	if members != nil {
		defer members.Leave(2 * time.Second)
	}
	log.Info("lunora-gateway serving", "grpc", grpcAddr.String(), "http", httpAddr.String(), "node", o.nodeAddr)
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	proc.Shutdown(sctx)
	return nil
}
