package raftglobal

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/clustersecret"
)

func testSecret(t *testing.T, text string) *clustersecret.Secret {
	t.Helper()
	s, err := clustersecret.New([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRaftWithClusterSecret: a 3-voter group whose transports carry the
// cluster secret replicates; a Raft RPC from a transport without the
// secret, or with another one, is not answered, while one with the
// secret is.
func TestRaftWithClusterSecret(t *testing.T) {
	secret := testSecret(t, strings.Repeat("cluster-", 5))
	stores := startTCPCluster(t, 3, func(c *Config) { c.Secret = secret })
	ctx := ctxT(t, 30*time.Second)
	res, err := stores[0].Write(ctx, Command{SQL: []string{"INSERT INTO bench (v) VALUES ('with a secret')"}})
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
	for name, s := range map[string]*clustersecret.Secret{"no secret": nil, "another secret": testSecret(t, strings.Repeat("stranger", 5))} {
		var trans *raft.NetworkTransport
		if s == nil {
			trans, err = raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 2*time.Second, logger)
		} else {
			trans, err = newTransport("127.0.0.1:0", nil, nil, nil, s, 1, 2*time.Second, logger)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := vote(trans); err == nil {
			t.Errorf("a Raft RPC with %s was answered", name)
		} else {
			t.Logf("Raft RPC with %s: %v", name, err)
		}
		trans.Close()
	}
	member, err := newTransport("127.0.0.1:0", nil, nil, nil, secret, 1, 2*time.Second, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	if err := vote(member); err != nil {
		t.Fatalf("a Raft RPC with the cluster secret: %v", err)
	}
}
