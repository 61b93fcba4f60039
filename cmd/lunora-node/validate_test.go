package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve -validate checks what serve would start with, the pod's derived
// configuration included, and names the problem.
func TestValidate(t *testing.T) {
	schemaPath := filepath.Join("..", "..", "examples", "chat", "lunora.yaml")
	secretFile := filepath.Join(t.TempDir(), "secret")
	shortFile := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(secretFile, []byte(strings.Repeat("k", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shortFile, []byte(strings.Repeat("k", 31)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pod := map[string]string{"LUNORA_K8S_SERVICE": "lunora-node", "POD_NAME": "lunora-node-4", "POD_NAMESPACE": "lunora", "POD_IP": "10.0.0.9"}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string // "" for valid, else a part of the error
	}{
		// Listening beyond loopback takes a cluster secret (or mutual
		// TLS, or -insecure-node-api).
		{args: []string{"serve", "-schema", schemaPath}, want: "-grpc-addr (node API) :7070, -http-addr (backups) :7071 are not on loopback"},
		{args: []string{"serve", "-schema", schemaPath, "-insecure-node-api"}},
		{args: []string{"serve", "-schema", schemaPath, "-cluster-secret-file", secretFile}},
		{args: []string{"serve", "-schema", schemaPath, "-cluster-secret-file", shortFile}, want: "it needs at least 32"},
		{args: []string{"serve", "-schema", schemaPath, "-cluster-secret-file", filepath.Join(t.TempDir(), "none")}, want: "none"},
		{args: []string{"serve", "-schema", schemaPath, "-grpc-addr", "127.0.0.1:7070", "-http-addr", "127.0.0.1:7071"}},
		{args: []string{"serve", "-schema", schemaPath, "-data", "/var/lib/lunora", "-raft-addr", ":7072", "-cluster-secret-file", secretFile}, env: pod},
		{args: []string{"serve", "-schema", schemaPath, "-data", "/var/lib/lunora", "-raft-addr", ":7072"}, env: pod, want: "-raft-addr (Raft)"},
		{args: []string{"dev", "-cluster-secret-file", secretFile}, want: "dev mode has no peers"},
		{args: []string{"serve", "-schema", schemaPath, "-synchronous", "SOMETIMES"}, want: "Synchronous"},
		{args: []string{"serve", "-schema", schemaPath, "-idle-timeout", "0s"}, want: "IdleTimeout"},
		{args: []string{"serve", "-schema", schemaPath, "-shed-after", "-1s"}, want: "ShedAfter must not be negative"},
		{args: []string{"serve", "-schema", schemaPath, "-log-level", "loud"}, want: "-log-level"},
		{args: []string{"serve", "-schema", schemaPath, "-max-function-statements", "2"}, want: "over the limit of 2 per function"},
		{args: []string{"serve", "-schema", schemaPath, "-max-sql-bytes", "50"}, want: "over the limit of 50 (-max-sql-bytes)"},
		{args: []string{"serve", "-schema", schemaPath, "-max-value-bytes", "100"}, want: "-max-value-bytes"},
		{args: []string{"serve", "-schema", schemaPath, "-max-params", "0"}, want: "must be positive"},
		{args: []string{"serve", "-schema", filepath.Join(t.TempDir(), "none.yaml")}, want: "none.yaml"},
		{args: []string{"serve", "-schema", schemaPath, "-raft-addr", ":7072"}, env: map[string]string{"LUNORA_K8S_SERVICE": "lunora-node", "POD_NAME": "web", "POD_IP": "10.0.0.9"}, want: "POD_NAME"},
	} {
		getenv := func(k string) string { return c.env[k] }
		err := func() error {
			args, _, err := kubernetesArgs(c.args, getenv)
			if err != nil {
				return err
			}
			o, err := parseFlags(args, io.Discard)
			if err != nil {
				return err
			}
			var out bytes.Buffer
			if err := validate(o, &out); err != nil {
				return err
			}
			if !strings.HasPrefix(out.String(), "lunora-node: valid: ") {
				t.Errorf("%v: printed %q", c.args, out.String())
			}
			return nil
		}()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v %v: %v", c.args, c.env, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v %v: got %v, want an error naming %q", c.args, c.env, err, c.want)
		}
	}
}
