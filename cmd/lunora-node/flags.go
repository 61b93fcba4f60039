package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lunora/lunora/internal/cli"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
)

// options are lunora-node's flags.
type options struct {
	dev           bool
	dataDir       string
	schemaPath    string
	nodeID        string
	grpcAddr      string // node API (serve) or public API (dev)
	grpcAdvertise string
	raftAddr      string
	raftAdvertise string
	bootstrap     []raftglobal.Server
	join          []string
	httpAddr      string // ops endpoints (serve) or public HTTP API + ops (dev)
	logLevel      string

	synchronous    string
	durability     string
	idleTimeout    time.Duration
	shedAfter      time.Duration
	queueConsumers int
	sqliteHeap     int64
	alarmTries     int
	alarmBackoff   time.Duration
	alarmCap       time.Duration
	stmtTimeout    time.Duration
	resultBudget   int64
	maxActive      int
	mailbox        int
	maxInFlight    int
	limits         schema.Limits // -max-sql-bytes, -max-params, -max-value-bytes, -max-function-statements

	snapshotThreshold uint64
	batching          bool
	voters            int
	forceLeave        bool

	weight       int
	maxMoves     int
	moveRate     int64
	leaveTimeout time.Duration
	gossipAddr   string
	gossipAdv    string
	gossipSeeds  []string
	gossipKey    []byte

	tls                  clusterTLSFlags // -tls-ca -tls-cert -tls-key (tls.go)
	publicTLS            publicTLSFlags  // -public-tls-cert -public-tls-key (dev)
	gossipAllowPlaintext bool
	insecureNodeAPI      bool // -insecure-node-api

	server server.Config // listener bounds: timeouts, connection caps

	validate bool // -validate: check everything, serve nothing

	blob *cli.BlobFlags // dev mode only (blobflags.go)
}

func (o *options) clusterConfig() node.ClusterConfig {
	c := node.DefaultClusterConfig()
	c.Weight, c.MaxMoves, c.MoveBytesPerSec = o.weight, o.maxMoves, o.moveRate
	return c
}

// gossipConfig is nil when -gossip-addr is not set.
func (o *options) gossipConfig() *membership.Config {
	if o.gossipAddr == "" {
		return nil
	}
	return &membership.Config{BindAddr: o.gossipAddr, AdvertiseAddr: o.gossipAdv, Seeds: o.gossipSeeds, SecretKey: o.gossipKey}
}

func (o *options) globalConfig() raftglobal.Config {
	c := raftglobal.DefaultConfig()
	if o.snapshotThreshold > 0 {
		c.SnapshotThreshold = o.snapshotThreshold
	}
	c.Batching = o.batching
	c.TargetVoters = o.voters
	c.MaxSQLLen = o.limits.MaxSQLLen
	return c
}

