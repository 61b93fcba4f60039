package lunoratest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/lunora/lunora/tlsconf"
	"github.com/lunora/lunora/tlsconf/testcerts"
	"google.golang.org/grpc"
)

// ClusterTLS is a throwaway cluster CA with certificates for the
// processes of a test, in a temporary directory: a cluster started with
// it (ClusterOptions.TLS) runs with mutual TLS between every process, and
// its gateway serves its public API over TLS.
type ClusterTLS struct {
	t   testing.TB
	CA  *testcerts.CA
	Dir string
	// CAFile is the cluster CA's PEM file.
	CAFile string
	// GossipKey is a base64 gossip key given to every process.
	GossipKey string

	mu     sync.Mutex
	issued map[string]bool
	client *tls.Config
	hc     *http.Client
}

// NewClusterTLS makes a CA and a gossip key for one test.
func NewClusterTLS(t testing.TB) *ClusterTLS {
	t.Helper()
	ca, err := testcerts.NewCA("lunora test cluster CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, err := ca.WriteCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	return &ClusterTLS{t: t, CA: ca, Dir: dir, CAFile: caFile, GossipKey: base64.StdEncoding.EncodeToString(key), issued: map[string]bool{}}
}

// Paths returns the certificate and key files of name (as Issue writes
// them).
func (c *ClusterTLS) Paths(name string) (cert, key string) {
	return filepath.Join(c.Dir, name+".crt"), filepath.Join(c.Dir, name+".key")
}

// Issue writes a fresh certificate of the CA for name (replacing one
// already there, atomically: a process using it picks it up) and returns
// its serial.
func (c *ClusterTLS) Issue(name string, u testcerts.Usage) *big.Int {
	c.t.Helper()
	leaf, err := c.CA.Issue(name, u)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, _, err := leaf.Write(c.Dir, name); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.issued[name] = true
	c.mu.Unlock()
	return leaf.Serial
}

func (c *ClusterTLS) ensure(name string, u testcerts.Usage) (cert, key string) {
	c.mu.Lock()
	done := c.issued[name]
	c.mu.Unlock()
	if !done {
		c.Issue(name, u)
	}
	return c.Paths(name)
}

// NodeArgs are lunora-node's flags for node id: its certificate (issued
// on first use), the CA and the gossip key.
func (c *ClusterTLS) NodeArgs(id string) []string {
	c.t.Helper()
	cert, key := c.ensure(id, testcerts.ServerAndClient)
	return []string{"-tls-ca", c.CAFile, "-tls-cert", cert, "-tls-key", key, "-gossip-key", c.GossipKey}
}

// GatewayArgs are lunora-gateway's flags: a client certificate for the
// nodes, a certificate for its public listeners (both issued on first
// use), the CA and the gossip key.
func (c *ClusterTLS) GatewayArgs() []string {
	c.t.Helper()
	cert, key := c.ensure("gateway", testcerts.ClientOnly)
	pcert, pkey := c.ensure("public", testcerts.ServerOnly)
	return []string{"-tls-ca", c.CAFile, "-tls-cert", cert, "-tls-key", key,
		"-public-tls-cert", pcert, "-public-tls-key", pkey, "-gossip-key", c.GossipKey}
}

// ClientArgs are the flags of a lunora-node subcommand calling a node
// (status, remove-node, backup): an operator's client certificate.
func (c *ClusterTLS) ClientArgs() []string {
	c.t.Helper()
	cert, key := c.ensure("operator", testcerts.ClientOnly)
	return []string{"-tls-ca", c.CAFile, "-tls-cert", cert, "-tls-key", key}
}

// ClientConfig is a TLS client configuration with a certificate of the
// cluster CA ("test-client"), verifying servers against the CA: for the
// node API, a node's HTTP listener and the gateway's public listeners.
func (c *ClusterTLS) ClientConfig() *tls.Config {
	c.t.Helper()
	c.mu.Lock()
	cfg := c.client
	c.mu.Unlock()
	if cfg != nil {
		return cfg
	}
	cert, key := c.ensure("test-client", testcerts.ClientOnly)
	r, err := tlsconf.New(tlsconf.Config{CAFile: c.CAFile, CertFile: cert, KeyFile: key})
	if err != nil {
		c.t.Fatal(err)
	}
	if cfg, err = r.ClientConfig(); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.client = cfg
	c.mu.Unlock()
	return cfg
}

// DialOptions are the node-API client options of ClientConfig.
func (c *ClusterTLS) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{tlsconf.DialOption(c.ClientConfig())}
}

// RootCAs is a pool of the cluster CA alone, to verify a server (such as
// the gateway's public listeners) the standard way, host name included.
func (c *ClusterTLS) RootCAs() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.CA.Cert)
	return p
}

// HTTPClient is an HTTPS client with ClientConfig (one for the test,
// whose idle connections are closed when it ends).
func (c *ClusterTLS) HTTPClient() *http.Client {
	cfg := c.ClientConfig()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg
		c.t.Cleanup(tr.CloseIdleConnections)
		c.hc = &http.Client{Transport: tr}
	}
	return c.hc
}

// NewHTTPSClient is NewHTTPClient for a public API served over TLS by a
// certificate of tlsc's CA.
func NewHTTPSClient(t testing.TB, addr string, tlsc *ClusterTLS) *HTTPClient {
	c := NewHTTPClient(t, addr)
	tr := c.Client.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: tlsc.RootCAs()}
	c.Scheme = "https"
	return c
}

// url is the address of path at c.
func (c *HTTPClient) url(path string) string {
	scheme := c.Scheme
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + c.Addr + path
}
