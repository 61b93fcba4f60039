package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/internal/cli"
)

// authOptions are the flags of authentication (see the README's Security
// section).
type authOptions struct {
	mode        string // on, off
	apiKeys     bool
	keyCacheTTL time.Duration
	jwtIssuer   string
	jwtAudience string
	jwksFile    string
	jwksURL     string
	jwksRefresh time.Duration
	hs256File   string
	roleClaim   string
	leeway      time.Duration
}

func (a *authOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&a.mode, "auth", "on", "authentication of the public API: on, or off (anonymous admin access; refused unless -http-addr and -grpc-addr are loopback addresses)")
	fs.BoolVar(&a.apiKeys, "api-keys", true, "accept API keys (lk_…), checked against the global tier through a node")
	fs.DurationVar(&a.keyCacheTTL, "key-cache-ttl", auth.DefaultKeyCacheTTL, "how long a looked-up API key is cached: a revoked key stops working within this (plus the node's replication lag)")
	fs.StringVar(&a.jwtIssuer, "jwt-issuer", "", "accept JWT bearer tokens with this \"iss\" (with -jwt-audience and a key source: -jwt-jwks-file, -jwt-jwks-url or -jwt-hs256-secret-file)")
	fs.StringVar(&a.jwtAudience, "jwt-audience", "", "comma-separated audiences; a token's \"aud\" must hold one of them")
	fs.StringVar(&a.jwksFile, "jwt-jwks-file", "", "JWKS file of the identity provider's public keys (RS256, ES256, EdDSA), re-read when it changes")
	fs.StringVar(&a.jwksURL, "jwt-jwks-url", "", "JWKS URL of the identity provider, refreshed every -jwt-jwks-refresh and on an unknown key ID")
	fs.DurationVar(&a.jwksRefresh, "jwt-jwks-refresh", 5*time.Minute, "how often -jwt-jwks-url is fetched again")
	fs.StringVar(&a.hs256File, "jwt-hs256-secret-file", "", "file holding a shared secret (at least 32 bytes) for HS256 tokens")
	fs.StringVar(&a.roleClaim, "jwt-role-claim", "role", "claim naming a token's role (admin, service or client); a token without it is a client")
	fs.DurationVar(&a.leeway, "jwt-leeway", 60*time.Second, "clock skew allowed on exp, nbf and iat (at most 5m)")
}

// enabled says whether authentication is on; off is allowed only when
// every public listener is a loopback address.
func (a *authOptions) enabled(httpAddr, grpcAddr string) (bool, error) {
	switch a.mode {
	case "on":
		return true, nil
	case "off":
		for _, addr := range []string{httpAddr, grpcAddr} {
			if !cli.IsLoopback(addr) {
				return false, fmt.Errorf("-auth=off is refused: %s is not a loopback address, and anyone who reaches it would be an admin; listen on 127.0.0.1 or turn auth on", addr)
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("-auth must be on or off, not %q", a.mode)
}

// config builds the authenticator's configuration; keys is where API keys
// are looked up (the router, through a node).
func (a *authOptions) config(keys auth.KeyStore) (auth.Config, error) {
	cfg := auth.Config{KeyCacheTTL: a.keyCacheTTL}
	if a.keyCacheTTL <= 0 {
		return cfg, errors.New("-key-cache-ttl must be positive")
	}
	if a.apiKeys {
		cfg.Keys = keys
	}
	jwtSet := a.jwtIssuer != "" || a.jwtAudience != "" || a.jwksFile != "" || a.jwksURL != "" || a.hs256File != ""
	if jwtSet {
		j := &auth.JWTConfig{
			Issuer: a.jwtIssuer, Audience: cli.SplitList(a.jwtAudience),
			JWKSFile: a.jwksFile, JWKSURL: a.jwksURL, JWKSRefresh: a.jwksRefresh,
			RoleClaim: a.roleClaim, Leeway: a.leeway,
		}
		if a.hs256File != "" {
			b, err := os.ReadFile(a.hs256File)
			if err != nil {
				return cfg, fmt.Errorf("-jwt-hs256-secret-file: %w", err)
			}
			j.HS256Secret = []byte(strings.TrimRight(string(b), "\r\n"))
		}
		cfg.JWT = j
	}
	if cfg.Keys == nil && cfg.JWT == nil {
		return cfg, errors.New("authentication is on but no credential could work: API keys are off (-api-keys=false) and no JWT issuer is configured (-jwt-issuer, -jwt-audience and -jwt-jwks-file, -jwt-jwks-url or -jwt-hs256-secret-file); configure one, or -auth=off on loopback addresses")
	}
	return cfg, nil
}

// describe says in one line what the gateway accepts.
func (a *authOptions) describe(on bool) string {
	if !on {
		return "auth OFF (anonymous admin access, loopback only)"
	}
	var parts []string
	if a.apiKeys {
		parts = append(parts, fmt.Sprintf("API keys (cache %s)", a.keyCacheTTL))
	}
	if a.jwtIssuer != "" {
		parts = append(parts, "JWTs from "+a.jwtIssuer)
	}
	return "auth on: " + strings.Join(parts, ", ")
}
