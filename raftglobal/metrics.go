package raftglobal

import (
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	writeLatency     prometheus.Histogram
	fsmApply         prometheus.Histogram
	batchSize        prometheus.Histogram
	snapshotDuration prometheus.Histogram
	snapshotSize     prometheus.Gauge
	leaderChanges    prometheus.Counter
	raft             *raftCollector
}

func newMetrics() *metrics {
	return &metrics{
		writeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_global_apply_duration_seconds", Help: "Time from a global write reaching the leader to its result (committed and applied).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		fsmApply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_global_fsm_apply_duration_seconds", Help: "Time the FSM took to apply one batch of committed entries (one SQLite transaction).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_global_batch_commands", Help: "Commands per Raft entry written by the leader.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_global_snapshot_duration_seconds", Help: "Time to persist one FSM snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		snapshotSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lunora_global_snapshot_size_bytes", Help: "Size of the last FSM snapshot persisted.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lunora_global_leader_changes_total", Help: "Leader changes this node observed (including to no leader).",
		}),
	}
}

func (m *metrics) collectors(s *Store) []prometheus.Collector {
	if m.raft == nil {
		m.raft = &raftCollector{s: s}
	}
	return []prometheus.Collector{m.writeLatency, m.fsmApply, m.batchSize, m.snapshotDuration,
		m.snapshotSize, m.leaderChanges, m.raft}
}

// register registers the store's metrics; on an error none stays registered.
func (m *metrics) register(reg prometheus.Registerer, s *Store) error {
	for i, c := range m.collectors(s) {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors(s)[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

// unregister lets a store reopened in the same process register again.
func (m *metrics) unregister(reg prometheus.Registerer, s *Store) {
	for _, c := range m.collectors(s) {
		reg.Unregister(c)
	}
}

var (
	descState   = prometheus.NewDesc("lunora_global_raft_state", "1 for the Raft state this node is in, 0 for the others.", []string{"state"}, nil)
	descTerm    = prometheus.NewDesc("lunora_global_raft_term", "Current Raft term.", nil, nil)
	descLast    = prometheus.NewDesc("lunora_global_raft_last_index", "Last index in this node's Raft log.", nil, nil)
	descCommit  = prometheus.NewDesc("lunora_global_raft_commit_index", "Raft commit index known to this node.", nil, nil)
	descApplied = prometheus.NewDesc("lunora_global_raft_applied_index", "Highest log index applied to this node's FSM file.", nil, nil)
	descVoter   = prometheus.NewDesc("lunora_global_raft_voter", "1 when this node is a voter in its latest Raft configuration, 0 otherwise.", nil, nil)
	descServers = prometheus.NewDesc("lunora_global_raft_servers", "Servers in this node's latest Raft configuration, by suffrage.", []string{"suffrage"}, nil)
	descFailing = prometheus.NewDesc("lunora_global_raft_unreachable_servers", "On the leader: servers its heartbeats currently fail to reach.", nil, nil)
)

// raftCollector reads Raft's state at scrape time.
type raftCollector struct{ s *Store }

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descTerm, descLast, descCommit, descApplied, descVoter, descServers, descFailing} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.s.raft
	if r == nil {
		return
	}
	st := r.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == st {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, s.String())
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(r.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(r.LastIndex()))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(c.s.fsm.applied.Load()))
	if f := r.GetConfiguration(); f.Error() == nil {
		voter, voters, nonvoters := 0.0, 0.0, 0.0
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				voters++
				if string(srv.ID) == c.s.cfg.NodeID {
					voter = 1
				}
			} else {
				nonvoters++
			}
		}
		ch <- prometheus.MustNewConstMetric(descVoter, prometheus.GaugeValue, voter)
		ch <- prometheus.MustNewConstMetric(descServers, prometheus.GaugeValue, voters, "voter")
		ch <- prometheus.MustNewConstMetric(descServers, prometheus.GaugeValue, nonvoters, "nonvoter")
	}
	ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, float64(len(c.s.Health())))
}
