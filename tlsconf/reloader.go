package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often, at most, a Reloader reads its files
// again (on a handshake: an idle process reads nothing).
const DefaultCheckInterval = time.Second

// Config names the files of a Reloader.
type Config struct {
	// CAFile is the PEM bundle of the CA certificates peers must chain to.
	// Empty for a certificate that only serves (a public listener): such a
	// Reloader makes no client or mutual-TLS configuration.
	CAFile string
	// CertFile is this process's PEM certificate, then any intermediates;
	// KeyFile its PEM private key.
	CertFile, KeyFile string
	// Usages are the extended key usages the certificate must allow (for
	// example both ServerAuth and ClientAuth for a node, which serves and
	// dials); checked at load so that a wrong certificate fails at start,
	// not at a peer's first handshake. None: not checked.
	Usages []x509.ExtKeyUsage
	// CheckInterval is how often, at most, the files are read again to see
	// whether they changed; DefaultCheckInterval when zero.
	CheckInterval time.Duration
	// Logger receives reloads and refused replacements; discarded when nil.
	Logger *slog.Logger
}

// Reloader holds a certificate, its key and (optionally) a CA pool loaded
// from files, and reloads them when the files change. Its tls.Configs
// call back into it on every handshake: at most once per CheckInterval
// the files are read again, and if they changed and are valid together the
// new material is used from then on. A replacement that does not load (a
// key not matching its certificate, a certificate not signed by the CA —
// say, the files caught half-written) is logged and the previous material
// is kept; it is tried again at the next check.
//
// Peers are verified against the CA: their certificate must chain to it
// and allow the usage (ServerAuth for a server, ClientAuth for a client).
// Host names are not checked — holding a certificate of the cluster CA is
// what makes a process a cluster member, so that CA must issue
// certificates to cluster members only.
//
// A Reloader is safe for concurrent use.
type Reloader struct {
	cfg Config
	log *slog.Logger
	cur atomic.Pointer[material]

	mu        sync.Mutex // serializes checks
	lastCheck time.Time
	refused   [3][]byte // contents of the last refused replacement (logged once)
}

// material is one loaded generation of the files.
type material struct {
	caPEM, certPEM, keyPEM []byte
	cert                   *tls.Certificate
	pool                   *x509.CertPool // nil without CAFile
}

// New loads the files now; an error names the file and what is wrong.
func New(cfg Config) (*Reloader, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tlsconf: a certificate file and a key file are required")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{cfg: cfg, log: log}
	m, err := r.read()
	if err != nil {
		return nil, err
	}
	if err := r.load(m); err != nil {
		return nil, err
	}
	r.cur.Store(m)
	r.lastCheck = time.Now()
	return r, nil
}

// read reads the three files.
func (r *Reloader) read() (*material, error) {
	m := &material{}
	var err error
	if r.cfg.CAFile != "" {
		if m.caPEM, err = os.ReadFile(r.cfg.CAFile); err != nil {
			return nil, fmt.Errorf("tlsconf: read the CA file: %w", err)
		}
	}
	if m.certPEM, err = os.ReadFile(r.cfg.CertFile); err != nil {
		return nil, fmt.Errorf("tlsconf: read the certificate file: %w", err)
	}
	if m.keyPEM, err = os.ReadFile(r.cfg.KeyFile); err != nil {
		return nil, fmt.Errorf("tlsconf: read the key file: %w", err)
	}
	return m, nil
}

// load parses and checks m's contents, filling its cert and pool.
func (r *Reloader) load(m *material) error {
	if r.cfg.CAFile != "" {
		pool, n, err := parseCAs(m.caPEM)
		if err != nil {
			return fmt.Errorf("tlsconf: CA file %s: %w", r.cfg.CAFile, err)
		}
		if n == 0 {
			return fmt.Errorf("tlsconf: CA file %s holds no PEM certificate", r.cfg.CAFile)
		}
		m.pool = pool
	}
	cert, err := tls.X509KeyPair(m.certPEM, m.keyPEM)
	if err != nil {
		return fmt.Errorf("tlsconf: certificate %s with key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	leaf := cert.Leaf // set by X509KeyPair
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("tlsconf: certificate %s expired at %s", r.cfg.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("tlsconf: certificate %s is not valid before %s", r.cfg.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	for _, u := range r.cfg.Usages {
		if !allows(leaf, u) {
			return fmt.Errorf("tlsconf: certificate %s does not allow %s (its extended key usage must include it)", r.cfg.CertFile, usageName(u))
		}
	}
	if m.pool != nil {
		if err := verifyChain(m.pool, leafAndIntermediates(&cert), x509.ExtKeyUsageAny, now); err != nil {
			return fmt.Errorf("tlsconf: certificate %s is not signed by the CA in %s: %w", r.cfg.CertFile, r.cfg.CAFile, err)
		}
	}
	m.cert = &cert
	return nil
}

func parseCAs(data []byte) (*x509.CertPool, int, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, 0, err
		}
		pool.AddCert(c)
		n++
	}
	return pool, n, nil
}

func allows(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 {
		return true // no extension: any usage (RFC 5280)
	}
	for _, have := range c.ExtKeyUsage {
		if have == u || have == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "serverAuth"
	case x509.ExtKeyUsageClientAuth:
		return "clientAuth"
	}
	return fmt.Sprintf("extended key usage %d", u)
}

func leafAndIntermediates(c *tls.Certificate) []*x509.Certificate {
	out := []*x509.Certificate{c.Leaf}
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			out = append(out, ic)
		}
	}
	return out
}

