package main

import (
	"flag"
	"fmt"
	"io"
	"time"
)

type options struct {
	schemaPath     string
	nodeAddr       string
	grpcAddr       string
	httpAddr       string
	logLevel       string
	requestTimeout time.Duration
	maxBodyBytes   int64
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("lunora-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "lunora-gateway serves Lunora's public API (gRPC and HTTP/JSON) and forwards calls to lunora-node.\n\nUsage:\n  lunora-gateway -schema lunora.yaml -node host:port [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.schemaPath, "schema", "", "path to lunora.yaml (required; the same file the nodes load)")
	fs.StringVar(&o.nodeAddr, "node", "", "gRPC address of the lunora-node serving shards (required)")
	fs.StringVar(&o.grpcAddr, "grpc-addr", ":8081", "public gRPC listen address")
	fs.StringVar(&o.httpAddr, "http-addr", ":8080", "public HTTP listen address (/v1/call, /v1/sql, /v1/status, /metrics, /healthz, /readyz)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 10*time.Second, "deadline of a call to a node")
	fs.Int64Var(&o.maxBodyBytes, "max-body-bytes", 1<<20, "largest HTTP request body")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.schemaPath == "" {
		return nil, fmt.Errorf("-schema is required: the path of the app's lunora.yaml")
	}
	if o.nodeAddr == "" {
		return nil, fmt.Errorf("-node is required: the gRPC address of a lunora-node")
	}
	return o, nil
}
