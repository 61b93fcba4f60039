// Package cron runs lunora.yaml's crons on the global tier's leader: each
// tick once per cluster, claimed and finished through the Raft log.
package cron
