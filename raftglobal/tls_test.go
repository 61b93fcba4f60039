package raftglobal

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/tlsconf"
	"github.com/lunora/lunora/tlsconf/testcerts"
)

// clusterTLS issues a certificate of ca for name and returns the server
// and client TLS configurations of a node holding it.
func clusterTLS(t *testing.T, ca *testcerts.CA, name string) *tlsconf.Reloader {
	t.Helper()
	dir := t.TempDir()
	leaf, err := ca.Issue(name, testcerts.ServerAndClient)
	if err != nil {
		t.Fatal(err)
	}
	caPath, err := ca.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := leaf.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tlsconf.New(tlsconf.Config{CAFile: caPath, CertFile: cert, KeyFile: key,
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func withTLS(t *testing.T, r *tlsconf.Reloader) func(*Config) {
	return func(cfg *Config) {
		var err error
		if cfg.TLSServer, err = r.ServerConfig(tlsconf.RequireClientCert); err != nil {
			t.Fatal(err)
		}
		if cfg.TLSClient, err = r.ClientConfig(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRaftOverTLS: three voters whose Raft transport is TLS replicate;
// a plaintext Raft connection to one of them is refused, and so is a TLS
// one with a certificate of another CA, while one with a certificate of
// the cluster CA is answered.
func TestRaftOverTLS(t *testing.T) {
	ca, err := testcerts.NewCA("cluster")
	if err != nil {
		t.Fatal(err)
	}
	stores := startTCPCluster(t, 3, withTLS(t, clusterTLS(t, ca, "node")))
	ctx := ctxT(t, 30*time.Second)
	res, err := stores[0].Write(ctx, Command{SQL: []string{"INSERT INTO bench (v) VALUES ('over tls')"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		for _, s := range stores {
			if s.AppliedIndex() < res.Seq {
				return fmt.Errorf("%s applied %d, want %d", s.NodeID(), s.AppliedIndex(), res.Seq)
			}
		}
		return nil
	})

	target := raft.ServerAddress(stores[1].Addr())
	vote := func(trans raft.Transport) error {
		var resp raft.RequestVoteResponse
		return trans.RequestVote("t1", target, &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(trans.LocalAddr())}, Term: 1, LastLogIndex: 0,
		}, &resp)
	}
	logger := hclog.NewNullLogger()

	plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 2*time.Second, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := vote(plain); err == nil {
		t.Fatal("a plaintext Raft RPC to a TLS transport was answered")
	} else {
		t.Logf("plaintext Raft RPC: %v", err)
	}

	other, err := testcerts.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	stranger := clusterTLS(t, other, "stranger")
	cfg := Config{}
	withTLS(t, stranger)(&cfg)
	// The stranger accepts any server certificate: only the server's
	// check of the client can refuse it.
	cfg.TLSClient.VerifyConnection = nil
	st, err := NewTLSTransport("127.0.0.1:0", nil, cfg.TLSServer, cfg.TLSClient, 1, 2*time.Second, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := vote(st); err == nil {
		t.Fatal("a Raft RPC with another CA's certificate was answered")
	} else if !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("Raft RPC with another CA's certificate: %v", err)
	}

	member := Config{}
	withTLS(t, clusterTLS(t, ca, "member"))(&member)
	mt, err := NewTLSTransport("127.0.0.1:0", nil, member.TLSServer, member.TLSClient, 1, 2*time.Second, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer mt.Close()
	if err := vote(mt); err != nil {
		t.Fatalf("a Raft RPC with a cluster certificate: %v", err)
	}
}
