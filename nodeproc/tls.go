package nodeproc

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/lunora/lunora/tlsconf"
	"google.golang.org/grpc"
)

// checkSecurity refuses configurations that would leave a secured
// cluster with a plaintext part: mutual TLS without a gossip key (unless
// AllowPlaintextGossip), or cluster TLS or a cluster secret in dev mode
// (one process, no peers; PublicTLS is what secures its listeners); and a
// node exposed beyond loopback with no cluster authentication
// (CheckExposure).
func (cfg *Config) checkSecurity() error {
	if cfg.Dev && cfg.ClusterSecret != nil {
		return errors.New("nodeproc: dev mode has no peers: the cluster secret does not apply")
	}
	if err := cfg.CheckExposure(); err != nil {
		return err
	}
	if cfg.ClusterTLS == nil {
		if cfg.PublicTLS != nil && !cfg.Dev {
			return errors.New("nodeproc: PublicTLS is for dev mode's public API; a node serving the node API uses ClusterTLS")
		}
		return nil
	}
	if !cfg.ClusterTLS.HasCA() {
		return errors.New("nodeproc: cluster TLS needs the cluster CA, to verify peers")
	}
	if cfg.Dev {
		return errors.New("nodeproc: dev mode has no peers: cluster TLS does not apply (PublicTLS serves its API over TLS)")
	}
	if cfg.Gossip != nil && len(cfg.Gossip.SecretKey) == 0 && !cfg.AllowPlaintextGossip {
		return errors.New("nodeproc: mutual TLS is on but gossip is not encrypted: give the gossip key (-gossip-key or LUNORA_GOSSIP_KEY), or allow plaintext gossip explicitly (-gossip-allow-plaintext)")
	}
	return nil
}

// clusterTLS is the TLS configuration of a node in a cluster with mutual
// TLS: its node API and Raft transport require a client certificate of
// the cluster CA, it dials peers with its own; its HTTP listener (ops
// endpoints, backups) is HTTPS and verifies a client certificate if one is
// given — backups require one (requireClusterCert).
type clusterTLS struct {
	grpcServer, httpServer, raftServer, client *tls.Config
}

func newClusterTLS(r *tlsconf.Reloader) (*clusterTLS, error) {
	var c clusterTLS
	var err error
	if c.grpcServer, err = r.ServerConfig(tlsconf.RequireClientCert); err != nil {
		return nil, err
	}
	c.raftServer = c.grpcServer.Clone()
	if c.httpServer, err = r.ServerConfig(tlsconf.VerifyClientCertIfGiven); err != nil {
		return nil, err
	}
	if c.client, err = r.ClientConfig(); err != nil {
		return nil, err
	}
	return &c, nil
}

// dialOptions are the node-API client options of a node: its certificate
// when the cluster has mutual TLS, none (plaintext) otherwise.
func (c *clusterTLS) dialOptions() []grpc.DialOption {
	if c == nil {
		return nil
	}
	return []grpc.DialOption{tlsconf.DialOption(c.client)}
}

// requireClusterCert answers 401 to a request for path from a client
// without a certificate of the cluster CA (the handshake already refused
// one of another CA).
func requireClusterCert(path string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path && !tlsconf.PeerVerified(r.TLS) {
			w.Header().Set("WWW-Authenticate", `TLS realm="lunora cluster"`)
			http.Error(w, "unauthenticated: "+path+" needs a client certificate of the cluster CA", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// warnPlaintext logs, loudly, each listener of a node without cluster TLS
// that is reachable from beyond this host: unauthenticated, or (secret)
// authenticated by the cluster secret but not encrypted.
func warnPlaintext(log *slog.Logger, secret bool, listeners map[string]string) {
	for name, addr := range listeners {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			continue
		}
		if secret {
			log.Warn(fmt.Sprintf("SECURITY: the %s listener %s is not on loopback and plaintext: the cluster secret keeps out whoever lacks it, but anyone who can watch this network can read the traffic and the secret's token. Give -tls-ca, -tls-cert and -tls-key (mutual TLS) outside a trusted network.", name, addr))
			continue
		}
		log.Warn(fmt.Sprintf("SECURITY: the %s listener %s is plaintext and unauthenticated, and not on loopback: anyone who reaches it can act as a cluster member (-insecure-node-api). Give a cluster secret (-cluster-secret-file) or, better, -tls-ca, -tls-cert and -tls-key (mutual TLS) outside a trusted network.", name, addr))
	}
}
