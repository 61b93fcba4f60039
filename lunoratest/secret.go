package lunoratest

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/lunora/lunora/clustersecret"
	"google.golang.org/grpc"
)

// ClusterSecret is a throwaway cluster secret in a file of a temporary
// directory: a cluster started with it (ClusterOptions.Secret) requires
// it on every node-API call, Raft connection and backup, and its gateway
// and node clients send it.
type ClusterSecret struct {
	// File holds the secret (64 hex digits and a newline).
	File   string
	Secret *clustersecret.Secret
}

// NewClusterSecret makes a random secret for one test.
func NewClusterSecret(t testing.TB) *ClusterSecret {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "cluster-secret")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := clustersecret.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return &ClusterSecret{File: path, Secret: s}
}

// Args is the flag naming the file: for lunora-node serve, lunora-gateway
// and the lunora-node subcommands calling a node alike.
func (s *ClusterSecret) Args() []string { return []string{"-cluster-secret-file", s.File} }

// DialOptions send the secret with every node-API call.
func (s *ClusterSecret) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{s.Secret.DialOption()}
}

// HTTPClient sends the secret with every request (a node's backups).
func (s *ClusterSecret) HTTPClient() *http.Client {
	return &http.Client{Transport: s.Secret.Transport(nil)}
}
