// Command lunora-node hosts shards — one SQLite database per shard key —
// and a replica of the global tier, served to gateways over gRPC.
// "lunora-node dev" runs a whole Lunora in one process.
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
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // cron time zones without the system's tz database

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/sqlitex"
	"google.golang.org/grpc/codes"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "status" {
		if err := showStatus(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "lunora-node status:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && (os.Args[1] == "backup" || os.Args[1] == "restore") {
		cmd := map[string]func([]string, io.Writer, io.Writer) error{"backup": runBackup, "restore": runRestore}[os.Args[1]]
		if err := cmd(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "lunora-node %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "keys" {
		if err := runKeys(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(os.Stderr, "lunora-node keys:", err)
			}
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && (os.Args[1] == "queues" || os.Args[1] == "alarms") {
		cmd := map[string]func([]string, io.Writer, io.Writer) error{"queues": runQueues, "alarms": runAlarms}[os.Args[1]]
		if err := cmd(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(os.Stderr, "lunora-node %s: %v\n", os.Args[1], err)
			}
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "remove-node" {
		if err := removeNode(os.Args[2:], os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "lunora-node remove-node:", err)
			os.Exit(1)
		}
		return
	}
	// In a Kubernetes StatefulSet (LUNORA_K8S_SERVICE set) the pod supplies
	// the identity, addresses and Raft role; see k8s.go.
	args, pod, err := kubernetesArgs(os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lunora-node:", err)
		os.Exit(2)
	}
	o, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lunora-node:", err)
		os.Exit(2)
	}
	if o.validate {
		if err := validate(o, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "lunora-node:", err)
			os.Exit(2)
		}
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		cancel(stopCause(<-sigs, pod, func(msg string, args ...any) { slog.Info(msg, args...) }))
		signal.Stop(sigs)
	}()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lunora-node:", err)
		os.Exit(1)
	}
}

// How a node was asked to stop: SIGTERM is a graceful leave (out of the
// ring, every shard handed off, out of the global tier's Raft group — a
// voter replaced by a non-voter, refused if the quorum would be lost —
// then exit: what a scale-down or preStop
// wants); SIGINT stops without leaving (shards closed cleanly, the node
// stays in the ring and comes back to the same place when it restarts:
// a restart, or scripts/cluster down).
var (
	errLeave    = errors.New("SIGTERM: leave the cluster")
	errKeepRing = errors.New("SIGINT: stop without leaving the ring")
)

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
	clusterTLS, err := o.tls.reloader(log)
	if err != nil {
		return err
	}
	publicTLS, err := o.publicTLS.reloader(log)
	if err != nil {
		return err
	}
	secret, err := o.tls.loadSecret()
	if err != nil {
		return err
	}
	// Refused before anything is created (nodeproc.Start checks it too).
	if err := o.exposure(clusterTLS, secret).CheckExposure(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return err
	}
	sqlitex.SetSoftHeapLimit(o.sqliteHeap)
	sc := shardhost.DefaultConfig()
	sc.Synchronous, sc.Durability, sc.IdleTimeout, sc.MaxActive = o.synchronous, o.durability, o.idleTimeout, o.maxActive
	sc.ShedAfter = o.shedAfter
	sc.MailboxSize, sc.MaxInFlight = o.mailbox, o.maxInFlight
	sc.StatementTimeout, sc.ResultBudget = o.stmtTimeout, o.resultBudget
	sc.MaxSQLLen, sc.MaxParams, sc.MaxValueBytes, sc.MaxStatements = o.limits.MaxSQLLen, o.limits.MaxParams, o.limits.MaxValueBytes, o.limits.MaxStatements
	sc.AlarmMaxAttempts, sc.AlarmBackoff, sc.AlarmBackoffMax = o.alarmTries, o.alarmBackoff, o.alarmCap
	sc.QueueConsumers = o.queueConsumers
	cluster := o.clusterConfig()
	cluster.Fault = faultHook(log) // nil unless built with -tags lunorafault
	blobs, err := o.devBlobs(ctx)
	if err != nil {
		return err
	}
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: o.dev, Shards: sc, Global: o.globalConfig(),
		App: app, Dir: o.dataDir, NodeID: o.nodeID,
		GRPCAddr: o.grpcAddr, GRPCAdvertise: o.grpcAdvertise, HTTPAddr: o.httpAddr,
		RaftAddr: o.raftAddr, RaftAdvertise: o.raftAdvertise, Bootstrap: o.bootstrap, Seeds: o.join,
		Cluster: cluster, Gossip: o.gossipConfig(), Server: o.server, ForceLeave: o.forceLeave,
		ClusterTLS: clusterTLS, PublicTLS: publicTLS, AllowPlaintextGossip: o.gossipAllowPlaintext,
		ClusterSecret: secret, InsecureNodeAPI: o.insecureNodeAPI,
		Logger: log, Blobs: blobs,
	})
	if err != nil {
		return err
	}
	if o.dev {
		abs, _ := filepath.Abs(o.dataDir)
		var banner strings.Builder
		printDevBanner(&banner, p.HTTPAddr, p.GRPCAddr, abs, schemaName)
		text := banner.String()
		if publicTLS != nil {
			// The listeners speak TLS (-public-tls-cert): so do the examples.
			text = strings.ReplaceAll(text, "http://", "https://")
			text = strings.ReplaceAll(text, "grpcurl -plaintext ", "grpcurl ")
		}
		fmt.Fprint(stdout, text)
	}
	gossip := ""
	if p.Members != nil {
		gossip = " gossip=" + p.Members.LocalAddr()
	}
	fmt.Fprintf(stdout, "LUNORA_READY node=%s http=%s grpc=%s raft=%s%s\n", o.nodeID, p.HTTPAddr, p.GRPCAddr, p.RaftAddr, gossip)
	log.Info("lunora-node serving", "node", o.nodeID, "dev", o.dev, "grpc", p.GRPCAddr, "http", p.HTTPAddr, "raft", p.RaftAddr, "data", o.dataDir, "schema", schemaName)

	<-ctx.Done()
	if !o.dev && errors.Is(context.Cause(ctx), errKeepRing) {
		log.Info("stopping without leaving the ring (SIGINT): shards stay here until this node restarts")
	} else if !o.dev {
		// A graceful leave: out of the ring, every shard handed off to
		// its new owner, then stop.
		log.Info("leaving the cluster: handing off shards", "timeout", o.leaveTimeout)
		lctx, lcancel := context.WithTimeout(context.Background(), o.leaveTimeout)
		if err := p.Leave(lctx); err != nil {
			log.Warn("leave", "err", err)
		}
		lcancel()
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return p.Shutdown(sctx)
}