// verifyChain checks that chain[0] chains to pool through chain[1:] and
// allows usage.
func verifyChain(pool *x509.CertPool, chain []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: now})
	return err
}

// check reads the files again if CheckInterval has passed since the last
// check, and switches to their contents if they changed and load.
func (r *Reloader) check() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.lastCheck) < r.cfg.CheckInterval {
		return
	}
	r.lastCheck = now
	old := r.cur.Load()
	m, err := r.read()
	if err != nil {
		r.log.Warn("TLS files could not be read again; keeping the loaded certificate", "err", err)
		return
	}
	if bytes.Equal(m.caPEM, old.caPEM) && bytes.Equal(m.certPEM, old.certPEM) && bytes.Equal(m.keyPEM, old.keyPEM) {
		return
	}
	if err := r.load(m); err != nil {
		contents := [3][]byte{m.caPEM, m.certPEM, m.keyPEM}
		if !bytes.Equal(contents[0], r.refused[0]) || !bytes.Equal(contents[1], r.refused[1]) || !bytes.Equal(contents[2], r.refused[2]) {
			r.refused = contents
			r.log.Error("TLS files changed but do not load; keeping the previous certificate", "err", err)
		}
		return
	}
	r.cur.Store(m)
	r.refused = [3][]byte{}
	r.log.Info("TLS certificate reloaded", "cert", r.cfg.CertFile, "serial", m.cert.Leaf.SerialNumber.String(), "not_after", m.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

// Certificate is the certificate in use (after checking the files).
func (r *Reloader) Certificate() *tls.Certificate {
	r.check()
	return r.cur.Load().cert
}

// HasCA reports whether the Reloader verifies peers (Config.CAFile set).
func (r *Reloader) HasCA() bool { return r.cfg.CAFile != "" }

// ClientAuth is what a server configuration asks of clients.
type ClientAuth int

const (
	// NoClientCert asks clients for no certificate (a public listener).
	NoClientCert ClientAuth = iota
	// RequireClientCert refuses, in the handshake, a client without a
	// certificate signed by the CA.
	RequireClientCert
	// VerifyClientCertIfGiven accepts a client without a certificate but
	// refuses one whose certificate is not signed by the CA; a handler
	// tells them apart with PeerVerified.
	VerifyClientCertIfGiven
)

// ServerConfig is a tls.Config for a listener serving this certificate.
// Asking for client certificates needs the CA (Config.CAFile).
func (r *Reloader) ServerConfig(auth ClientAuth) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		},
	}
	if auth == NoClientCert {
		return c, nil
	}
	if !r.HasCA() {
		return nil, errors.New("tlsconf: verifying client certificates needs a CA file")
	}
	required := auth == RequireClientCert
	c.ClientAuth = tls.RequestClientCert
	if required {
		c.ClientAuth = tls.RequireAnyClientCert
	}
	// The chain is verified here rather than by crypto/tls so that it is
	// verified against the current CA, which may have been reloaded.
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			if required {
				return errors.New("tlsconf: the client presented no certificate")
			}
			return nil
		}
		r.check()
		if err := verifyChain(r.cur.Load().pool, cs.PeerCertificates, x509.ExtKeyUsageClientAuth, time.Now()); err != nil {
			return fmt.Errorf("tlsconf: client certificate not signed by the cluster CA: %w", err)
		}
		return nil
	}
	return c, nil
}

// ClientConfig is a tls.Config for dialing a peer: it presents this
// certificate and accepts a server whose certificate chains to the CA.
func (r *Reloader) ClientConfig() (*tls.Config, error) {
	if !r.HasCA() {
		return nil, errors.New("tlsconf: verifying servers needs a CA file")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// crypto/tls's own verification is off because it checks the
		// host name and a fixed CA pool; VerifyConnection checks the
		// chain against the current CA instead (see Reloader).
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			r.check()
			if err := verifyChain(r.cur.Load().pool, cs.PeerCertificates, x509.ExtKeyUsageServerAuth, time.Now()); err != nil {
				return fmt.Errorf("tlsconf: server certificate not signed by the cluster CA: %w", err)
			}
			return nil
		},
	}, nil
}

// PeerVerified reports whether the peer of a connection served with
// ServerConfig presented a certificate (which the handshake verified).
func PeerVerified(cs *tls.ConnectionState) bool {
	return cs != nil && cs.HandshakeComplete && len(cs.PeerCertificates) > 0
}
