package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/internal/cli"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/schema"
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
	limits         schema.Limits // statements: -max-sql-bytes, -max-params, ...

	rateLimit     float64 // per client (gateway.Config.RateLimit)
	rateBurst     int
	rateBytes     int64
	maxConcurrent int
	maxSockets    int
	corsOrigins   []string

	gatewayID   string
	gossipAddr  string
	gossipAdv   string
	gossipSeeds []string
	gossipKey   []byte

	tls tlsOptions // -tls-* (to the nodes) and -public-tls-* (tls.go)

	validate bool // -validate: check everything, serve nothing
	blob     *cli.BlobFlags
}

// applyLimits sets the per-client, CORS and statement bounds of c from
// the flags.
func (o *options) applyLimits(c *gateway.Config) {
	c.RateLimit, c.RateBurst, c.BodyBytesPerSecond = o.rateLimit, o.rateBurst, o.rateBytes
	c.MaxConcurrentPerClient, c.MaxWebSocketsPerClient = o.maxConcurrent, o.maxSockets
	c.CORSOrigins, c.SchemaLimits = o.corsOrigins, o.limits
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
	cli.RegisterSchemaLimits(fs, &o.limits)
	fs.Float64Var(&o.rateLimit, "rate-limit", gateway.DefaultRateLimit, "requests per second one client may send (HTTP requests, gRPC calls, WebSocket subscribe frames); over it 429 / RESOURCE_EXHAUSTED with Retry-After. A client is its authenticated identity, else its IP address (an IPv6 /64) (0: no limit)")
	fs.IntVar(&o.rateBurst, "rate-burst", gateway.DefaultRateBurst, "requests one client may send at once above -rate-limit, refilled at that rate")
	fs.Int64Var(&o.rateBytes, "rate-limit-bytes", gateway.DefaultBodyBytesPerSecond, "bytes of HTTP request bodies one client may send per second (a bucket of at least -max-body-bytes); a client that sent more is refused with 429 until it is paid back (0: no limit)")
	fs.IntVar(&o.maxConcurrent, "max-concurrent-per-client", gateway.DefaultMaxConcurrentPerClient, "requests one client may have in flight at once (0: no limit)")
	fs.IntVar(&o.maxSockets, "max-websockets-per-client", gateway.DefaultMaxWebSocketsPerClient, "WebSockets and gRPC subscription streams one client may hold open at once (0: no limit)")
	corsOrigins := fs.String("cors-origins", "", "origins (scheme://host[:port], comma separated, or * for any) whose web pages may call the API; a browser request from any other origin but the gateway's own is refused with 403. No credentials are ever allowed cross-origin")
	fs.BoolVar(&o.validate, "validate", false, "check the flags and the schema, print a summary and exit 0 — or name the problem and exit 2 — without listening, gossiping or dialing a node")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.gossipSeeds = cli.SplitList(*gossipSeeds)
	if err := o.limits.Validate(); err != nil {
		return nil, err
	}
	if o.rateLimit < 0 || o.rateBurst < 0 || o.rateBytes < 0 || o.maxConcurrent < 0 || o.maxSockets < 0 {
		return nil, fmt.Errorf("-rate-limit, -rate-burst, -rate-limit-bytes, -max-concurrent-per-client and -max-websockets-per-client must not be negative")
	}
	origins, err := gateway.ParseOrigins(cli.SplitList(*corsOrigins))
	if err != nil {
		return nil, fmt.Errorf("-cors-origins: %w", err)
	}
	o.corsOrigins = origins
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
