package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/tlsconf"
)

// validate runs the checks serve makes after parsing its flags — the log
// level, the app's schema (loaded, global functions deterministic), the
// shard host's, the global tier's and the cluster's configurations — without
// listening, opening the data directory or joining anyone: what
// `lunora-node serve -validate` does. The Kubernetes self-configuration
// (k8s.go) has already run by then, so its problems are found too.
func validate(o *options, stdout io.Writer) error {
	if _, err := newLogger(o.logLevel, io.Discard); err != nil {
		return err
	}
	app, schemaName, err := loadApp(o)
	if err != nil {
		return err
	}
	if err := nodeproc.CheckApp(app); err != nil {
		return err
	}
	sc := shardhost.DefaultConfig()
	sc.Synchronous, sc.Durability, sc.IdleTimeout, sc.MaxActive = o.synchronous, o.durability, o.idleTimeout, o.maxActive
	sc.ShedAfter = o.shedAfter
	sc.MailboxSize, sc.MaxInFlight = o.mailbox, o.maxInFlight
	sc.StatementTimeout, sc.ResultBudget = o.stmtTimeout, o.resultBudget
	sc.MaxSQLLen, sc.MaxParams, sc.MaxValueBytes, sc.MaxStatements = o.limits.MaxSQLLen, o.limits.MaxParams, o.limits.MaxValueBytes, o.limits.MaxStatements
	sc.AlarmMaxAttempts, sc.AlarmBackoff, sc.AlarmBackoffMax = o.alarmTries, o.alarmBackoff, o.alarmCap
	sc.QueueConsumers = o.queueConsumers
	sc.Dir, sc.App, sc.NodeID = o.dataDir, app, o.nodeID
	if err := sc.Validate(); err != nil {
		return err
	}
	g := o.globalConfig()
	g.NodeID, g.Dir = o.nodeID, filepath.Join(o.dataDir, "raft")
	g.BindAddr, g.AdvertiseAddr, g.Bootstrap = o.raftAddr, o.raftAdvertise, o.bootstrap
	g.Schema = app.GroupDDL(schema.GlobalGroup)
	if err := g.Validate(); err != nil {
		return err
	}
	if err := o.clusterConfig().Validate(); err != nil {
		return err
	}
	// The certificate files load and match (they are read, not used), the
	// cluster secret's file is long enough, and listeners beyond loopback
	// have one of them (or -insecure-node-api).
	clusterTLS, err := o.tls.reloader(nil)
	if err != nil {
		return err
	}
	secret, err := o.tls.loadSecret()
	if err != nil {
		return err
	}
	if err := o.exposure(clusterTLS, secret).CheckExposure(); err != nil {
		return err
	}
	if _, err := o.publicTLS.reloader(nil); err != nil {
		return err
	}
	voters := "a lone node (one-voter global tier)"
	switch {
	case len(o.bootstrap) > 0:
		voters = fmt.Sprintf("bootstrap with %d voters", len(o.bootstrap))
	case len(o.join) > 0:
		voters = fmt.Sprintf("join through %v", o.join)
	}
	fmt.Fprintf(stdout, "lunora-node: valid: node %s, data %s, schema %s, grpc %s, raft %s, %s\n", o.nodeID, o.dataDir, schemaName, o.grpcAddr, o.raftAddr, voters)
	return nil
}

// exposure is the part of the node's configuration that decides whether
// its listeners may serve without cluster authentication.
func (o *options) exposure(clusterTLS *tlsconf.Reloader, secret *clustersecret.Secret) *nodeproc.Config {
	return &nodeproc.Config{Dev: o.dev, GRPCAddr: o.grpcAddr, HTTPAddr: o.httpAddr, RaftAddr: o.raftAddr,
		ClusterTLS: clusterTLS, ClusterSecret: secret, InsecureNodeAPI: o.insecureNodeAPI}
}
