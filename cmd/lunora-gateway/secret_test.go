package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClusterSecretFlag: -cluster-secret-file is checked by -validate (a
// short secret or a missing file named), adds the node-API credentials,
// and lets a gateway with mutual TLS gossip without -gossip-key (the key
// is derived from the secret).
func TestClusterSecretFlag(t *testing.T) {
	dir := t.TempDir()
	schemaPath := filepath.Join("..", "..", "examples", "chat", "lunora.yaml")
	good, short := filepath.Join(dir, "good"), filepath.Join(dir, "short")
	os.WriteFile(good, []byte(strings.Repeat("g", 40)), 0o600)
	os.WriteFile(short, []byte("too short\n"), 0o600)
	base := []string{"-schema", schemaPath, "-node", "127.0.0.1:7070"}
	for _, tc := range []struct {
		file, want string
	}{{good, ""}, {short, "at least 32"}, {filepath.Join(dir, "none"), "none"}} {
		o, err := parseFlags(append(append([]string(nil), base...), "-cluster-secret-file", tc.file), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		err = validate(o, &bytes.Buffer{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.file, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error naming %q", tc.file, err, tc.want)
		}
	}
	o, err := parseFlags(append(append([]string(nil), base...), "-cluster-secret-file", good), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dial, _, secret, err := o.tls.load(nil)
	if err != nil || secret == nil || len(dial) != 1 {
		t.Fatalf("load: %d dial options, secret %v, %v", len(dial), secret != nil, err)
	}
	tlsArgs := []string{"-tls-ca", "ca.crt", "-tls-cert", "gw.crt", "-tls-key", "gw.key", "-gossip-addr", "127.0.0.1:0", "-gossip-seeds", "127.0.0.1:7073"}
	if _, err := parseFlags(append(append([]string(nil), base...), tlsArgs...), io.Discard); err == nil || !strings.Contains(err.Error(), "gossip would be plaintext") {
		t.Errorf("mutual TLS, gossip without a key: %v", err)
	}
	if _, err := parseFlags(append(append(append([]string(nil), base...), tlsArgs...), "-cluster-secret-file", good), io.Discard); err != nil {
		t.Errorf("mutual TLS and a cluster secret, gossip without a key: %v", err)
	}
}
