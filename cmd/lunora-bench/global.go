package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/nodeproc"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
	"github.com/prometheus/client_golang/prometheus"
)

// register is -mode global's workload: users:register, a one-row insert
// into the global (Raft-replicated) users table.
const register workload = "global"

// runGlobal is -mode global: the same load on two fresh in-process clusters
// of o.voters nodes, global-tier group commit on then off, through node 1's
// public gRPC API (the gateway, which forwards global writes to the leader).
func runGlobal(ctx context.Context, o *options, dir, command string, stdout io.Writer, log *slog.Logger) error {
	info := runInfo{command: command, o: o, dataDir: dir,
		target: fmt.Sprintf("in-process cluster of %d voters on loopback (each: shard host + global tier + node gRPC), node 1 also the gateway; a fresh cluster per phase, synchronous=%s", o.voters, o.synchronous)}
	var results []*phaseResult
	err := profile(o.cpuProfile, o.trace, func() error {
		for _, batching := range []bool{true, false} {
			r, err := globalPhase(ctx, o, filepath.Join(dir, "batching-"+onOff(batching)), batching, log)
			if err != nil {
				return err
			}
			printPhase(stdout, r)
			results = append(results, r)
			if ctx.Err() != nil {
				break
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(results) == 2 && results[1].throughput() > 0 {
		info.notes = append(info.notes, fmt.Sprintf("global batching on / off = %.2f×  (%.0f vs %.0f writes/s)",
			results[0].throughput()/results[1].throughput(), results[0].throughput(), results[1].throughput()))
	}
	printSummary(stdout, info, results)
	return ctx.Err()
}

// globalPhase starts a cluster, waits until it takes a write, and measures.
func globalPhase(ctx context.Context, o *options, dir string, batching bool, log *slog.Logger) (r *phaseResult, err error) {
	c, err := startCluster(dir, o.voters, batching, o.synchronous, log)
	for try := 1; try < 5 && errors.Is(err, syscall.EADDRINUSE); try++ {
		// A Raft port free when chosen was taken before the node bound it
		// (the voters' addresses are fixed before any node starts).
		dir := fmt.Sprintf("%s-retry%d", dir, try)
		c, err = startCluster(dir, o.voters, batching, o.synchronous, log)
	}
	if err != nil {
		return nil, fmt.Errorf("start the in-process cluster: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if serr := c.shutdown(sctx); serr != nil && err == nil {
			err = serr
		}
	}()
	conns, err := dial(c.gateway, o.conns())
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	tr := registerTransport{grpcTransport{conns: conns, perConn: o.callersPerConn}}
	if err := waitWritable(ctx, tr, 30*time.Second); err != nil {
		return nil, err
	}

	var before, after entryStats
	r = runPhase(ctx, register, tr, o, func() { before = c.entryStats() }, func() { after = c.entryStats() })
	r.name = "global users:register, batching " + onOff(batching)
	if e := after.sub(before); e.entries > 0 && ctx.Err() == nil {
		r.note = fmt.Sprintf("%d Raft entries in the window, mean %.1f writes per entry", e.entries, e.cmds/float64(e.entries))
	}
	return r, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// registerTransport calls users:register over gRPC; each call registers a
// new user_id ("c<caller>-<n>"), so lunora_assert never fails.
type registerTransport struct{ grpcTransport }

func (t registerTransport) caller(i int, _ workload) caller {
	client := lunorav1.NewLunoraClient(t.conns[i/t.perConn])
	prefix, n := "c"+strconv.Itoa(i)+"-", 0
	return func(ctx context.Context, _ string) error {
		n++
		return registerUser(ctx, client, prefix+strconv.Itoa(n))
	}
}

func registerUser(ctx context.Context, client lunorav1.LunoraClient, id string) error {
	_, err := client.Call(ctx, &lunorav1.CallRequest{Function: "users:register", Args: map[string]*lunorav1.Value{
		"user_id": text(id), "name": text("bench user"),
	}})
	return err
}

// waitWritable retries a write until one succeeds: a leader is elected, its
// address published, and the gateway's node forwards to it.
func waitWritable(ctx context.Context, tr registerTransport, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := lunorav1.NewLunoraClient(tr.conns[0])
	for try := 1; ; try++ {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		err := registerUser(cctx, client, "probe-"+strconv.Itoa(try))
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the cluster took no write within %s: %w", timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cluster is n in-process nodes forming one global tier on loopback.
type cluster struct {
	gateway string // node 1's public gRPC address
	procs   []*nodeproc.Process
	regs    []*prometheus.Registry
}

// startCluster starts n voters, all bootstrapping the same voter set; node 1
// is also the gateway (Dev).
func startCluster(dir string, n int, batching bool, synchronous string, log *slog.Logger) (_ *cluster, err error) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		return nil, err
	}
	voters := make([]raftglobal.Server, n)
	for i := range voters {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		voters[i] = raftglobal.Server{ID: "n" + strconv.Itoa(i+1), Addr: addr}
	}
	started := &cluster{}
	defer func() {
		if err != nil {
			started.shutdown(context.Background())
		}
	}()
	for i, v := range voters {
		ndir := filepath.Join(dir, v.ID)
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			return nil, err
		}
		sc := shardhost.DefaultConfig()
		sc.Synchronous = synchronous
		g := raftglobal.DefaultConfig()
		g.Batching = batching
		reg := server.NewRegistry()
		p, err := nodeproc.Start(nodeproc.Config{
			Dev: i == 0, Shards: sc, Global: g, App: app, Dir: ndir, NodeID: v.ID,
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: v.Addr,
			Bootstrap: voters, Logger: log.With("node", v.ID), Registry: reg,
		})
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", v.ID, err)
		}
		started.procs, started.regs = append(started.procs, p), append(started.regs, reg)
	}
	started.gateway = started.procs[0].GRPCAddr
	return started, nil
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (c *cluster) shutdown(ctx context.Context) error {
	var errs []error
	for _, p := range c.procs {
		errs = append(errs, p.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// entryStats are the Raft entries the cluster's leaders wrote, and the
// writes in them, at one moment.
type entryStats struct {
	entries uint64
	cmds    float64
}

func (c *cluster) entryStats() entryStats {
	var e entryStats
	for _, reg := range c.regs {
		mfs, err := reg.Gather()
		if err != nil {
			continue
		}
		for _, mf := range mfs {
			if mf.GetName() != "lunora_global_batch_commands" {
				continue
			}
			for _, m := range mf.GetMetric() {
				e.entries += m.GetHistogram().GetSampleCount()
				e.cmds += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return e
}

func (e entryStats) sub(o entryStats) entryStats {
	return entryStats{entries: e.entries - o.entries, cmds: e.cmds - o.cmds}
}
