package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
	"github.com/prometheus/client_golang/prometheus"
)

// stack is an in-process dev stack, assembled as `lunora-node dev`
// assembles it (nodeproc): a shard host, a one-voter global tier, a gateway
// in front, the public and node gRPC services on one server, all on one
// metrics registry.
type stack struct {
	addr string
	reg  *prometheus.Registry
	proc *nodeproc.Process
	gw   *gateway.Gateway
}

func startStack(dir, synchronous, durability string, log *slog.Logger) (*stack, error) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	reg := server.NewRegistry()
	sc := shardhost.DefaultConfig()
	sc.Synchronous, sc.Durability = synchronous, durability
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: sc, Global: raftglobal.DefaultConfig(),
		App: app, Dir: dir, NodeID: "bench",
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Logger: log, Registry: reg,
	})
	if err != nil {
		return nil, err
	}
	return &stack{addr: p.GRPCAddr, reg: reg, proc: p, gw: p.Gateway}, nil
}

func (s *stack) shutdown(ctx context.Context) error { return s.proc.Shutdown(ctx) }

// commitStats are the shard host's group-commit counters at one moment.
type commitStats struct {
	commits    uint64  // group commits
	mutations  float64 // mutations in them
	commitSecs float64 // time from BEGIN to COMMIT, summed
	// Node durability mode: syncer rounds, the shards they synced and
	// their time, summed.
	rounds      uint64
	roundShards float64
	roundSecs   float64
}

func (s *stack) commitStats() (commitStats, error) {
	var cs commitStats
	mfs, err := s.reg.Gather()
	if err != nil {
		return cs, err
	}
	found := 0
	for _, mf := range mfs {
		switch mf.GetName() {
		case "lunora_group_commit_batch_size":
			for _, m := range mf.GetMetric() {
				cs.commits += m.GetHistogram().GetSampleCount()
				cs.mutations += m.GetHistogram().GetSampleSum()
			}
			found++
		case "lunora_durability_round_shards":
			for _, m := range mf.GetMetric() {
				cs.rounds += m.GetHistogram().GetSampleCount()
				cs.roundShards += m.GetHistogram().GetSampleSum()
			}
		case "lunora_durability_round_seconds":
			for _, m := range mf.GetMetric() {
				cs.roundSecs += m.GetHistogram().GetSampleSum()
			}
		case "lunora_group_commit_duration_seconds":
			for _, m := range mf.GetMetric() {
				cs.commitSecs += m.GetHistogram().GetSampleSum()
			}
			found++
		}
	}
	if found < 2 {
		return cs, errors.New("the shard host no longer exports lunora_group_commit_batch_size and lunora_group_commit_duration_seconds")
	}
	return cs, nil
}

func (cs commitStats) sub(o commitStats) commitStats {
	return commitStats{commits: cs.commits - o.commits, mutations: cs.mutations - o.mutations, commitSecs: cs.commitSecs - o.commitSecs,
		rounds: cs.rounds - o.rounds, roundShards: cs.roundShards - o.roundShards, roundSecs: cs.roundSecs - o.roundSecs}
}
