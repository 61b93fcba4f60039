package shardhost

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	active      prometheus.Gauge
	onDisk      prometheus.Gauge
	inFlight    prometheus.Gauge
	activations prometheus.Counter
	// cleanActivations counts activations that skipped their syncs: the
	// shard's files were as this process's clean close left them.
	cleanActivations prometheus.Counter
	hibernations     prometheus.Counter
	sheds            prometheus.Counter
	batchSize        prometheus.Histogram
	mailboxDepth     prometheus.Histogram
	commitLatency    prometheus.Histogram
	syncRounds       prometheus.Histogram
	syncShards       prometheus.Histogram
	walRecoveries    prometheus.Counter
	alarmsFired      *prometheus.CounterVec
	queueEvents      *prometheus.CounterVec

	// Live queries (subscribe.go).
	subscriptions prometheus.Gauge
	liveQueries   prometheus.Gauge
	reruns        prometheus.Counter
	updatesSent   prometheus.Counter
	cutOff        prometheus.Counter
	notifyLatency prometheus.Histogram
	// subs is the node's subscription count that the subscriptions gauge
	// mirrors; Subscribe checks it against MaxSubscriptions.
	subs atomic.Int64
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunora_node_requests_total", Help: "Requests served by the node's shards, by function and canonical code.",
		}, []string{"function", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lunora_node_request_duration_seconds", Help: "Latency of requests served by the node's shards.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"function", "code"}),
		active:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "lunora_shards_active", Help: "Shards with open SQLite handles."}),
		onDisk:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "lunora_shards_on_disk", Help: "Shard files held by the node, active or hibernated (hibernated = on_disk - active)."}),
		inFlight:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "lunora_node_in_flight_requests", Help: "Requests being served."}),
		activations: prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_shard_activations_total", Help: "Shard activations (file opened and migrated)."}),
		cleanActivations: prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_shard_clean_activations_total",
			Help: "Activations that needed no sync: the shard's files were as this process closed them cleanly."}),
		hibernations: prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_shard_hibernations_total", Help: "Shard hibernations (all handles closed)."}),
		sheds: prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_shard_sheds_total",
			Help: "Times an active shard unused for ShedAfter gave back its idle read connections and page cache."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_group_commit_batch_size", Help: "Mutations per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		mailboxDepth: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_shard_mailbox_depth", Help: "Mutations waiting in a shard's mailbox when its writer takes a batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_group_commit_duration_seconds", Help: "Time from BEGIN to COMMIT of one group commit (durable at COMMIT in shard durability mode; in node mode the syncer round follows, lunora_durability_round_seconds).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		syncRounds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_durability_round_seconds", Help: "Node durability mode: time of one syncer round (fdatasync of every shard's write-ahead log it covers, then the acknowledgements).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		syncShards: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_durability_round_shards", Help: "Node durability mode: shards one syncer round made durable.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
		walRecoveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_shard_wal_recoveries_total", Help: "Shards whose write-ahead log, left by a crash, was checkpointed before a handoff."}),
		alarmsFired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunora_alarms_fired_total", Help: "Alarm runs, by outcome: ok (ran and deleted), retry (failed, due again after a back-off), dead (failed its last attempt).",
		}, []string{"outcome"}),
		queueEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunora_queue_messages_total", Help: "Queue messages by event: enqueued, delivered (leased to a consumer), redelivered (a delivery after the first), acked, nacked, dead (dead-lettered), redriven.",
		}, []string{"queue", "event"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lunora_subscriptions_active", Help: "Live query subscriptions held by the node."}),
		liveQueries:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "lunora_live_queries", Help: "Live query states (one per shard, function and arguments, shared by their subscribers), including those in their grace period."}),
		reruns:        prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_live_query_reruns_total", Help: "Live queries re-run because a commit wrote a table they read."}),
		updatesSent:   prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_subscription_updates_total", Help: "Updates queued to subscribers."}),
		cutOff:        prometheus.NewCounter(prometheus.CounterOpts{Name: "lunora_subscriptions_cut_off_total", Help: "Subscribers cut off for falling SubscriptionBuffer updates behind."}),
		notifyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "lunora_subscription_notify_seconds", Help: "Time from a commit to its updates being queued to every affected subscriber (oldest commit of each notification round).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.active, m.onDisk, m.inFlight, m.activations, m.cleanActivations, m.hibernations, m.sheds, m.batchSize, m.mailboxDepth, m.commitLatency, m.syncRounds, m.syncShards, m.walRecoveries, m.alarmsFired, m.queueEvents,
			m.subscriptions, m.liveQueries, m.reruns, m.updatesSent, m.cutOff, m.notifyLatency)
	}
	return m
}
