package raftglobal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/prometheus/client_golang/prometheus"
)

// TestRecoverLostQuorum follows DESIGN.md's procedure: all three voters
// are down and only one comes back; a peers.json naming it alone makes it
// the whole cluster again, with its data.
func TestRecoverLostQuorum(t *testing.T) {
	c := NewTestCluster(t, 3, 0, withSchema)
	ctx := ctxT(t, 30*time.Second)
	leader := c.WaitForLeader(10 * time.Second)
	res, err := leader.Write(ctx, put("survives", 1))
	if err != nil {
		t.Fatal(err)
	}
	c.WaitForApplied(res.Seq, 10*time.Second)
	for _, id := range c.IDs() {
		c.KillNode(id)
	}
	peers := `[{"id": "n0", "address": "inmem-n0", "non_voter": false}]`
	path := filepath.Join(c.nodes["n0"].Dir, "raft", "peers.json")
	if err := os.WriteFile(path, []byte(peers), 0o644); err != nil {
		t.Fatal(err)
	}
	c.RestartNode("n0")
	s := c.WaitForLeader(10 * time.Second)
	if s.NodeID() != "n0" {
		t.Fatalf("leader %s after recovery", s.NodeID())
	}
	if _, err := os.Stat(path + ".applied"); err != nil {
		t.Fatalf("peers.json not marked applied: %v", err)
	}
	got, err := s.Read(ctx, api.ReadOptions{Consistency: api.Strong}, get("survives"))
	if err != nil || scalar(t, got) != 1 {
		t.Fatalf("data after recovery: %+v %v", got, err)
	}
	if _, err := s.Write(ctx, put("new", 2)); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	servers, err := s.Servers()
	if err != nil || len(servers) != 1 || !servers[0].Leader || !servers[0].Voter {
		t.Fatalf("configuration after recovery: %+v %v", servers, err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewTestCluster(t, 1, 0, withSchema, func(cfg *Config) { cfg.Registerer = reg })
	ctx := ctxT(t, 30*time.Second)
	s := c.WaitForLeader(10 * time.Second)
	if _, err := s.Write(ctx, put("m", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
		if mf.GetName() == "lunora_global_raft_state" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "Leader" && m.GetGauge().GetValue() != 1 {
					t.Errorf("state gauge: not Leader")
				}
			}
		}
	}
	var missing []string
	for _, name := range []string{"lunora_global_raft_state", "lunora_global_raft_term", "lunora_global_raft_commit_index",
		"lunora_global_raft_applied_index", "lunora_global_raft_last_index", "lunora_global_apply_duration_seconds",
		"lunora_global_fsm_apply_duration_seconds", "lunora_global_batch_commands", "lunora_global_snapshot_duration_seconds",
		"lunora_global_snapshot_size_bytes", "lunora_global_leader_changes_total"} {
		if !got[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("missing metrics: %s", strings.Join(missing, ", "))
	}
}
