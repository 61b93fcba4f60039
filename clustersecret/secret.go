package clustersecret

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MinLen is the shortest secret accepted, in bytes (after surrounding
// white space is trimmed): 32, e.g. `openssl rand -hex 32` (64).
const MinLen = 32

// MetadataKey is the gRPC metadata key carrying the token.
const MetadataKey = "lunora-cluster-token"

// HTTPScheme is the Authorization scheme carrying the token on HTTP.
const HTTPScheme = "Cluster"

// EnvFile is the environment variable the binaries read the secret
// file's path from when -cluster-secret-file is not given.
const EnvFile = "LUNORA_CLUSTER_SECRET_FILE"

// ErrMissing is the message of a node-API call refused for want of the
// secret.
const ErrMissing = "the node API needs the cluster secret (or a cluster certificate): give -cluster-secret-file (the same file as the nodes') or -tls-ca/-tls-cert/-tls-key"

// Secret is a loaded cluster secret. Its zero value is not usable; a nil
// *Secret means "no secret" to the helpers that accept one.
type Secret struct {
	token []byte // HMAC-SHA256(secret, purpose)
	hex   string // token, hex-encoded for metadata and headers
}

// purpose binds the derived token to Lunora's cluster authentication.
const purpose = "lunora cluster token v1"

// New derives a Secret from the secret's bytes; surrounding white space
// (a trailing newline) is ignored.
func New(secret []byte) (*Secret, error) {
	s := bytes.TrimSpace(secret)
	if len(s) < MinLen {
		return nil, fmt.Errorf("the cluster secret has %d bytes; it needs at least %d (make one with: openssl rand -hex 32)", len(s), MinLen)
	}
	m := hmac.New(sha256.New, s)
	m.Write([]byte(purpose))
	tok := m.Sum(nil)
	return &Secret{token: tok, hex: hex.EncodeToString(tok)}, nil
}

// Load reads the secret from path (New's rules).
func Load(path string) (*Secret, error) {
	if path == "" {
		return nil, errors.New("cluster secret: no file given")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	s, err := New(b)
	if err != nil {
		return nil, fmt.Errorf("cluster secret %s: %w", path, err)
	}
	return s, nil
}

// Token is the derived token, hex-encoded: what a client sends.
func (s *Secret) Token() string { return s.hex }

// Raw is the derived token's bytes (the Raft transport's preamble).
func (s *Secret) Raw() []byte { return bytes.Clone(s.token) }

// Check reports, in constant time, whether tok is the hex token.
func (s *Secret) Check(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.hex)) == 1
}

// CheckRaw reports, in constant time, whether b is the raw token.
func (s *Secret) CheckRaw(b []byte) bool {
	return subtle.ConstantTimeCompare(b, s.token) == 1
}

// Credentials are gRPC per-RPC credentials sending the token with every
// call; they work over plaintext and TLS alike.
func (s *Secret) Credentials() credentials.PerRPCCredentials { return perRPC{s} }

// DialOption is grpc.WithPerRPCCredentials(s.Credentials()), to give
// after rpc.NewNodeClient's defaults.
func (s *Secret) DialOption() grpc.DialOption {
	return grpc.WithPerRPCCredentials(s.Credentials())
}

type perRPC struct{ s *Secret }

func (p perRPC) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{MetadataKey: p.s.hex}, nil
}

func (perRPC) RequireTransportSecurity() bool { return false }

// ServerOptions are the interceptors checking the token on the methods of
// the gRPC services named by prefixes (e.g. "/lunora.v1.Node/"); calls to
// other services (health checks, reflection, a public API served on the
// same server) pass unchecked. A call without the right token is
// UNAUTHENTICATED.
func (s *Secret) ServerOptions(prefixes ...string) []grpc.ServerOption {
	guarded := func(method string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(method, p) {
				return true
			}
		}
		return false
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if guarded(info.FullMethod) {
				if err := s.checkContext(ctx); err != nil {
					return nil, err
				}
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if guarded(info.FullMethod) {
				if err := s.checkContext(ss.Context()); err != nil {
					return err
				}
			}
			return h(srv, ss)
		}),
	}
}

func (s *Secret) checkContext(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(MetadataKey)
	if len(vals) != 1 || !s.Check(vals[0]) {
		return status.Error(codes.Unauthenticated, ErrMissing)
	}
	return nil
}

// SetHeader sets r's Authorization header to the token.
func (s *Secret) SetHeader(h http.Header) { h.Set("Authorization", HTTPScheme+" "+s.hex) }

// CheckRequest reports whether r carries the token in its Authorization
// header.
func (s *Secret) CheckRequest(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, HTTPScheme) && s.Check(strings.TrimSpace(tok))
}

// Transport is an http.RoundTripper sending the token with every request
// through next (http.DefaultTransport when nil).
func (s *Secret) Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripper{s: s, next: next}
}

type roundTripper struct {
	s    *Secret
	next http.RoundTripper
}

func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	t.s.SetHeader(r.Header)
	return t.next.RoundTrip(r)
}

// GossipKey is a 32-byte gossip encryption key derived from the secret,
// for members that are given no gossip key of their own: every process
// with the same secret derives the same key.
func (s *Secret) GossipKey() []byte {
	m := hmac.New(sha256.New, s.token)
	m.Write([]byte("lunora gossip key v1"))
	return m.Sum(nil)
}
