package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"log/slog"
	"os"

	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/tlsconf"
	"google.golang.org/grpc"
)

// tlsOptions are the gateway's certificate flags: -tls-* for its calls to
// the nodes (the cluster's mutual TLS), -public-tls-* for its public
// listeners.
type tlsOptions struct {
	ca, cert, key         string
	secretFile            string // -cluster-secret-file
	publicCert, publicKey string
	gossipAllowPlaintext  bool
}

func (t *tlsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&t.ca, "tls-ca", "", "cluster mutual TLS: PEM file of the cluster CA; nodes must present a certificate it signed (with -tls-cert and -tls-key; the files are reloaded when they change)")
	fs.StringVar(&t.cert, "tls-cert", "", "cluster mutual TLS: PEM client certificate of this gateway, signed by -tls-ca, presented to the nodes")
	fs.StringVar(&t.key, "tls-key", "", "cluster mutual TLS: PEM private key of -tls-cert")
	fs.StringVar(&t.secretFile, "cluster-secret-file", os.Getenv(clustersecret.EnvFile), "file holding the cluster's shared secret (the nodes' file), sent with every node-API call; with -tls-* too if the nodes require both; default $"+clustersecret.EnvFile)
	fs.StringVar(&t.publicCert, "public-tls-cert", "", "PEM certificate (and chain) serving the public API over TLS: HTTPS on -http-addr, gRPC with TLS on -grpc-addr (reloaded when it changes)")
	fs.StringVar(&t.publicKey, "public-tls-key", "", "PEM private key of -public-tls-cert")
	fs.BoolVar(&t.gossipAllowPlaintext, "gossip-allow-plaintext", false, "with mutual TLS (-tls-*), gossip without -gossip-key (refused otherwise)")
}

func (t *tlsOptions) clusterOn() bool { return t.ca != "" || t.cert != "" || t.key != "" }

func (t *tlsOptions) check(o *options) error {
	switch {
	case t.clusterOn() && (t.ca == "" || t.cert == "" || t.key == ""):
		return errors.New("-tls-ca, -tls-cert and -tls-key go together")
	case (t.publicCert == "") != (t.publicKey == ""):
		return errors.New("-public-tls-cert and -public-tls-key go together")
	case t.clusterOn() && t.secretFile == "" && o.gossipAddr != "" && len(o.gossipKey) == 0 && !t.gossipAllowPlaintext:
		return errors.New("mutual TLS is on but gossip would be plaintext: give -gossip-key (or LUNORA_GOSSIP_KEY), or -gossip-allow-plaintext to accept it")
	}
	return nil
}

// load reads the certificate files and the cluster secret: the node-API
// dial options (none without -tls-* and -cluster-secret-file), the public
// listeners' certificate (nil without -public-tls-*) and the secret (nil
// without it).
func (t *tlsOptions) load(log *slog.Logger) ([]grpc.DialOption, *tlsconf.Reloader, *clustersecret.Secret, error) {
	var dial []grpc.DialOption
	var secret *clustersecret.Secret
	if t.secretFile != "" {
		var err error
		if secret, err = clustersecret.Load(t.secretFile); err != nil {
			return nil, nil, nil, err
		}
		dial = append(dial, secret.DialOption())
	}
	if t.clusterOn() {
		r, err := tlsconf.New(tlsconf.Config{CAFile: t.ca, CertFile: t.cert, KeyFile: t.key, Logger: log,
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return nil, nil, nil, err
		}
		cfg, err := r.ClientConfig()
		if err != nil {
			return nil, nil, nil, err
		}
		dial = append(dial, tlsconf.DialOption(cfg))
	}
	var public *tlsconf.Reloader
	if t.publicCert != "" {
		var err error
		if public, err = tlsconf.New(tlsconf.Config{CertFile: t.publicCert, KeyFile: t.publicKey, Logger: log,
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, nil, nil, err
		}
	}
	return dial, public, secret, nil
}
