package nodeproc_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
	"github.com/prometheus/client_golang/prometheus"
)

const cronClusterApp = `tables:
  beats:
    global: true
    columns: {id: int, tick: int}
    primary_key: [id]
functions:
  beats:record:
    kind: mutation
    global: true
    args: {tick: int}
    sql: ["INSERT INTO beats (id, tick) VALUES ((SELECT coalesce(max(id), 0) + 1 FROM beats), :tick)"]
crons:
  beat:
    schedule: "@every 1s"
    function: beats:record
    tick_arg: tick
`

// TestCronOncePerCluster: on a three-node cluster a cron of @every 1s runs
// each tick once in the cluster (every node runs a runner; the leader's
// claims), and keeps running on the new leader once the leader stops.
func TestCronOncePerCluster(t *testing.T) {
	app, err := schema.Parse("app.yaml", []byte(cronClusterApp))
	if err != nil {
		t.Fatal(err)
	}
	addrs := lunoratest.FreeAddrs(t, 3)
	voters := make([]raftglobal.Server, 3)
	for i := range voters {
		voters[i] = raftglobal.Server{ID: fmt.Sprintf("n%d", i+1), Addr: addrs[i]}
	}
	dir := t.TempDir()
	procs := make([]*nodeproc.Process, 3)
	regs := make([]*serverRegistry, 3)
	for i, v := range voters {
		regs[i] = &serverRegistry{server.NewRegistry()}
		p, err := nodeproc.Start(nodeproc.Config{
			Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
			App: app, Dir: filepath.Join(dir, v.ID), NodeID: v.ID,
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: v.Addr, Bootstrap: voters,
			Registry: regs[i].Registry, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", v.ID),
		})
		if err != nil {
			t.Fatal(err)
		}
		procs[i] = p
		t.Cleanup(func() {
			if procs[i] != nil {
				procs[i].Shutdown(context.Background())
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// ticks reads the recorded ticks through a running node.
	ticks := func(p *nodeproc.Process) ([]int64, error) {
		res, err := p.Node.Exec(ctx, schema.GlobalGroup, "SELECT tick FROM beats ORDER BY id", nil, api.ReadOptions{})
		if err != nil {
			return nil, err
		}
		out := make([]int64, len(res.Rows))
		for i, r := range res.Rows {
			out[i], _ = r[0].(int64)
		}
		return out, nil
	}
	waitTicks := func(p *nodeproc.Process, n int) []int64 {
		t.Helper()
		var got []int64
		err := pollUntil(ctx, func() error {
			var err error
			if got, err = ticks(p); err != nil {
				return err
			}
			if len(got) < n {
				return fmt.Errorf("%d ticks recorded, want %d", len(got), n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	before := waitTicks(procs[0], 3)

	leader := -1
	for i, p := range procs {
		if p.Global.IsLeader() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader among the nodes")
	}
	if err := procs[leader].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	procs[leader] = nil
	stoppedAt := time.Now().UnixMilli()
	survivor := procs[(leader+1)%3]
	var after []int64
	err = pollUntil(ctx, func() error {
		var err error
		if after, err = ticks(survivor); err != nil {
			return err
		}
		n := 0
		for _, tick := range after {
			if tick > stoppedAt {
				n++
			}
		}
		if n < 3 {
			return fmt.Errorf("%d ticks after the leader stopped, want 3", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) < len(before) {
		t.Fatalf("ticks lost: %d before the leader stopped, %d after", len(before), len(after))
	}

	seen := map[int64]bool{}
	for _, tick := range after {
		if seen[tick] {
			t.Fatalf("tick %d ran twice: %v", tick, after)
		}
		seen[tick] = true
		if tick%1000 != 0 {
			t.Fatalf("tick %d is not on the @every 1s grid", tick)
		}
	}
	// Admin SQL reads the tick state; the last recorded tick is done (its
	// end is committed just after its call).
	err = pollUntil(ctx, func() error {
		res, err := survivor.Node.Exec(ctx, schema.GlobalGroup, "SELECT done_tick_ms FROM __lunora_crons WHERE name = 'beat'", nil, api.ReadOptions{})
		if err != nil || len(res.Rows) != 1 {
			return fmt.Errorf("reading __lunora_crons: %v %v", res, err)
		}
		if done, _ := res.Rows[0][0].(int64); done < after[len(after)-1] {
			return fmt.Errorf("done tick %d is before the last recorded tick %d", done, after[len(after)-1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The ticks were run by the leader of their time: the old leader's
	// counter and a survivor's both count runs.
	var ok float64
	for i, r := range regs {
		if i != leader {
			ok += r.runs("beat", "ok")
		}
	}
	if ok < 3 {
		t.Fatalf("the surviving nodes counted %v successful runs", ok)
	}
	if n := regs[leader].runs("beat", "ok"); n < 1 {
		t.Fatalf("the first leader counted %v successful runs", n)
	}
}

type serverRegistry struct{ Registry *prometheus.Registry }

func (r *serverRegistry) runs(cron, outcome string) float64 {
	mfs, err := r.Registry.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != "lunora_cron_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["cron"] == cron && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// pollUntil polls cond until it returns nil or ctx ends.
func pollUntil(ctx context.Context, cond func() error) error {
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%v (last: %w)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// TestCronOnRootShard: a cron's function without shard_by runs in the
// root shard, with its args from lunora.yaml.
func TestCronOnRootShard(t *testing.T) {
	app, err := schema.Parse("app.yaml", []byte(`tables:
  pings:
    columns: {id: int, tick: int, label: text}
    primary_key: [id]
functions:
  pings:add:
    kind: mutation
    args: {tick: int, label: text}
    sql: ["INSERT INTO pings (id, tick, label) VALUES ((SELECT coalesce(max(id), 0) + 1 FROM pings), :tick, :label)"]
crons:
  ping:
    schedule: "@every 1s"
    function: pings:add
    args: {label: hello}
    tick_arg: tick
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := nodeproc.Start(nodeproc.Config{
		Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
		App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = pollUntil(ctx, func() error {
		res, err := p.Node.Exec(ctx, schema.RootShard, "SELECT tick, label FROM pings ORDER BY id", nil, api.ReadOptions{})
		if err != nil {
			return err
		}
		if len(res.Rows) < 2 {
			return fmt.Errorf("%d pings", len(res.Rows))
		}
		for _, r := range res.Rows {
			if tick, _ := r[0].(int64); tick%1000 != 0 || r[1] != "hello" {
				return fmt.Errorf("unexpected row %v", r)
			}
		}
		if res.Rows[0][0] == res.Rows[1][0] {
			return fmt.Errorf("a tick ran twice: %v", res.Rows)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