const usage = `lunora-node runs Lunora shard hosts.

Usage:
  lunora-node [serve] [flags]   serve the node API to gateways
  lunora-node dev [flags]       node + gateway + data in ./lunora-data, all in one process
  lunora-node status -node ADDR [-shard ID] [-wait-ring N] [-wait-node ID] [-wait D]
                                the ring epoch; every node: alive or not, Raft voter,
                                in the ring, shards held; moves under way; with
                                -shard, who owns and who holds that shard
  lunora-node keys create -node ADDR -name NAME -role admin|service|client
  lunora-node keys list -node ADDR
  lunora-node keys revoke -node ADDR ID
                                manage the API keys gateways accept (the token of a
                                new key is printed once); how the first admin key
                                is made
  lunora-node queues dead [-gateway URL] [-api-key KEY] QUEUE
  lunora-node queues redrive [-gateway URL] [-api-key KEY] QUEUE [ID...]
  lunora-node alarms list [-gateway URL] [-api-key KEY] [-shard ID]
                                a queue's dead letters, put back on the queue; the
                                alarm index of every node, or one shard's alarms
                                (through a gateway's admin API, admin key)
  lunora-node remove-node -node ADDR [-force] ID
                                remove a (dead) node from the ring and the global tier;
                                a voter is replaced by a live non-voter, and a removal
                                that would lose the global tier's quorum is refused
                                unless -force
  lunora-node backup -http ADDR -out DIR
                                copy a running node's global tier replica and every
                                shard it holds (each consistent, while it serves) into
                                DIR with a manifest (see docs/operations.md)
  lunora-node restore -from DIR (-data NEWDIR | -verify)
                                check a backup; make NEWDIR a data directory holding it

A node not in dev mode whose listeners are not all on loopback needs a
cluster secret (-cluster-secret-file, on every node and gateway) or mutual
TLS (-tls-ca, -tls-cert, -tls-key), or -insecure-node-api. status, keys,
remove-node and backup take the same flags: the cluster secret's file,
a client certificate of the cluster CA, or both (README "Security").

Signals: SIGTERM is a graceful leave (out of the ring, every shard handed
off, then exit); SIGINT stops without leaving the ring (shards closed
cleanly; the node takes its place back when it restarts).

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{server: server.DefaultConfig()}
	if len(args) > 0 && (args[0] == "dev" || args[0] == "serve") {
		o.dev = args[0] == "dev"
		args = args[1:]
	}
	def := shardhost.DefaultConfig()
	fs := flag.NewFlagSet("lunora-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	dataDefault, grpcDefault, httpDefault := "/var/lib/lunora", ":7070", ":7071"
	if o.dev {
		dataDefault, grpcDefault, httpDefault = "./lunora-data", "127.0.0.1:8081", "127.0.0.1:8080"
	}
	fs.StringVar(&o.dataDir, "data", dataDefault, "data directory (shard files live under <data>/shards)")
	fs.StringVar(&o.schemaPath, "schema", "", "path to lunora.yaml (dev mode defaults to the built-in examples/chat app)")
	fs.StringVar(&o.nodeID, "node-id", cli.HostnameOr("node-0"), "this node's stable ID")
	fs.StringVar(&o.grpcAddr, "grpc-addr", grpcDefault, "gRPC listen address (node API; in dev mode the public API)")
	fs.StringVar(&o.httpAddr, "http-addr", httpDefault, "HTTP listen address (/metrics /healthz /readyz; in dev mode also /v1/call and /v1/sql)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.grpcAdvertise, "grpc-advertise", "", "node-API address other nodes use to reach this one (default: the bound -grpc-addr)")
	fs.StringVar(&o.raftAddr, "raft-addr", "", "global tier: Raft bind address (required with -bootstrap or -join; a lone node defaults to 127.0.0.1:0)")
	fs.StringVar(&o.raftAdvertise, "raft-advertise", "", "global tier: Raft address other nodes use (default: the bound -raft-addr)")
	bootstrap := fs.String("bootstrap", "", "global tier: initial voters as id=raft-addr,... (the first 3 or 5 nodes; every one of them gets the same list)")
	join := fs.String("join", "", "global tier: node-API addresses (comma separated) of running nodes; a node not in -bootstrap joins through them as a non-voter")
	fs.Uint64Var(&o.snapshotThreshold, "snapshot-threshold", 0, "global tier: log entries between snapshots (0: the default)")
	fs.BoolVar(&o.batching, "global-batching", true, "global tier: group concurrent writes into one Raft entry")
	fs.IntVar(&o.voters, "voters", raftglobal.DefaultConfig().TargetVoters, "global tier: voters the leader keeps, promoting non-voters when a voter leaves or is removed (3 or 5; give every node the same value)")
	fs.BoolVar(&o.forceLeave, "force-leave", false, "cluster: on SIGTERM, leave the global tier even if the voters left would have no quorum (by default the node then stays a voter and says so)")
	fs.StringVar(&o.synchronous, "synchronous", def.Synchronous, "SQLite synchronous level for shard writes: FULL (acked writes survive power loss) or NORMAL")
	fs.StringVar(&o.durability, "durability", def.Durability, "with -synchronous FULL, how shard writes are made durable: node (one node-wide fdatasync round covers every shard's commits) or shard (each shard's COMMIT syncs its own log)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", def.IdleTimeout, "hibernate a shard after this long without requests")
	fs.DurationVar(&o.shedAfter, "shed-after", def.ShedAfter, "an active shard unused this long closes its idle read connections and frees its page cache (0: never)")
	fs.Int64Var(&o.sqliteHeap, "sqlite-heap-limit", 256<<20, "bytes: SQLite's soft heap limit for the whole process — past it every shard's page cache is recycled before more is allocated (a node-wide budget for the caches); 0: none")
	fs.IntVar(&o.queueConsumers, "queue-consumers", 4, "messages of each queue with a consumer function this node runs at once")
	fs.IntVar(&o.alarmTries, "alarm-max-attempts", def.AlarmMaxAttempts, "runs of one alarm before it is moved to the shard's __lunora_dead_alarms")
	fs.DurationVar(&o.alarmBackoff, "alarm-backoff", def.AlarmBackoff, "delay after an alarm's first failure; doubled after each further one")
	fs.DurationVar(&o.alarmCap, "alarm-backoff-max", def.AlarmBackoffMax, "longest delay between two runs of a failing alarm")
	fs.IntVar(&o.maxActive, "max-active", def.MaxActive, "most shards kept open at once (LRU beyond)")
	fs.DurationVar(&o.stmtTimeout, "statement-timeout", def.StatementTimeout, "time limit of one function call or admin statement on a shard")
	fs.Int64Var(&o.resultBudget, "result-budget", def.ResultBudget, "bytes of results (as encoded) the node holds at once over all shards before RESOURCE_EXHAUSTED (0: no bound)")
	fs.IntVar(&o.mailbox, "mailbox", def.MailboxSize, "mutations queued per shard before RESOURCE_EXHAUSTED")
	fs.IntVar(&o.maxInFlight, "max-in-flight", def.MaxInFlight, "requests served at once before RESOURCE_EXHAUSTED")
	cli.RegisterSchemaLimits(fs, &o.limits)
	fs.IntVar(&o.weight, "weight", 1, "cluster: this node's share of shards relative to the others (0: hosts no shards)")
	fs.IntVar(&o.maxMoves, "max-moves", 8, "cluster: most shard handoffs this node sends at once")
	fs.Int64Var(&o.moveRate, "move-rate", 0, "cluster: bytes per second this node streams in handoffs (0: no limit)")
	fs.DurationVar(&o.leaveTimeout, "leave-timeout", 60*time.Second, "cluster: on SIGTERM, how long to hand off shards before stopping")
	fs.StringVar(&o.gossipAddr, "gossip-addr", "", "cluster: gossip bind address host:port (memberlist; empty: no gossip)")
	fs.StringVar(&o.gossipAdv, "gossip-advertise", "", "cluster: gossip address others reach this node at (default: the bound one)")
	gossipSeeds := fs.String("gossip-seeds", "", "cluster: gossip seeds host:port,... — a DNS name (a Kubernetes headless Service) stands for all its addresses")
	gossipKey := fs.String("gossip-key", os.Getenv("LUNORA_GOSSIP_KEY"), "cluster: base64 AES key (16, 24 or 32 bytes) encrypting gossip; default $LUNORA_GOSSIP_KEY")
	fs.BoolVar(&o.gossipAllowPlaintext, "gossip-allow-plaintext", false, "cluster: with mutual TLS (-tls-*), gossip without -gossip-key (refused otherwise)")
	o.tls.register(fs)
	fs.BoolVar(&o.insecureNodeAPI, "insecure-node-api", false, "serve the node API, Raft and backups beyond loopback with neither a cluster secret nor mutual TLS: anyone who reaches them is a cluster member (refused otherwise)")
	o.publicTLS.register(fs)
	o.server.RegisterFlags(fs)
	o.registerBlobFlags(fs)
	fs.BoolVar(&o.validate, "validate", false, "check the flags, the schema and the derived configuration (Kubernetes env included), print a summary and exit 0 — or name the problem and exit 2 — without listening, opening -data or joining")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: serve, dev, status, keys, queues, alarms, remove-node, backup, restore)", fs.Arg(0))
	}
	if err := o.limits.Validate(); err != nil {
		return nil, err
	}
	if o.voters < 1 {
		return nil, fmt.Errorf("-voters must be at least 1")
	}
	if o.sqliteHeap < 0 {
		return nil, fmt.Errorf("-sqlite-heap-limit must not be negative, got %d", o.sqliteHeap)
	}
	if o.weight < 0 || o.maxMoves < 1 || o.moveRate < 0 {
		return nil, fmt.Errorf("-weight and -move-rate must not be negative, -max-moves must be at least 1")
	}
	o.gossipSeeds = cli.SplitList(*gossipSeeds)
	if *gossipKey != "" {
		k, err := membership.ParseKey(*gossipKey)
		if err != nil {
			return nil, fmt.Errorf("-gossip-key: %w", err)
		}
		o.gossipKey = k
	}
	for _, part := range cli.SplitList(*bootstrap) {
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("-bootstrap: %q is not id=raft-addr", part)
		}
		o.bootstrap = append(o.bootstrap, raftglobal.Server{ID: id, Addr: addr})
	}
	o.join = cli.SplitList(*join)
	switch {
	case o.raftAddr != "":
	case len(o.bootstrap) == 0 && len(o.join) == 0:
		o.raftAddr = "127.0.0.1:0" // a lone node: a one-voter global tier
	default:
		return nil, fmt.Errorf("-raft-addr is required with -bootstrap or -join")
	}
	if o.dev {
		// Dev mode is anonymous (every caller an admin): only this machine
		// may reach it.
		for _, f := range []struct{ flag, addr string }{{"-http-addr", o.httpAddr}, {"-grpc-addr", o.grpcAddr}} {
			if !cli.IsLoopback(f.addr) {
				return nil, fmt.Errorf("dev mode has no authentication, so it listens on loopback only: %s %s is not a loopback address (use 127.0.0.1:PORT, or run lunora-node serve behind lunora-gateway)", f.flag, f.addr)
			}
		}
	}
	if err := checkSecurityFlags(o); err != nil {
		return nil, err
	}
	if !o.dev && o.schemaPath == "" {
		return nil, fmt.Errorf("-schema is required: the path of the app's lunora.yaml")
	}
	if o.blob != nil {
		if err := o.blob.Check(); err != nil {
			return nil, err
		}
	}
	return o, nil
}
