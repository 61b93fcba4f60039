package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"log/slog"
	"net/http"

	"github.com/lunora/lunora/tlsconf"
	"google.golang.org/grpc"
)

// clusterTLSFlags are -tls-ca, -tls-cert and -tls-key: the cluster's
// mutual TLS, for serve (node API, Raft, HTTP) and for the subcommands
// that call a node (status, remove-node, backup).
type clusterTLSFlags struct{ ca, cert, key string }

func (f *clusterTLSFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.ca, "tls-ca", "", "cluster mutual TLS: PEM file of the cluster CA; peers must present a certificate it signed (with -tls-cert and -tls-key; the files are reloaded when they change)")
	fs.StringVar(&f.cert, "tls-cert", "", "cluster mutual TLS: PEM certificate of this process, signed by -tls-ca, for serverAuth and clientAuth")
	fs.StringVar(&f.key, "tls-key", "", "cluster mutual TLS: PEM private key of -tls-cert")
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
	if !f.on() {
		return nil, http.DefaultClient, "http", nil
	}
	r, err := tlsconf.New(tlsconf.Config{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key,
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, nil, "", err
	}
	cfg, err := r.ClientConfig()
	if err != nil {
		return nil, nil, "", err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return []grpc.DialOption{tlsconf.DialOption(cfg)}, &http.Client{Transport: tr}, "https", nil
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
	if o.tls.on() && o.gossipAddr != "" && len(o.gossipKey) == 0 && !o.gossipAllowPlaintext {
		return errors.New("mutual TLS is on but gossip would be plaintext: give -gossip-key (or LUNORA_GOSSIP_KEY), or -gossip-allow-plaintext to accept it")
	}
	return nil
}
