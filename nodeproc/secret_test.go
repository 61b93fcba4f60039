package nodeproc_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/tlsconf"
	"github.com/lunora/lunora/tlsconf/testcerts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func secretOf(t *testing.T, text string) *clustersecret.Secret {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster-secret")
	if err := os.WriteFile(path, []byte(text+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := clustersecret.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secretNodeConfig(t *testing.T) nodeproc.Config {
	t.Helper()
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	return nodeproc.Config{Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
		App: app, Dir: t.TempDir(), NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0"}
}

// TestNodeAPINeedsClusterSecret: a node with a cluster secret answers
// UNAUTHENTICATED, naming what is missing, to node-API calls without its
// token or with another secret's — unary (Ring, MoveShard, RegisterShard,
// CreateKey, Status) and streaming (Handoff) alike — while health checks
// stay open; with the token the same calls are served. GET /admin/backup
// is 401 without the token, a backup with it.
func TestNodeAPINeedsClusterSecret(t *testing.T) {
	secret := secretOf(t, strings.Repeat("s3cret-", 6))
	cfg := secretNodeConfig(t)
	cfg.ClusterSecret = secret
	p, err := nodeproc.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	calls := map[string]func(*rpc.NodeClient) error{
		"Ring": func(c *rpc.NodeClient) error { _, err := c.Ring(ctx, 0); return err },
		"MoveShard": func(c *rpc.NodeClient) error {
			_, _, err := c.MoveShard(ctx, "room_id=r1", "n1", "n2", 1, false)
			return err
		},
		"RegisterShard": func(c *rpc.NodeClient) error {
			_, _, err := c.RegisterShard(ctx, "room_id=r1", "n1", false)
			return err
		},
		"CreateKey": func(c *rpc.NodeClient) error {
			_, _, err := c.CreateKey(ctx, "ops", auth.RoleAdmin)
			return err
		},
		"Status": func(c *rpc.NodeClient) error { _, err := c.Status(ctx); return err },
		"Handoff": func(c *rpc.NodeClient) error {
			data := []byte("not a shard")
			return c.Handoff(ctx, api.HandoffHeader{ShardID: "room_id=r9", From: "n2", Epoch: 1, Size: int64(len(data))}, bytes.NewReader(data), make([]byte, 32))
		},
	}
	anonymous, err := rpc.NewNodeClient(p.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	stranger, err := rpc.NewNodeClient(p.GRPCAddr, secretOf(t, strings.Repeat("other-", 7)).DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	member, err := rpc.NewNodeClient(p.GRPCAddr, secret.DialOption())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	for name, call := range calls {
		for who, c := range map[string]*rpc.NodeClient{"no secret": anonymous, "another secret": stranger} {
			err := call(c)
			if api.CodeOf(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "needs the cluster secret") {
				t.Errorf("%s with %s: %v, want UNAUTHENTICATED naming the cluster secret", name, who, err)
			}
		}
	}
	// A process calling nodes for others (a gateway's router) without the
	// secret gets INTERNAL, its own misconfiguration, not a 401 its
	// clients would take for theirs.
	gateway, err := rpc.NewNodeClient(p.GRPCAddr, rpc.MemberDialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer gateway.Close()
	for _, name := range []string{"Ring", "CreateKey", "Handoff"} {
		if err := calls[name](gateway); api.CodeOf(err) != codes.Internal || !strings.Contains(err.Error(), "refused this process as a cluster member") {
			t.Errorf("%s from a gateway without the secret: %v, want INTERNAL naming the misconfiguration", name, err)
		}
	}
	// Health checks need no secret.
	cc, err := grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check without the secret: %v", err)
	}
	// A member is served: its calls reach the node (whose answers are
	// its own, not UNAUTHENTICATED).
	if _, err := member.Ring(ctx, 0); err != nil {
		t.Errorf("Ring with the secret: %v", err)
	}
	if _, _, err := member.RegisterShard(ctx, "room_id=r1", "n1", false); err != nil {
		t.Errorf("RegisterShard with the secret: %v", err)
	}
	token, rec, err := member.CreateKey(ctx, "ops", auth.RoleAdmin)
	if err != nil || token == "" || rec.Role != auth.RoleAdmin {
		t.Errorf("CreateKey with the secret: %v %+v", err, rec)
	}
	for name, call := range map[string]func(*rpc.NodeClient) error{"MoveShard": calls["MoveShard"], "Handoff": calls["Handoff"]} {
		if err := call(member); api.CodeOf(err) == codes.Unauthenticated {
			t.Errorf("%s with the secret: %v", name, err)
		}
	}

	// The backup endpoint.
	backup := "http://" + p.HTTPAddr + nodeproc.BackupPath
	for who, hc := range map[string]*http.Client{
		"no secret":      {},
		"another secret": {Transport: secretOf(t, strings.Repeat("other-", 7)).Transport(nil)},
	} {
		resp, err := hc.Get(backup)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "cluster secret") {
			t.Errorf("GET %s with %s: %s %q, want 401 naming the cluster secret", nodeproc.BackupPath, who, resp.Status, body)
		}
	}
	hc := &http.Client{Transport: secret.Transport(nil)}
	resp, err := hc.Get(backup)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || n == 0 {
		t.Errorf("GET %s with the secret: %s, %d bytes", nodeproc.BackupPath, resp.Status, n)
	}
	// The rest of the ops listener stays open (probes, metrics).
	if resp, err := http.Get("http://" + p.HTTPAddr + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz without the secret: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestExposedNodeNeedsClusterAuth: a node (not in dev mode) whose node
// API, Raft or HTTP listener is beyond loopback refuses to start with
// neither mutual TLS nor a cluster secret, naming the ways out; with a
// secret, or with InsecureNodeAPI, it starts; on loopback it needs
// neither.
func TestExposedNodeNeedsClusterAuth(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*nodeproc.Config)
		want string // "" for a start
	}{
		{"loopback", func(*nodeproc.Config) {}, ""},
		{"node API on every interface", func(c *nodeproc.Config) { c.GRPCAddr = ":0" }, "-grpc-addr (node API) :0 is not on loopback"},
		{"Raft on every interface", func(c *nodeproc.Config) { c.RaftAddr = "0.0.0.0:0"; c.RaftAdvertise = "127.0.0.1:1" }, "-raft-addr (Raft) 0.0.0.0:0"},
		{"HTTP on every interface", func(c *nodeproc.Config) { c.HTTPAddr = ":0" }, "-http-addr (backups)"},
		{"with a secret", func(c *nodeproc.Config) { c.GRPCAddr, c.ClusterSecret = ":0", secretOf(t, strings.Repeat("x", 32)) }, ""},
		{"insecure on purpose", func(c *nodeproc.Config) { c.GRPCAddr, c.InsecureNodeAPI = ":0", true }, ""},
	} {
		cfg := secretNodeConfig(t)
		tc.edit(&cfg)
		p, err := nodeproc.Start(cfg)
		if err == nil {
			p.Shutdown(context.Background())
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "-cluster-secret-file") || !strings.Contains(err.Error(), "-insecure-node-api")):
			t.Errorf("%s: %v, want a refusal naming %q, -cluster-secret-file and -insecure-node-api", tc.name, err, tc.want)
		}
	}
}

// TestClusterTLSAndSecret: a node with both mutual TLS and a cluster
// secret requires both: a client with a cluster certificate but without
// the secret is UNAUTHENTICATED, one with the secret but no certificate
// fails the handshake, one with both is served.
func TestClusterTLSAndSecret(t *testing.T) {
	ca, err := testcerts.NewCA("cluster")
	if err != nil {
		t.Fatal(err)
	}
	secret := secretOf(t, strings.Repeat("both-", 8))
	cfg := secretNodeConfig(t)
	cfg.ClusterTLS, cfg.ClusterSecret = tlsFiles(t, ca, "n1", testcerts.ServerAndClient, true), secret
	p, err := nodeproc.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	client, err := tlsFiles(t, ca, "gateway", testcerts.ClientOnly, true).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ring := func(opts ...grpc.DialOption) error {
		c, err := rpc.NewNodeClient(p.GRPCAddr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		_, err = c.Ring(cctx, 0)
		return err
	}
	if err := ring(tlsconf.DialOption(client)); api.CodeOf(err) != codes.Unauthenticated {
		t.Errorf("a cluster certificate without the secret: %v, want UNAUTHENTICATED", err)
	}
	if err := ring(secret.DialOption()); err == nil || api.CodeOf(err) == codes.OK {
		t.Errorf("the secret without a certificate (plaintext): %v, want a failure", err)
	}
	if err := ring(tlsconf.DialOption(client), secret.DialOption()); err != nil {
		t.Errorf("both: %v", err)
	}
}

// TestGossipKeyFromClusterSecret: a node with a cluster secret and gossip
// but no gossip key encrypts gossip with the key derived from the secret
// (as a gateway with the same secret does): a member with that key joins
// it (an encrypting member cannot join a plaintext one).
func TestGossipKeyFromClusterSecret(t *testing.T) {
	secret := secretOf(t, strings.Repeat("gossip-", 6))
	cfg := secretNodeConfig(t)
	cfg.ClusterSecret, cfg.Gossip = secret, &membership.Config{BindAddr: "127.0.0.1:0"}
	p, err := nodeproc.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	gw, err := membership.Start(membership.Config{BindAddr: "127.0.0.1:0", Seeds: []string{p.Members.LocalAddr()},
		SecretKey: secret.GossipKey(), Meta: membership.Meta{ID: "gw", Role: membership.RoleGateway}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Shutdown()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := p.Members.Member("gw"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a gateway with the key derived from the cluster secret never joined the node's gossip")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
