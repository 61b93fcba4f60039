package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// options are lunora-bench's flags.
type options struct {
	target         string
	callers        int
	voters         int
	callersPerConn int
	shards         int
	duration       time.Duration
	warmup         time.Duration
	mode           string
	synchronous    string
	durability     string
	baseline       bool
	baselineFiles  int
	dataDir        string
	cpuProfile     string
	trace          string
	transport      string
	logLevel       string
	consumers      []int
	prefetch       int
}

const usage = `lunora-bench is a load generator for Lunora's public gRPC API.

It calls messages:send (a one-row insert) and/or messages:list (limit 10) of
the built-in chat app on rooms r0..r<shards-1> from concurrent callers, then
prints throughput, latency percentiles and errors by code. With -baseline it
also measures, in the same run, plain SQLite doing the same inserts with the
same durability (one autocommit INSERT per write, one writer), and prints
the ratio.

Without -target it starts an in-process dev stack (shard host + gateway +
gRPC server on 127.0.0.1:0, data in a fresh directory) and benchmarks it over
real loopback gRPC.

Usage:
  lunora-bench [flags]

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("lunora-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&o.target, "target", "", "public gRPC address (host:port) of a gateway or `lunora-node dev`; empty starts an in-process dev stack")
	fs.IntVar(&o.callers, "c", 64, "concurrent callers")
	fs.IntVar(&o.callersPerConn, "callers-per-conn", 64, "callers sharing one gRPC client connection (fewer connections measured faster on loopback; see BENCHMARKS.md)")
	fs.IntVar(&o.shards, "shards", 1, "rooms (one shard each) the callers spread over, round robin")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "measured duration of each phase")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each phase's measurement")
	fs.StringVar(&o.mode, "mode", "both", "mutation (messages:send), query (messages:list), both (one after the other), global (users:register on an in-process -voters cluster through node 1's gateway, global-tier batching on then off), or queue (-c producers enqueue through a mutation on -shards rooms, -consumers take the messages over gRPC Consume and ack them; an in-process dev node per phase)")
	fs.IntVar(&o.voters, "voters", 3, "-mode global: voters of the in-process cluster")
	fs.StringVar(&o.synchronous, "sync", "FULL", "SQLite synchronous level of the in-process stack and the baseline: FULL or NORMAL")
	fs.StringVar(&o.durability, "durability", "node", "durability mode of the in-process stack with -sync FULL: node (one node-wide fdatasync round for every shard's commits) or shard (each shard's COMMIT syncs its own log)")
	fs.BoolVar(&o.baseline, "baseline", true, "also measure plain SQLite autocommit inserts in the same run")
	fs.IntVar(&o.baselineFiles, "baseline-files", 1, "SQLite files (each with its own writer) the baseline spreads the rooms over; 1 is the classic single-writer baseline, -shards is plain SQLite's counterpart of that many shards")
	fs.StringVar(&o.dataDir, "data", "", "directory to create the run's (temporary) data directory in; default the system temp dir")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the Lunora phases (whole process: callers and, in-process, the stack) to this file")
	fs.StringVar(&o.trace, "trace", "", "write a runtime execution trace of the Lunora phases to this file (keep -d short: traces grow fast)")
	fs.StringVar(&o.transport, "transport", "grpc", "grpc (the public API over loopback) or direct (the in-process gateway's Go API, no gRPC: for finding where time goes; needs no -target)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of the in-process stack: debug, info, warn or error")
	consumers := fs.String("consumers", "1,16", "-mode queue: the consumer counts to measure, one phase each (after an enqueue-only phase)")
	fs.IntVar(&o.prefetch, "prefetch", 256, "-mode queue: each consumer stream's prefetch")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.mode = strings.ToLower(o.mode)
	for _, f := range strings.Split(*consumers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1024 {
			return nil, fmt.Errorf("-consumers: %q is not a consumer count between 1 and 1024", f)
		}
		o.consumers = append(o.consumers, n)
	}
	o.synchronous = strings.ToUpper(o.synchronous)
	switch {
	case o.callers < 1:
		return nil, fmt.Errorf("-c must be at least 1")
	case o.callersPerConn < 1:
		return nil, fmt.Errorf("-callers-per-conn must be at least 1")
	case o.baselineFiles < 1:
		return nil, fmt.Errorf("-baseline-files must be at least 1")
	case o.shards < 1:
		return nil, fmt.Errorf("-shards must be at least 1")
	case o.duration <= 0:
		return nil, fmt.Errorf("-d must be positive")
	case o.warmup < 0:
		return nil, fmt.Errorf("-warmup must not be negative")
	case o.mode != "mutation" && o.mode != "query" && o.mode != "both" && o.mode != "global" && o.mode != "queue":
		return nil, fmt.Errorf("-mode must be mutation, query, both, global or queue, not %q", o.mode)
	case (o.mode == "global" || o.mode == "queue") && (o.target != "" || o.transport != "grpc"):
		return nil, fmt.Errorf("-mode %s starts its own nodes and calls them over gRPC; it cannot be used with -target or -transport direct", o.mode)
	case o.prefetch < 1 || o.prefetch > 1024:
		return nil, fmt.Errorf("-prefetch must be between 1 and 1024")
	case o.voters < 1:
		return nil, fmt.Errorf("-voters must be at least 1")
	case o.transport != "grpc" && o.transport != "direct":
		return nil, fmt.Errorf("-transport must be grpc or direct, not %q", o.transport)
	case o.transport == "direct" && o.target != "":
		return nil, fmt.Errorf("-transport direct calls the in-process stack; it cannot be used with -target")
	case o.durability != "node" && o.durability != "shard":
		return nil, fmt.Errorf("-durability must be node or shard, not %q", o.durability)
	case o.synchronous != "FULL" && o.synchronous != "NORMAL":
		return nil, fmt.Errorf("-sync must be FULL or NORMAL, not %q", o.synchronous)
	}
	return o, nil
}

// conns is the number of gRPC client connections the callers share.
func (o *options) conns() int {
	return (o.callers + o.callersPerConn - 1) / o.callersPerConn
}
