package clustersecret_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/clustersecret"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoad: a secret shorter than MinLen (white space aside) is refused,
// naming the length and how to make one; a missing file names the file;
// the same secret with or without a trailing newline is the same token,
// and another secret a different one.
func TestLoad(t *testing.T) {
	long := strings.Repeat("a", clustersecret.MinLen)
	if _, err := clustersecret.Load(write(t, "  "+long[1:]+"\n")); err == nil || !strings.Contains(err.Error(), "at least 32") || !strings.Contains(err.Error(), "openssl rand") {
		t.Errorf("31-byte secret: %v, want a refusal naming 32 bytes and openssl rand", err)
	}
	missing := filepath.Join(t.TempDir(), "none")
	if _, err := clustersecret.Load(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v", err)
	}
	a, err := clustersecret.Load(write(t, long))
	if err != nil {
		t.Fatal(err)
	}
	b, err := clustersecret.Load(write(t, long+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := clustersecret.New([]byte(strings.Repeat("b", 40)))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case a.Token() != b.Token() || !a.Check(b.Token()):
		t.Error("a trailing newline changed the token")
	case a.Check(c.Token()) || a.CheckRaw(c.Raw()) || a.Check(""):
		t.Error("another secret's token (or none) was accepted")
	case strings.Contains(a.Token(), long) || !a.CheckRaw(b.Raw()):
		t.Error("the token is not derived from the secret")
	case string(a.GossipKey()) == string(c.GossipKey()) || len(a.GossipKey()) != 32:
		t.Error("gossip keys: want 32 bytes, different per secret")
	}
}

// TestInterceptors: only the services named are guarded — a call to one
// without the token (or with another secret's) is UNAUTHENTICATED with
// the message saying what is needed, with the token it is served; other
// services are served to anyone.
func TestInterceptors(t *testing.T) {
	s, _ := clustersecret.New([]byte(strings.Repeat("s", 32)))
	other, _ := clustersecret.New([]byte(strings.Repeat("o", 32)))
	for _, tc := range []struct {
		name    string
		guarded string
		opts    []grpc.DialOption
		want    codes.Code
	}{
		{"guarded, no token", "/grpc.health.v1.Health/", nil, codes.Unauthenticated},
		{"guarded, another secret", "/grpc.health.v1.Health/", []grpc.DialOption{other.DialOption()}, codes.Unauthenticated},
		{"guarded, the token", "/grpc.health.v1.Health/", []grpc.DialOption{s.DialOption()}, codes.OK},
		{"another service guarded", "/lunora.v1.Node/", nil, codes.OK},
	} {
		srv := grpc.NewServer(s.ServerOptions(tc.guarded)...)
		healthpb.RegisterHealthServer(srv, health.NewServer())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		cc, err := grpc.NewClient(ln.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, tc.opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		hc := healthpb.NewHealthClient(cc)
		_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if got := status.Code(err); got != tc.want {
			t.Errorf("%s: unary %v, want %v", tc.name, err, tc.want)
		} else if got == codes.Unauthenticated && !strings.Contains(err.Error(), "needs the cluster secret") {
			t.Errorf("%s: %v does not say what is missing", tc.name, err)
		}
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		if got := status.Code(err); got != tc.want {
			t.Errorf("%s: stream %v, want %v", tc.name, err, tc.want)
		}
		cancel()
		cc.Close()
		srv.Stop()
	}
}

// TestHTTP: CheckRequest accepts the header Transport sets and nothing
// else.
func TestHTTP(t *testing.T) {
	s, _ := clustersecret.New([]byte(strings.Repeat("s", 32)))
	other, _ := clustersecret.New([]byte(strings.Repeat("o", 32)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.CheckRequest(r) {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	for name, tc := range map[string]struct {
		rt   http.RoundTripper
		want int
	}{
		"none": {nil, 401}, "another secret": {other.Transport(nil), 401}, "the secret": {s.Transport(nil), 200},
	} {
		resp, err := (&http.Client{Transport: tc.rt}).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", name, resp.StatusCode, tc.want)
		}
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token())
	if s.CheckRequest(req) {
		t.Error("the token under another scheme was accepted")
	}
}

// BenchmarkGuardedCall: a unary call over loopback through the
// interceptors, with the token ("secret") and with no service guarded
// ("open"): the secret's cost per call.
func BenchmarkGuardedCall(b *testing.B) {
	s, _ := clustersecret.New([]byte(strings.Repeat("s", 32)))
	for _, bc := range []struct {
		name    string
		guarded string
	}{{"open", "/none/"}, {"secret", "/grpc.health.v1.Health/"}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := grpc.NewServer(s.ServerOptions(bc.guarded)...)
			healthpb.RegisterHealthServer(srv, health.NewServer())
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Stop()
			cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), s.DialOption())
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			hc := healthpb.NewHealthClient(cc)
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
