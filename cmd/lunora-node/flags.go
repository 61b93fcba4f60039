package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lunora/lunora/raftglobal"
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

	synchronous string
	idleTimeout time.Duration
	maxActive   int
	mailbox     int
	maxInFlight int

	snapshotThreshold uint64
	batching          bool
}

func (o *options) globalConfig() raftglobal.Config {
	c := raftglobal.DefaultConfig()
	if o.snapshotThreshold > 0 {
		c.SnapshotThreshold = o.snapshotThreshold
	}
	c.Batching = o.batching
	return c
}

const usage = `lunora-node runs Lunora shard hosts.

Usage:
  lunora-node [serve] [flags]   serve the node API to gateways
  lunora-node dev [flags]       node + gateway + data in ./lunora-data, all in one process
  lunora-node remove-node -node ADDR ID
                                remove a (dead) node from the global tier

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
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
	fs.StringVar(&o.nodeID, "node-id", hostnameOr("node-0"), "this node's stable ID")
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
	fs.StringVar(&o.synchronous, "synchronous", def.Synchronous, "SQLite synchronous level for shard writes: FULL (acked writes survive power loss) or NORMAL")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", def.IdleTimeout, "hibernate a shard after this long without requests")
	fs.IntVar(&o.maxActive, "max-active", def.MaxActive, "most shards kept open at once (LRU beyond)")
	fs.IntVar(&o.mailbox, "mailbox", def.MailboxSize, "mutations queued per shard before RESOURCE_EXHAUSTED")
	fs.IntVar(&o.maxInFlight, "max-in-flight", def.MaxInFlight, "requests served at once before RESOURCE_EXHAUSTED")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: serve, dev, remove-node)", fs.Arg(0))
	}
	for _, part := range splitList(*bootstrap) {
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("-bootstrap: %q is not id=raft-addr", part)
		}
		o.bootstrap = append(o.bootstrap, raftglobal.Server{ID: id, Addr: addr})
	}
	o.join = splitList(*join)
	switch {
	case o.raftAddr != "":
	case len(o.bootstrap) == 0 && len(o.join) == 0:
		o.raftAddr = "127.0.0.1:0" // a lone node: a one-voter global tier
	default:
		return nil, fmt.Errorf("-raft-addr is required with -bootstrap or -join")
	}
	if !o.dev && o.schemaPath == "" {
		return nil, fmt.Errorf("-schema is required: the path of the app's lunora.yaml")
	}
	return o, nil
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
