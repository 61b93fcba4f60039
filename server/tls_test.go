package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/tlsconf"
	"github.com/lunora/lunora/tlsconf/testcerts"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func reloaderOf(t *testing.T, ca *testcerts.CA, name string) *tlsconf.Reloader {
	t.Helper()
	dir := t.TempDir()
	leaf, err := ca.Issue(name, testcerts.ServerAndClient)
	if err != nil {
		t.Fatal(err)
	}
	caPath, _ := ca.WriteCA(dir)
	cert, key, err := leaf.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tlsconf.New(tlsconf.Config{CAFile: caPath, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTLSListeners: with GRPCTLS requiring a client certificate, a gRPC
// client of the cluster CA is served and one without a certificate is
// refused; HTTPTLS serves HTTPS (a client certificate optional there).
func TestTLSListeners(t *testing.T) {
	t.Parallel()
	ca, err := testcerts.NewCA("cluster")
	if err != nil {
		t.Fatal(err)
	}
	srv := reloaderOf(t, ca, "node")
	gcfg, err := srv.ServerConfig(tlsconf.RequireClientCert)
	if err != nil {
		t.Fatal(err)
	}
	hcfg, _ := srv.ServerConfig(tlsconf.VerifyClientCertIfGiven)
	p := start(t, server.Config{GRPCTLS: gcfg, HTTPTLS: hcfg}, nil)

	member, _ := reloaderOf(t, ca, "gateway").ClientConfig()
	health := func(cfg *tls.Config) error {
		cc, err := grpc.NewClient(p.grpcAddr, tlsconf.DialOption(cfg))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := health(member); err != nil {
		t.Fatalf("gRPC with a cluster certificate: %v", err)
	}
	anon := member.Clone()
	anon.GetClientCertificate = nil
	if err := health(anon); err == nil {
		t.Fatal("gRPC without a client certificate was served")
	} else {
		t.Logf("gRPC without a client certificate: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://localhost" + p.httpAddr[strings.LastIndexByte(p.httpAddr, ':'):] + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.ProtoMajor != 2 {
		t.Fatalf("HTTPS /healthz: %s %s %q (TLS %v)", resp.Proto, resp.Status, b, resp.TLS != nil)
	}
	// Plaintext gets Go's "HTTP request to an HTTPS server" 400, never
	// the handler.
	if resp, err := http.Get("http://" + p.httpAddr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plaintext HTTP on a TLS listener: %s", resp.Status)
		}
	}
}
