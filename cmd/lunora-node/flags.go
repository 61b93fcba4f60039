package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lunora/lunora/shardhost"
)

// options are lunora-node's flags.
type options struct {
	dev        bool
	dataDir    string
	schemaPath string
	nodeID     string
	grpcAddr   string // node API (serve) or public API (dev)
	httpAddr   string // ops endpoints (serve) or public HTTP API + ops (dev)
	logLevel   string

	synchronous string
	idleTimeout time.Duration
	maxActive   int
	mailbox     int
	maxInFlight int
}

const usage = `lunora-node runs Lunora shard hosts.

Usage:
  lunora-node [serve] [flags]   serve the node API to gateways
  lunora-node dev [flags]       node + gateway + data in ./lunora-data, all in one process

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
	fs.StringVar(&o.synchronous, "synchronous", def.Synchronous, "SQLite synchronous level for shard writes: FULL (acked writes survive power loss) or NORMAL")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", def.IdleTimeout, "hibernate a shard after this long without requests")
	fs.IntVar(&o.maxActive, "max-active", def.MaxActive, "most shards kept open at once (LRU beyond)")
	fs.IntVar(&o.mailbox, "mailbox", def.MailboxSize, "mutations queued per shard before RESOURCE_EXHAUSTED")
	fs.IntVar(&o.maxInFlight, "max-in-flight", def.MaxInFlight, "requests served at once before RESOURCE_EXHAUSTED")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: serve, dev)", fs.Arg(0))
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
