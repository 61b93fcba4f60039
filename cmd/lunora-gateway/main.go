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
	_ "time/tzdata" // cron time zones without the system's tz database

	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/internal/cli"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/router"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/tlsconf"
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
	dial, publicTLS, secret, err := o.tls.load(log)
	if err != nil {
		return err
	}
	rc := router.DefaultConfig()
	rc.App, rc.Seeds, rc.Logger, rc.DialOptions = app, cli.SplitList(o.nodeAddr), log, dial
	var members *membership.Membership
	if o.gossipAddr != "" {
		gossipKey := o.gossipKey
		if len(gossipKey) == 0 && secret != nil {
			gossipKey = secret.GossipKey() // as the nodes derive it
		}
		members, err = membership.Start(membership.Config{
			BindAddr: o.gossipAddr, AdvertiseAddr: o.gossipAdv, Seeds: o.gossipSeeds, SecretKey: gossipKey,
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
	authOn, err := o.auth.enabled(o.httpAddr, o.grpcAddr)
	if err != nil {
		return err
	}
	if authOn {
		acfg, err := o.auth.config(rt)
		if err != nil {
			return err
		}
		authn, err := auth.New(acfg)
		if err != nil {
			return fmt.Errorf("authentication: %w", err)
		}
		defer authn.Close()
		gcfg.Auth = authn
	} else {
		gcfg.AuthOff = true
		log.Warn("authentication is OFF: every caller is an admin; the public listeners are loopback only")
	}
	if gcfg.Blobs, err = o.blob.Open(ctx, ""); err != nil {
		return err
	}
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
	srvCfg := o.server
	if publicTLS != nil {
		pub, err := publicTLS.ServerConfig(tlsconf.NoClientCert)
		if err != nil {
			return err
		}
		srvCfg.GRPCTLS, srvCfg.HTTPTLS = pub, pub
	}
	proc := server.New(reg, log, ready, srvCfg)
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
	log.Info("lunora-gateway serving", "grpc", grpcAddr.String(), "http", httpAddr.String(), "node", o.nodeAddr, "auth", o.auth.describe(authOn))
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	proc.Shutdown(sctx)
	return nil
}
