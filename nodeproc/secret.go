package nodeproc

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/internal/cli"
)

// NodeService is the prefix of the node API's gRPC methods, which the
// cluster secret guards (lunora.v1.Node; not lunora.v1.Lunora, dev mode's
// public API on the same server, nor health checks and reflection).
const NodeService = "/lunora.v1.Node/"

// requireClusterSecret answers 401 to a request for path without the
// cluster token in its Authorization header.
func requireClusterSecret(path string, s *clustersecret.Secret, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path && !s.CheckRequest(r) {
			w.Header().Set("WWW-Authenticate", clustersecret.HTTPScheme+` realm="lunora cluster"`)
			http.Error(w, "unauthenticated: "+path+" needs the cluster secret (lunora-node backup -cluster-secret-file FILE)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CheckExposure refuses a node (not in dev mode) whose node API, Raft or
// HTTP (backups) listener would be reachable from beyond this host with
// nothing to tell cluster members from anyone else: neither mutual TLS
// nor a cluster secret — unless InsecureNodeAPI says so explicitly.
func (cfg *Config) CheckExposure() error {
	if cfg.Dev || cfg.ClusterTLS != nil || cfg.ClusterSecret != nil || cfg.InsecureNodeAPI {
		return nil
	}
	listeners := map[string]string{"-grpc-addr (node API)": cfg.GRPCAddr, "-http-addr (backups)": cfg.HTTPAddr}
	if cfg.Global.Transport == nil && cfg.RaftAddr != "" { // none: raftglobal refuses it
		listeners["-raft-addr (Raft)"] = cfg.RaftAddr
	}
	var open []string
	for name, addr := range listeners {
		if !cli.IsLoopback(addr) {
			open = append(open, fmt.Sprintf("%s %s", name, addr))
		}
	}
	if len(open) == 0 {
		return nil
	}
	sort.Strings(open)
	verb, them := "is", "it"
	if len(open) > 1 {
		verb, them = "are", "them"
	}
	return fmt.Errorf("nodeproc: %s %s not on loopback, with no cluster authentication: anyone who reaches %s could move shards, remove nodes, manage API keys or copy the data. Give a cluster secret (-cluster-secret-file, at least %d bytes, the same file on every node and gateway) or mutual TLS (-tls-ca, -tls-cert, -tls-key); or bind to loopback; or accept it explicitly with -insecure-node-api",
		strings.Join(open, ", "), verb, them, clustersecret.MinLen)
}
