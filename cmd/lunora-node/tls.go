package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"

	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/tlsconf"
	"google.golang.org/grpc"
)

// clusterTLSFlags are -tls-ca, -tls-cert and -tls-key — the cluster's
// mutual TLS — and -cluster-secret-file, the cluster's shared secret: for
// serve (node API, Raft, HTTP) and for the subcommands that call a node
// (status, keys, remove-node, backup).
type clusterTLSFlags struct{ ca, cert, key, secret string }

func (f *clusterTLSFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.ca, "tls-ca", "", "cluster mutual TLS: PEM file of the cluster CA; peers must present a certificate it signed (with -tls-cert and -tls-key; the files are reloaded when they change)")
	fs.StringVar(&f.cert, "tls-cert", "", "cluster mutual TLS: PEM certificate of this process, signed by -tls-ca, for serverAuth and clientAuth")
	fs.StringVar(&f.key, "tls-key", "", "cluster mutual TLS: PEM private key of -tls-cert")
	fs.StringVar(&f.secret, "cluster-secret-file", os.Getenv(clustersecret.EnvFile), "file holding the cluster's shared secret (at least 32 bytes, e.g. openssl rand -hex 32; the same file on every node and gateway): node-API calls, Raft and backups must carry it; default $"+clustersecret.EnvFile)
}

// loadSecret reads -cluster-secret-file (nil, nil without it).
func (f *clusterTLSFlags) loadSecret() (*clustersecret.Secret, error) {
	if f.secret == "" {
		return nil, nil
	}
	return clustersecret.Load(f.secret)
}

func (f *clusterTLSFlags) on() bool { return f.ca != "" || f.cert != "" || f.key != "" }

func (f *clusterTLSFlags) check() error {
	if f.on() && (f.ca == "" || f.cert == "" || f.key == "") {
		return errors.New("-tls-ca, -tls-cert and -tls-key go together")
	}
	return nil
}

// reloader loads the files (nil, nil without the flags): a node's
// certificate must allow serving and dialing.
func (f *clusterTLSFlags) reloader(log *slog.Logger) (*tlsconf.Reloader, error) {
	if !f.on() {
		return nil, nil
	}
	return tlsconf.New(tlsconf.Config{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key, Logger: log,
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
}

// client is what a subcommand calling a node needs: the node-API dial
// options and an HTTP client with the scheme of the node's HTTP listener.
func (f *clusterTLSFlags) client() (opts []grpc.DialOption, hc *http.Client, scheme string, err error) {
	if err := f.check(); err != nil {
		return nil, nil, "", err
	}
	secret, err := f.loadSecret()
	if err != nil {
		return nil, nil, "", err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	scheme = "http"
	if f.on() {
		r, err := tlsconf.New(tlsconf.Config{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key,
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return nil, nil, "", err
		}
		cfg, err := r.ClientConfig()
		if err != nil {
			return nil, nil, "", err
		}
		tr.TLSClientConfig = cfg
		opts = append(opts, tlsconf.DialOption(cfg))
		scheme = "https"
	}
	hc = &http.Client{Transport: tr}
	if secret != nil {
		opts = append(opts, secret.DialOption())
		hc.Transport = secret.Transport(tr)
	}
	return opts, hc, scheme, nil
}

// publicTLSFlags are -public-tls-cert and -public-tls-key: dev mode's
// public API over TLS.
type publicTLSFlags struct{ cert, key string }

func (f *publicTLSFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.cert, "public-tls-cert", "", "dev mode: PEM certificate (and chain) serving the public API over TLS (HTTPS and gRPC with TLS; reloaded when it changes)")
	fs.StringVar(&f.key, "public-tls-key", "", "dev mode: PEM private key of -public-tls-cert")
}

func (f *publicTLSFlags) check(dev bool) error {
	switch {
	case f.cert == "" && f.key == "":
		return nil
	case f.cert == "" || f.key == "":
		return errors.New("-public-tls-cert and -public-tls-key go together")
	case !dev:
		return errors.New("-public-tls-cert is for dev mode (lunora-node serve has no public API: the gateway serves it; secure the node with -tls-ca, -tls-cert, -tls-key)")
	}
	return nil
}

func (f *publicTLSFlags) reloader(log *slog.Logger) (*tlsconf.Reloader, error) {
	if f.cert == "" {
		return nil, nil
	}
	return tlsconf.New(tlsconf.Config{CertFile: f.cert, KeyFile: f.key, Logger: log,
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
}

// checkSecurityFlags: cluster TLS is for serve, and with it gossip must be
// encrypted unless plaintext gossip is allowed explicitly.
func checkSecurityFlags(o *options) error {
	if err := o.tls.check(); err != nil {
		return err
	}
	if err := o.publicTLS.check(o.dev); err != nil {
		return err
	}
	if o.tls.on() && o.dev {
		return errors.New("-tls-ca/-tls-cert/-tls-key are for a cluster (lunora-node serve); dev mode has no peers — use -public-tls-cert and -public-tls-key to serve its API over TLS")
	}
	if o.tls.secret != "" && o.dev {
		return errors.New("-cluster-secret-file is for a cluster (lunora-node serve); dev mode has no peers")
	}
	if o.insecureNodeAPI && o.dev {
		return errors.New("-insecure-node-api is for lunora-node serve; dev mode listens on loopback only")
	}
	// With a cluster secret and no -gossip-key, gossip is encrypted with a
	// key derived from the secret.
	if o.tls.on() && o.tls.secret == "" && o.gossipAddr != "" && len(o.gossipKey) == 0 && !o.gossipAllowPlaintext {
		return errors.New("mutual TLS is on but gossip would be plaintext: give -gossip-key (or LUNORA_GOSSIP_KEY), or -gossip-allow-plaintext to accept it")
	}
	return nil
}
