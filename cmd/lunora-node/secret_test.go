package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

// TestSubcommandsWithClusterSecret: against a node with a cluster secret,
// status, keys and backup fail without -cluster-secret-file, saying what
// is missing, and work with it (or with LUNORA_CLUSTER_SECRET_FILE).
func TestSubcommandsWithClusterSecret(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cluster.secret")
	if err := os.WriteFile(file, []byte(strings.Repeat("0123456789abcdef", 4)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret, err := clustersecret.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := nodeproc.Start(nodeproc.Config{
		Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(), Cluster: node.DefaultClusterConfig(),
		App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		ClusterSecret: secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for { // the node puts itself in the ring after it starts
		if epoch, _, err := p.Global.Ring(ctx); err == nil && epoch > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the node never joined its ring")
		}
		time.Sleep(10 * time.Millisecond)
	}

	commands := []struct {
		name string
		run  func(extra ...string) error
	}{
		{"status", func(extra ...string) error {
			return showStatus(append([]string{"-node", p.GRPCAddr}, extra...), io.Discard, io.Discard)
		}},
		{"keys create", func(extra ...string) error {
			return runKeys(append([]string{"create", "-node", p.GRPCAddr, "-name", "ops", "-role", "admin", "-timeout", "10s"}, extra...), io.Discard, io.Discard)
		}},
		{"backup", func(extra ...string) error {
			return runBackup(append([]string{"-http", p.HTTPAddr, "-out", filepath.Join(t.TempDir(), "b")}, extra...), io.Discard, io.Discard)
		}},
	}
	for _, c := range commands {
		if err := c.run(); err == nil || !strings.Contains(err.Error(), "cluster secret") {
			t.Errorf("%s without the secret: %v, want a refusal naming the cluster secret", c.name, err)
		}
		if err := c.run("-cluster-secret-file", file); err != nil {
			t.Errorf("%s -cluster-secret-file: %v", c.name, err)
		}
	}
	// The flag's default is $LUNORA_CLUSTER_SECRET_FILE (what a node's pod
	// sets, for kubectl exec).
	t.Setenv(clustersecret.EnvFile, file)
	var out bytes.Buffer
	if err := runKeys([]string{"list", "-node", p.GRPCAddr, "-timeout", "10s"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "ops") {
		t.Errorf("keys list with $%s: %v %q", clustersecret.EnvFile, err, out.String())
	}
}