// removeNode asks a running node to remove a node from the ring and the
// global tier: lunora-node remove-node -node ADDR [-force] ID. It retries
// while leadership moves (UNAVAILABLE), for up to 30 s.
func removeNode(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("lunora-node remove-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("node", "127.0.0.1:7070", "node-API address of any running node")
	var tlsFlags clusterTLSFlags
	tlsFlags.register(fs)
	force := fs.Bool("force", false, "remove a voter even if the voters left would have no quorum of live servers (the global tier is then unavailable until enough of them come back)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: lunora-node remove-node -node ADDR [-force] NODE_ID")
	}
	dial, _, _, err := tlsFlags.client()
	if err != nil {
		return err
	}
	c, err := rpc.NewNodeClient(*addr, dial...)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := c.RemoveNode(ctx, api.RemoveRequest{NodeID: fs.Arg(0), Force: *force})
		if err == nil || api.CodeOf(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printDevBanner(w io.Writer, httpAddr, grpcAddr, data, schemaName string) {
	fmt.Fprintf(w, `Lunora dev mode: node + gateway + a one-voter global tier in one process
  auth     OFF: every caller is an anonymous admin; listening on loopback only
           (lunora-gateway in front of lunora-node serve authenticates; see README "Security")
  data     %s
  schema   %s
  HTTP     http://%s   (POST /v1/call, POST /v1/sql, GET /v1/status, /metrics, /healthz, /readyz)
  Chat     http://%s/chat/   (the example's page, live over GET /v1/subscribe; open it twice)
  gRPC     %s   (lunora.v1.Lunora, grpc.health.v1, reflection)

Try:
  curl -s http://%s/v1/call -d '{"function":"messages:send","args":{"room_id":"r1","author":"ada","body":"hello"}}'
  curl -s http://%s/v1/call -d '{"function":"messages:list","args":{"room_id":"r1"}}'
  curl -s http://%s/v1/call -d '{"function":"users:register","args":{"user_id":"ada","name":"Ada"}}'
  grpcurl -plaintext -d '{"function":"messages:list","args":{"room_id":{"text":"r1"}}}' %s lunora.v1.Lunora/Call
`, data, schemaName, httpAddr, httpAddr, grpcAddr, httpAddr, httpAddr, httpAddr, grpcAddr)
}
