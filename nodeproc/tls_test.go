package nodeproc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/tlsconf"
	"github.com/lunora/lunora/tlsconf/testcerts"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func tlsFiles(t *testing.T, ca *testcerts.CA, name string, u testcerts.Usage, withCA bool) *tlsconf.Reloader {
	t.Helper()
	dir := t.TempDir()
	leaf, err := ca.Issue(name, u)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := leaf.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconf.Config{CertFile: cert, KeyFile: key}
	if withCA {
		if cfg.CAFile, err = ca.WriteCA(dir); err != nil {
			t.Fatal(err)
		}
	}
	r, err := tlsconf.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSecurityConfigRefused: a node with mutual TLS and gossip without a
// key does not start unless plaintext gossip is allowed; cluster TLS in
// dev mode, and a public certificate outside it, are refused.
func TestSecurityConfigRefused(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testcerts.NewCA("cluster")
	if err != nil {
		t.Fatal(err)
	}
	cluster := tlsFiles(t, ca, "n1", testcerts.ServerAndClient, true)
	public := tlsFiles(t, ca, "public", testcerts.ServerOnly, false)
	base := func() nodeproc.Config {
		return nodeproc.Config{Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
			App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0"}
	}
	for _, tc := range []struct {
		name string
		edit func(*nodeproc.Config)
		want string
	}{
		{"plaintext gossip", func(c *nodeproc.Config) {
			c.ClusterTLS, c.Gossip = cluster, &membership.Config{BindAddr: "127.0.0.1:0"}
		}, "gossip is not encrypted"},
		{"cluster TLS in dev mode", func(c *nodeproc.Config) { c.ClusterTLS, c.Dev = cluster, true }, "dev mode has no peers"},
		{"public TLS on serve", func(c *nodeproc.Config) { c.PublicTLS = public }, "PublicTLS is for dev mode"},
		{"cluster TLS without a CA", func(c *nodeproc.Config) { c.ClusterTLS = public }, "needs the cluster CA"},
	} {
		cfg := base()
		tc.edit(&cfg)
		p, err := nodeproc.Start(cfg)
		if err == nil {
			p.Shutdown(context.Background())
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestDevPublicTLS: dev mode with PublicTLS serves its public API over
// HTTPS and gRPC with TLS.
func TestDevPublicTLS(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testcerts.NewCA("public")
	if err != nil {
		t.Fatal(err)
	}
	p, err := nodeproc.Start(nodeproc.Config{Dev: true, Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
		App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		PublicTLS: tlsFiles(t, ca, "localhost", testcerts.ServerOnly, false)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg := &tls.Config{RootCAs: pool}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("https://"+p.HTTPAddr+"/v1/call", "application/json",
		strings.NewReader(`{"function":"messages:send","args":{"room_id":"r1","author":"ada","body":"hello"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/call over HTTPS: %s", resp.Status)
	}
	cc, err := grpc.NewClient(p.GRPCAddr, tlsconf.DialOption(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
}
