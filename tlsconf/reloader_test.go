package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/tlsconf"
	"github.com/lunora/lunora/tlsconf/testcerts"
)

type files struct{ dir, ca, cert, key string }

// must returns v, panicking on a setup error (which fails the test).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// writeNode writes ca and a fresh certificate of it for name into dir.
func writeNode(t *testing.T, dir string, ca *testcerts.CA, name string, u testcerts.Usage) (files, *testcerts.Leaf) {
	t.Helper()
	leaf := must(ca.Issue(name, u))
	caPath := must(ca.WriteCA(dir))
	cert, key, err := leaf.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return files{dir, caPath, cert, key}, leaf
}

func reloader(t *testing.T, f files, every time.Duration) *tlsconf.Reloader {
	t.Helper()
	return must(tlsconf.New(tlsconf.Config{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key, CheckInterval: every,
		Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// serve accepts TLS connections with cfg, completes each handshake and
// answers "ok"; handshake errors go to errs.
func serve(t *testing.T, cfg *tls.Config) (addr string, errs chan error) {
	t.Helper()
	ln := must(tls.Listen("tcp", "127.0.0.1:0", cfg))
	t.Cleanup(func() { ln.Close() })
	errs = make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				err := c.(*tls.Conn).Handshake()
				select {
				case errs <- err:
				default:
				}
				if err == nil {
					c.Write([]byte("ok"))
				}
			}()
		}
	}()
	return ln.Addr().String(), errs
}

// exchange dials addr with cfg and reads the server's "ok"; it returns
// the server's certificate serial.
func exchange(addr string, cfg *tls.Config) (*big.Int, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	if string(b) != "ok" {
		return nil, errors.New("no answer: " + string(b))
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestMutualTLSRefusesStrangers: a server requiring client certificates
// serves a client with a certificate of the cluster CA and refuses, in
// the handshake, one without a certificate and one whose certificate is
// signed by another CA; a client refuses a server of another CA.
func TestMutualTLSRefusesStrangers(t *testing.T) {
	t.Parallel()
	ca := must(testcerts.NewCA("cluster"))
	other := must(testcerts.NewCA("other"))
	srvFiles, srvLeaf := writeNode(t, t.TempDir(), ca, "n1", testcerts.ServerAndClient)
	srv := reloader(t, srvFiles, 0)
	addr, errs := serve(t, must(srv.ServerConfig(tlsconf.RequireClientCert)))

	member, _ := writeNode(t, t.TempDir(), ca, "n2", testcerts.ServerAndClient)
	memberCfg := must(reloader(t, member, 0).ClientConfig())
	serial, err := exchange(addr, memberCfg)
	if err != nil {
		t.Fatalf("a cluster member was refused: %v", err)
	}
	if serial.Cmp(srvLeaf.Serial) != 0 {
		t.Fatalf("server certificate serial %v, want %v", serial, srvLeaf.Serial)
	}
	if err := <-errs; err != nil {
		t.Fatalf("server handshake with a member: %v", err)
	}

	// No client certificate at all: the client verifies the server but
	// has nothing to present.
	anon := memberCfg.Clone()
	anon.GetClientCertificate = nil
	if _, err := exchange(addr, anon); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if err := <-errs; err == nil || !strings.Contains(err.Error(), "provide a certificate") {
		t.Fatalf("server handshake with an anonymous client: %v, want a refusal", err)
	}

	// A certificate of another CA (which trusts the cluster CA, so only
	// the server's check can refuse it).
	strangerDir := t.TempDir()
	stranger, _ := writeNode(t, strangerDir, other, "x", testcerts.ServerAndClient)
	if err := os.WriteFile(stranger.ca, append(ca.CertPEM, other.CertPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(addr, must(reloader(t, stranger, 0).ClientConfig())); err == nil {
		t.Fatal("a client with another CA's certificate was served")
	}
	if err := <-errs; err == nil || !strings.Contains(err.Error(), "not signed by the cluster CA") {
		t.Fatalf("server handshake with a stranger: %v, want a refusal", err)
	}

	// A client refuses a server whose certificate is not the cluster's.
	foreign, _ := writeNode(t, t.TempDir(), other, "y", testcerts.ServerAndClient)
	faddr, _ := serve(t, must(reloader(t, foreign, 0).ServerConfig(tlsconf.NoClientCert)))
	if _, err := exchange(faddr, memberCfg); err == nil || !strings.Contains(err.Error(), "server certificate not signed by the cluster CA") {
		t.Fatalf("dialing a server of another CA: %v, want a refusal", err)
	}
}

// TestOptionalClientCert: VerifyClientCertIfGiven serves a client without
// a certificate (PeerVerified false) but still refuses a stranger's.
func TestOptionalClientCert(t *testing.T) {
	t.Parallel()
	ca := must(testcerts.NewCA("cluster"))
	srv := reloader(t, func() files { f, _ := writeNode(t, t.TempDir(), ca, "n1", testcerts.ServerAndClient); return f }(), 0)
	cfg := must(srv.ServerConfig(tlsconf.VerifyClientCertIfGiven))
	ln := must(tls.Listen("tcp", "127.0.0.1:0", cfg))
	defer ln.Close()
	verified := make(chan bool, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				cs := tc.ConnectionState()
				verified <- tlsconf.PeerVerified(&cs)
				c.Write([]byte("ok"))
			} else {
				verified <- false
			}
			c.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := exchange(ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"}); err != nil {
		t.Fatalf("a client without a certificate: %v", err)
	}
	if <-verified {
		t.Fatal("PeerVerified is true for a client without a certificate")
	}
	member, _ := writeNode(t, t.TempDir(), ca, "n2", testcerts.ClientOnly)
	mr := must(tlsconf.New(tlsconf.Config{CAFile: member.ca, CertFile: member.cert, KeyFile: member.key}))
	if _, err := exchange(ln.Addr().String(), must(mr.ClientConfig())); err != nil {
		t.Fatalf("a member: %v", err)
	}
	if !<-verified {
		t.Fatal("PeerVerified is false for a member")
	}
}

// TestCertificateSwappedOnDisk: a certificate replaced on disk is served
// to new connections without a restart; a replacement whose key does not
// match is refused and the previous certificate stays in use.
func TestCertificateSwappedOnDisk(t *testing.T) {
	t.Parallel()
	ca := must(testcerts.NewCA("cluster"))
	dir := t.TempDir()
	f, first := writeNode(t, dir, ca, "n1", testcerts.ServerAndClient)
	srv := reloader(t, f, 20*time.Millisecond)
	addr, _ := serve(t, must(srv.ServerConfig(tlsconf.RequireClientCert)))
	cli, _ := writeNode(t, t.TempDir(), ca, "c", testcerts.ServerAndClient)
	ccfg := must(reloader(t, cli, 0).ClientConfig())
	if s, err := exchange(addr, ccfg); err != nil || s.Cmp(first.Serial) != 0 {
		t.Fatalf("first serial %v (%v), want %v", s, err, first.Serial)
	}

	second := must(ca.Issue("n1", testcerts.ServerAndClient))
	if _, _, err := second.Write(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	poll(t, func() error {
		s, err := exchange(addr, ccfg)
		if err != nil {
			return err
		}
		if s.Cmp(second.Serial) != 0 {
			return errors.New("still serving serial " + s.String())
		}
		return nil
	})

	// A half-done rotation: a new certificate next to the old key.
	third := must(ca.Issue("n1", testcerts.ServerAndClient))
	if err := testcerts.WriteFileAtomic(f.cert, third.CertPEM); err != nil {
		t.Fatal(err)
	}
	// Several checks pass (each 20 ms apart); the second serial stays.
	for range 5 {
		time.Sleep(30 * time.Millisecond)
		if s, err := exchange(addr, ccfg); err != nil || s.Cmp(second.Serial) != 0 {
			t.Fatalf("after a mismatched replacement: serial %v (%v), want the previous %v", s, err, second.Serial)
		}
	}
	// Its key arrives: the third certificate is used.
	if err := testcerts.WriteFileAtomic(f.key, third.KeyPEM); err != nil {
		t.Fatal(err)
	}
	poll(t, func() error {
		s, err := exchange(addr, ccfg)
		if err != nil {
			return err
		}
		if s.Cmp(third.Serial) != 0 {
			return errors.New("still serving serial " + s.String())
		}
		return nil
	})
}

// TestCARotation: a CA bundle replaced on disk (old and new CA, then the
// new alone) changes which clients a server accepts, without a restart.
func TestCARotation(t *testing.T) {
	t.Parallel()
	oldCA := must(testcerts.NewCA("old"))
	newCA := must(testcerts.NewCA("new"))
	dir := t.TempDir()
	f, _ := writeNode(t, dir, oldCA, "n1", testcerts.ServerAndClient)
	srv := reloader(t, f, 20*time.Millisecond)
	addr, _ := serve(t, must(srv.ServerConfig(tlsconf.RequireClientCert)))

	cdir := t.TempDir()
	cf, _ := writeNode(t, cdir, newCA, "c", testcerts.ServerAndClient)
	// The client trusts both CAs, so only the server decides.
	if err := os.WriteFile(cf.ca, append(append([]byte{}, oldCA.CertPEM...), newCA.CertPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	ccfg := must(reloader(t, cf, 0).ClientConfig())
	if _, err := exchange(addr, ccfg); err == nil {
		t.Fatal("a client of the new CA was served before the server trusted it")
	}
	if err := testcerts.WriteFileAtomic(f.ca, append(append([]byte{}, oldCA.CertPEM...), newCA.CertPEM...)); err != nil {
		t.Fatal(err)
	}
	poll(t, func() error { _, err := exchange(addr, ccfg); return err })
}

// TestLoadErrors: unreadable or mismatched files fail New with a message
// naming the file and the problem.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	ca := must(testcerts.NewCA("cluster"))
	other := must(testcerts.NewCA("other"))
	dir := t.TempDir()
	good, _ := writeNode(t, dir, ca, "n1", testcerts.ServerAndClient)
	otherLeaf := must(other.Issue("n2", testcerts.ServerAndClient))
	otherCert, otherKey := must2(otherLeaf.Write(dir, "n2"))
	clientOnly := must(ca.Issue("c", testcerts.ClientOnly))
	coCert, coKey := must2(clientOnly.Write(dir, "c"))
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		name string
		cfg  tlsconf.Config
		want string
	}{
		{"missing cert", tlsconf.Config{CAFile: good.ca, CertFile: filepath.Join(dir, "nope.crt"), KeyFile: good.key}, "read the certificate file"},
		{"missing key", tlsconf.Config{CAFile: good.ca, CertFile: good.cert, KeyFile: filepath.Join(dir, "nope.key")}, "read the key file"},
		{"missing CA", tlsconf.Config{CAFile: filepath.Join(dir, "nope.crt"), CertFile: good.cert, KeyFile: good.key}, "read the CA file"},
		{"CA without certificates", tlsconf.Config{CAFile: garbage, CertFile: good.cert, KeyFile: good.key}, "holds no PEM certificate"},
		{"key of another certificate", tlsconf.Config{CAFile: good.ca, CertFile: good.cert, KeyFile: otherKey}, "private key does not match public key"},
		{"certificate of another CA", tlsconf.Config{CAFile: good.ca, CertFile: otherCert, KeyFile: otherKey}, "is not signed by the CA in"},
		{"usage", tlsconf.Config{CAFile: good.ca, CertFile: coCert, KeyFile: coKey, Usages: both}, "does not allow serverAuth"},
		{"no files", tlsconf.Config{}, "are required"},
	} {
		_, err := tlsconf.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := tlsconf.New(tlsconf.Config{CAFile: good.ca, CertFile: good.cert, KeyFile: good.key, Usages: both}); err != nil {
		t.Fatalf("good files: %v", err)
	}
}

func must2(a, b string, err error) (string, string) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func poll(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
