package e2e_test

// The cluster's mutual TLS seen from outside: who a node refuses (on its
// node API, its Raft port, its backup endpoint), a certificate rotated on
// disk, and the start-up checks.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/tlsconf"
	"github.com/lunora/lunora/tlsconf/testcerts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// strangerTLS is a TLS client configuration with a certificate of
// another CA, which accepts any server (so only the node's check of the
// client can refuse it).
func strangerTLS(t *testing.T) *tls.Config {
	t.Helper()
	other := lunoratest.NewClusterTLS(t)
	cfg := other.ClientConfig().Clone()
	cfg.VerifyConnection = nil
	return cfg
}

// TestClusterMTLSRefusesStrangers: a node with mutual TLS serves the node
// API only to clients with a certificate of the cluster CA. A plaintext
// client, a TLS client without a certificate and one with another CA's
// certificate are refused — on every method (status, remove-node, shard
// registry), at the handshake — and a remove-node they attempt does not
// happen; the Raft port refuses plaintext and strangers the same way; the
// HTTP listener serves /healthz to anyone over HTTPS but backups only to
// a cluster certificate.
func TestClusterMTLSRefusesStrangers(t *testing.T) {
	b := lunoratest.Build(t)
	c := lunoratest.StartClusterWith(t, b, writeClusterSchema(t), 1, lunoratest.ClusterOptions{TLS: lunoratest.NewClusterTLS(t)})
	n1 := c.Nodes[0]
	// The node API serves a cluster certificate: the node joins its ring.
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		st, err := n1.Client().Status(ctxT(t))
		if err != nil {
			return err
		}
		if st.Cluster == nil || len(st.Cluster.Ring.Nodes) != 1 {
			return fmt.Errorf("ring %+v", st.Cluster)
		}
		return nil
	})

	anonymous := c.TLS.ClientConfig().Clone()
	anonymous.GetClientCertificate = nil
	for _, tc := range []struct {
		name string
		opt  grpc.DialOption
	}{
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials())},
		{"TLS without a client certificate", tlsconf.DialOption(anonymous)},
		{"a certificate of another CA", tlsconf.DialOption(strangerTLS(t))},
	} {
		cl, err := rpc.NewNodeClient(n1.GRPCAddr(), tc.opt)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if st, err := cl.Status(ctxT(t)); err == nil {
			t.Errorf("%s: Status answered: %+v", tc.name, st)
		} else {
			t.Logf("%s: Status: %v", tc.name, err)
		}
		if err := cl.RemoveNode(ctxT(t), api.RemoveRequest{NodeID: "n1", Force: true}); err == nil {
			t.Errorf("%s: RemoveNode answered", tc.name)
		}
		if _, _, err := cl.RegisterShard(ctxT(t), "k=intruder", "n1", false); err == nil {
			t.Errorf("%s: RegisterShard answered", tc.name)
		}
	}
	// The node is still itself: in the ring, no registered shard.
	st, err := n1.Client().Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster == nil || len(st.Cluster.Ring.Nodes) != 1 {
		t.Fatalf("after the strangers' attempts the ring is %+v", st.Cluster)
	}
	if ids, _, err := n1.Client().ListShards(ctxT(t), "", "", "", 100); err != nil || len(ids) != 0 {
		t.Fatalf("shards registered after the strangers' attempts: %v %v", ids, err)
	}

	// Raft: a plaintext RPC and a stranger's TLS RPC are not answered.
	vote := func(trans raft.Transport) error {
		var resp raft.RequestVoteResponse
		return trans.RequestVote("n1", raft.ServerAddress(n1.RaftAddr), &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(trans.LocalAddr())},
			Term:      1 << 40, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40,
		}, &resp)
	}
	plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 5*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := vote(plain); err == nil {
		t.Error("a plaintext Raft RPC was answered")
	}
	stranger := strangerTLS(t)
	st2, err := raftglobal.NewTLSTransport("127.0.0.1:0", nil, stranger, stranger, 1, 5*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if err := vote(st2); err == nil {
		t.Error("a Raft RPC with another CA's certificate was answered")
	}
	// The votes with a huge term reached nobody: n1 is still the leader.
	if rs, err := n1.RaftStatus(ctxT(t)); err != nil || rs.State != "Leader" || rs.Term >= 1<<40 {
		t.Fatalf("n1 after the Raft intruders: %+v %v", rs, err)
	}

	// HTTP: health over HTTPS without a client certificate; backups need one.
	pool := x509.NewCertPool()
	pool.AddCert(c.TLS.CA.Cert)
	anonHTTP := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer anonHTTP.CloseIdleConnections()
	get := func(hc *http.Client, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, "https://"+n1.HTTPAddr()+path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return resp.StatusCode, string(b)
	}
	if code, body := get(anonHTTP, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz over HTTPS without a client certificate: %d %s", code, body)
	}
	if code, body := get(anonHTTP, nodeproc.BackupPath); code != http.StatusUnauthorized {
		t.Fatalf("backup without a client certificate: %d %s, want 401", code, body)
	}
	if code, _ := get(c.TLS.HTTPClient(), nodeproc.BackupPath); code != http.StatusOK {
		t.Fatalf("backup with a cluster certificate: %d, want 200", code)
	}
	strangerHTTP := &http.Client{Transport: &http.Transport{TLSClientConfig: stranger}}
	defer strangerHTTP.CloseIdleConnections()
	if resp, err := strangerHTTP.Get("https://" + n1.HTTPAddr() + nodeproc.BackupPath); err == nil {
		resp.Body.Close()
		t.Fatalf("backup with another CA's certificate: %s", resp.Status)
	}

	// lunora-node backup: with an operator's certificate it completes;
	// without the flags it speaks plaintext HTTP, which the HTTPS listener
	// answers with 400.
	backup := func(args ...string) lunoratest.Result {
		return lunoratest.Run(t, lunoratest.Spec{Name: "lunora-node backup", Path: b.Node, CheckRace: b.Race,
			Args: append([]string{"backup", "-http", n1.HTTPAddr(), "-out", t.TempDir()}, args...)}, 2*time.Minute)
	}
	if r := backup(c.TLS.ClientArgs()...); r.ExitCode != 0 {
		t.Fatalf("lunora-node backup with an operator certificate: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	if r := backup(); r.ExitCode == 0 {
		t.Fatal("lunora-node backup without a certificate succeeded")
	} else if !strings.Contains(r.Stderr, "400 Bad Request") {
		t.Fatalf("plaintext backup: %s, want the HTTPS listener's 400", r.Stderr)
	}
}

// TestClusterMTLSCertificateSwappedOnDisk: a node's certificate replaced
// on disk (a new serial) is what new connections see, without a restart,
// and the cluster's own clients keep working across the swap.
func TestClusterMTLSCertificateSwappedOnDisk(t *testing.T) {
	b := lunoratest.Build(t)
	c := lunoratest.StartClusterWith(t, b, writeClusterSchema(t), 1, lunoratest.ClusterOptions{TLS: lunoratest.NewClusterTLS(t)})
	n1 := c.Nodes[0]
	serial := func(addr string) (string, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: c.TLS.ClientConfig()}
		conn, err := d.DialContext(ctxT(t), "tcp", addr)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	first, err := serial(n1.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	next := c.TLS.Issue("n1", testcerts.ServerAndClient).String()
	if next == first {
		t.Fatal("the new certificate has the old serial")
	}
	start := time.Now()
	for _, l := range []struct{ name, addr string }{{"node API", n1.GRPCAddr()}, {"Raft", n1.RaftAddr}, {"HTTP", n1.HTTPAddr()}} {
		lunoratest.WaitFor(t, 10*time.Second, func() error {
			got, err := serial(l.addr)
			if err != nil {
				return err
			}
			if got != next {
				return fmt.Errorf("%s still serves serial %s, want %s", l.name, got, next)
			}
			return nil
		})
	}
	t.Logf("new serial served %v after the swap", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(n1.Stderr(), "TLS certificate reloaded") {
		t.Error("the node did not log the reload")
	}
	// The node's own Raft and the tests' client keep working.
	if _, err := n1.Client().Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if rs, err := n1.RaftStatus(ctxT(t)); err != nil || rs.State != "Leader" {
		t.Fatalf("after the swap: %+v %v", rs, err)
	}
}

// TestNodeTLSStartupErrors: certificate problems and a mutual-TLS node
// with plaintext gossip stop lunora-node at start with a message that
// names the problem.
func TestNodeTLSStartupErrors(t *testing.T) {
	b := lunoratest.Build(t)
	schemaPath := writeClusterSchema(t)
	ctls := lunoratest.NewClusterTLS(t)
	args := ctls.NodeArgs("n1")
	cert, key := ctls.Paths("n1")
	other := lunoratest.NewClusterTLS(t)
	other.NodeArgs("x")
	otherCert, otherKey := other.Paths("x")
	ctls.GatewayArgs() // issues the gateway's client-only certificate
	gwCert, gwKey := ctls.Paths("gateway")
	missing := cert + ".missing"
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unreadable certificate", []string{"-tls-ca", ctls.CAFile, "-tls-cert", missing, "-tls-key", key}, "read the certificate file"},
		{"key of another certificate", []string{"-tls-ca", ctls.CAFile, "-tls-cert", cert, "-tls-key", otherKey}, "private key does not match"},
		{"certificate of another CA", []string{"-tls-ca", ctls.CAFile, "-tls-cert", otherCert, "-tls-key", otherKey}, "is not signed by the CA"},
		{"a client-only certificate", []string{"-tls-ca", ctls.CAFile, "-tls-cert", gwCert, "-tls-key", gwKey}, "does not allow serverAuth"},
		{"half the flags", []string{"-tls-cert", cert, "-tls-key", key}, "go together"},
		{"plaintext gossip", []string{"-tls-ca", ctls.CAFile, "-tls-cert", cert, "-tls-key", key, "-gossip-addr", "127.0.0.1:0"}, "gossip would be plaintext"},
	} {
		spec := lunoratest.NodeSpec(t, b, append([]string{"serve", "-schema", schemaPath, "-node-id", "n1"}, tc.args...)...)
		r := lunoratest.Run(t, spec, 60*time.Second)
		if r.ExitCode == 0 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want a failure naming %q", tc.name, r.ExitCode, r.Stderr, tc.want)
		}
	}
	// Explicitly allowed, plaintext gossip starts (and the full flags work).
	spec := lunoratest.NodeSpec(t, b, append([]string{"serve", "-schema", schemaPath, "-node-id", "n1", "-gossip-addr", "127.0.0.1:0", "-gossip-allow-plaintext"}, args[:6]...)...)
	p := lunoratest.Start(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := rpc.NewNodeClient(p.GRPCAddr(), ctls.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Status(ctx); err != nil {
		t.Fatalf("a node with -gossip-allow-plaintext: %v", err)
	}
}

// TestPlaintextNodeWarns: a node with neither mutual TLS nor a cluster
// secret whose node API is not on loopback refuses to start, naming the
// ways out; with -insecure-node-api it starts and says so loudly; with a
// cluster secret it starts, warning that the traffic is not encrypted; on
// loopback it needs neither and warns about nothing.
func TestPlaintextNodeWarns(t *testing.T) {
	b := lunoratest.Build(t)
	exposed := []string{"serve", "-schema", writeClusterSchema(t), "-node-id", "n1", "-grpc-addr", "0.0.0.0:0"}
	r := lunoratest.Run(t, lunoratest.NodeSpec(t, b, exposed...), 60*time.Second)
	if r.ExitCode == 0 || !strings.Contains(r.Stderr, "-grpc-addr (node API) 0.0.0.0:0 is not on loopback") ||
		!strings.Contains(r.Stderr, "-cluster-secret-file") || !strings.Contains(r.Stderr, "-insecure-node-api") {
		t.Fatalf("a plaintext node API on 0.0.0.0: exit %d: %s; want a refusal naming -cluster-secret-file and -insecure-node-api", r.ExitCode, r.Stderr)
	}
	// The warning is logged before LUNORA_READY, on stderr, which the
	// test may read a little later.
	warned := func(p *lunoratest.Process, parts ...string) error {
		for _, part := range parts {
			if !strings.Contains(p.Stderr(), part) {
				return fmt.Errorf("no %q in the node's log:\n%s", part, p.Stderr())
			}
		}
		return nil
	}
	p := lunoratest.Start(t, lunoratest.NodeSpec(t, b, append(exposed, "-insecure-node-api")...))
	lunoratest.WaitFor(t, 10*time.Second, func() error {
		return warned(p, "SECURITY: the node-API (gRPC) listener", "unauthenticated")
	})
	secret := lunoratest.NewClusterSecret(t)
	ps := lunoratest.Start(t, lunoratest.NodeSpec(t, b, append(exposed, secret.Args()...)...))
	lunoratest.WaitFor(t, 10*time.Second, func() error {
		return warned(ps, "SECURITY: the node-API (gRPC) listener", "the cluster secret keeps out")
	})
	p2 := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", writeClusterSchema(t), "-node-id", "n1"))
	if strings.Contains(p2.Stderr(), "SECURITY:") {
		t.Fatalf("a loopback-only node warned:\n%s", p2.Stderr())
	}
}

// TestGatewayTLSStartupErrors: the gateway's certificate problems, and
// mutual TLS with plaintext gossip, stop it at start naming the problem.
func TestGatewayTLSStartupErrors(t *testing.T) {
	b := lunoratest.Build(t)
	schemaPath := writeClusterSchema(t)
	ctls := lunoratest.NewClusterTLS(t)
	ctls.GatewayArgs()
	cert, key := ctls.Paths("gateway")
	pcert, pkey := ctls.Paths("public")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"half the flags", []string{"-tls-ca", ctls.CAFile}, "go together"},
		{"key of another certificate", []string{"-tls-ca", ctls.CAFile, "-tls-cert", cert, "-tls-key", pkey}, "private key does not match"},
		{"public certificate unreadable", []string{"-public-tls-cert", pcert + ".missing", "-public-tls-key", pkey}, "read the certificate file"},
		{"client certificate as the public one", []string{"-public-tls-cert", cert, "-public-tls-key", key}, "does not allow serverAuth"},
		{"plaintext gossip", []string{"-tls-ca", ctls.CAFile, "-tls-cert", cert, "-tls-key", key, "-gossip-addr", "127.0.0.1:0"}, "gossip would be plaintext"},
	} {
		r := lunoratest.Run(t, lunoratest.GatewaySpec(t, b, schemaPath, "127.0.0.1:1", tc.args...), 60*time.Second)
		if r.ExitCode == 0 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want a failure naming %q", tc.name, r.ExitCode, r.Stderr, tc.want)
		}
	}
}
