package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lunora/lunora/internal/cli"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/server"
)

type options struct {
	schemaPath     string
	nodeAddr       string
	grpcAddr       string
	httpAddr       string
	logLevel       string
	requestTimeout time.Duration
	maxBodyBytes   int64
	server         server.Config // listener bounds: timeouts, connection caps
	auth           authOptions

	gatewayID   string
	gossipAddr  string
	gossipAdv   string
	gossipSeeds []string
	gossipKey   []byte

	tls tlsOptions // -tls-* (to the nodes) and -public-tls-* (tls.go)

	validate bool // -validate: check everything, serve nothing
	blob     *cli.BlobFlags
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{server: server.DefaultConfig()}
	fs := flag.NewFlagSet("lunora-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "lunora-gateway serves Lunora's public API (gRPC and HTTP/JSON) and routes each call to the lunora-node that owns its shard.\n\nUsage:\n  lunora-gateway -schema lunora.yaml -node host:port[,host:port...] [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.schemaPath, "schema", "", "path to lunora.yaml (required; the same file the nodes load)")
	fs.StringVar(&o.nodeAddr, "node", "", "node-API addresses (comma separated) of lunora-nodes to read the ring from (required unless -gossip-seeds finds nodes)")
	fs.StringVar(&o.grpcAddr, "grpc-addr", ":8081", "public gRPC listen address")
	fs.StringVar(&o.httpAddr, "http-addr", ":8080", "public HTTP listen address (/v1/call, /v1/sql, /v1/fanout, /v1/status, /v1/subscribe, /v1/admin/keys; /metrics, /healthz, /readyz without authentication)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 10*time.Second, "deadline of a call to a node")
	fs.Int64Var(&o.maxBodyBytes, "max-body-bytes", 1<<20, "largest HTTP request body")
	fs.StringVar(&o.gatewayID, "id", cli.HostnameOr("gateway"), "this gateway's ID in the gossip cluster")
	fs.StringVar(&o.gossipAddr, "gossip-addr", "", "gossip bind address host:port (memberlist; empty: no gossip, dead nodes are found by failed calls)")
	fs.StringVar(&o.gossipAdv, "gossip-advertise", "", "gossip address others reach this gateway at (default: the bound one)")
	gossipSeeds := fs.String("gossip-seeds", "", "gossip seeds host:port,... — a DNS name (a Kubernetes headless Service) stands for all its addresses")
	gossipKey := fs.String("gossip-key", os.Getenv("LUNORA_GOSSIP_KEY"), "base64 AES key (16, 24 or 32 bytes) encrypting gossip; default $LUNORA_GOSSIP_KEY")
	o.tls.register(fs)
	o.server.RegisterFlags(fs)
	o.auth.register(fs)
	o.blob = cli.RegisterBlobFlags(fs, false)
	fs.BoolVar(&o.validate, "validate", false, "check the flags and the schema, print a summary and exit 0 — or name the problem and exit 2 — without listening, gossiping or dialing a node")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.gossipSeeds = cli.SplitList(*gossipSeeds)
	if *gossipKey != "" {
		k, err := membership.ParseKey(*gossipKey)
		if err != nil {
			return nil, fmt.Errorf("-gossip-key: %w", err)
		}
		o.gossipKey = k
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := o.tls.check(o); err != nil {
		return nil, err
	}
	if err := o.blob.Check(); err != nil {
		return nil, err
	}
	if o.schemaPath == "" {
		return nil, fmt.Errorf("-schema is required: the path of the app's lunora.yaml")
	}
	if _, err := o.auth.enabled(o.httpAddr, o.grpcAddr); err != nil {
		return nil, err
	}
	if o.nodeAddr == "" && (o.gossipAddr == "" || len(o.gossipSeeds) == 0) {
		return nil, fmt.Errorf("-node is required (node-API addresses of lunora-nodes), unless -gossip-addr and -gossip-seeds let the gateway find them")
	}
	return o, nil
}
