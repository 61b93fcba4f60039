package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAuthFlags(t *testing.T) {
	base := []string{"-schema", "x.yaml", "-node", "127.0.0.1:7070"}
	// -auth=off only on loopback listeners.
	if _, err := parseFlags(append(base, "-auth=off", "-http-addr", "127.0.0.1:0", "-grpc-addr", "127.0.0.1:0"), io.Discard); err != nil {
		t.Fatalf("-auth=off on loopback: %v", err)
	}
	for _, extra := range [][]string{
		{"-auth=off"}, // the defaults listen on every interface
		{"-auth=off", "-http-addr", "127.0.0.1:0", "-grpc-addr", "0.0.0.0:8081"},
	} {
		_, err := parseFlags(append(append([]string(nil), base...), extra...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-auth=off is refused") {
			t.Fatalf("%q: %v", extra, err)
		}
	}
	if _, err := parseFlags(append(base, "-auth=maybe"), io.Discard); err == nil {
		t.Fatal("-auth=maybe was accepted")
	}

	// Auth on but no credential could work: a clear error.
	o, err := parseFlags(append(base, "-api-keys=false"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.auth.config(noKeyStore{}); err == nil || !strings.Contains(err.Error(), "no credential could work") {
		t.Fatalf("no keys and no JWT: %v", err)
	}
	// API keys alone, or JWT alone, work.
	o, _ = parseFlags(base, io.Discard)
	if cfg, err := o.auth.config(noKeyStore{}); err != nil || cfg.Keys == nil || cfg.JWT != nil {
		t.Fatalf("API keys only: %+v %v", cfg, err)
	}
	secret := filepath.Join(t.TempDir(), "hs256")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _ = parseFlags(append(base, "-api-keys=false", "-jwt-issuer", "https://idp", "-jwt-audience", "a,b", "-jwt-hs256-secret-file", secret), io.Discard)
	cfg, err := o.auth.config(noKeyStore{})
	if err != nil || cfg.Keys != nil || cfg.JWT == nil || string(cfg.JWT.HS256Secret) != "0123456789abcdef0123456789abcdef" || len(cfg.JWT.Audience) != 2 {
		t.Fatalf("JWT only: %+v %v", cfg, err)
	}
}
