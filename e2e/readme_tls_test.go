package e2e_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
)

// readmeBlock returns the first ```sh block after the line heading in
// README.md.
func readmeBlock(t *testing.T, heading string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q", heading)
	}
	_, block, ok := strings.Cut(after, "\n```sh\n")
	if !ok {
		t.Fatalf("README.md: no ```sh block after %q", heading)
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatalf("README.md: the block after %q does not end", heading)
	}
	return block
}

// TestReadmeTLSCommands runs README's commands that make a CA and
// certificates with openssl, as written, then serves with them: a node
// with its certificate, lunora-node status with the operator's, a gateway
// with its client certificate and the public one, and a call over HTTPS
// trusting ca.crt.
func TestReadmeTLSCommands(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-e", "-c", readmeBlock(t, "### TLS and mTLS"))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("README's certificate commands: %v\n%s", err, out)
	}
	certs := filepath.Join(dir, "certs")
	f := func(name string) string { return filepath.Join(certs, name) }
	for _, name := range []string{"ca.crt", "n1.crt", "n1.key", "gateway.crt", "operator.crt", "public.crt", "public.key"} {
		if _, err := os.Stat(f(name)); err != nil {
			t.Fatal(err)
		}
	}

	b := lunoratest.Build(t)
	schemaPath := writeClusterSchema(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", schemaPath, "-node-id", "n1",
		"-tls-ca", f("ca.crt"), "-tls-cert", f("n1.crt"), "-tls-key", f("n1.key")))
	status := func() lunoratest.Result {
		return lunoratest.Run(t, lunoratest.Spec{Name: "lunora-node status", Path: b.Node, CheckRace: b.Race,
			Args: []string{"status", "-node", node.GRPCAddr(), "-wait-ring", "1",
				"-tls-ca", f("ca.crt"), "-tls-cert", f("operator.crt"), "-tls-key", f("operator.key")}}, 60*time.Second)
	}
	if r := status(); r.ExitCode != 0 {
		t.Fatalf("lunora-node status with the operator's certificate: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	// Without a certificate the node does not answer the CLI.
	r := lunoratest.Run(t, lunoratest.Spec{Name: "lunora-node status", Path: b.Node, CheckRace: b.Race,
		Args: []string{"status", "-node", node.GRPCAddr()}}, 60*time.Second)
	if r.ExitCode == 0 {
		t.Fatalf("lunora-node status without a certificate succeeded:\n%s", r.Stdout)
	}

	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schemaPath, node.GRPCAddr(),
		"-tls-ca", f("ca.crt"), "-tls-cert", f("gateway.crt"), "-tls-key", f("gateway.key"),
		"-public-tls-cert", f("public.crt"), "-public-tls-key", f("public.key")))
	caPEM, err := os.ReadFile(f("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := lunoratest.NewHTTPClient(t, "localhost"+gw.HTTPAddr()[strings.LastIndexByte(gw.HTTPAddr(), ':'):])
	hc.Client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	hc.Scheme = "https"
	lunoratest.WaitFor(t, clusterTimeout, func() error {
		resp, err := hc.Call(ctxT(t), "items:put", map[string]any{"k": "a", "id": 1, "v": "over TLS"})
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK {
			return fmt.Errorf("items:put: HTTP %d %s", resp.Status, resp.Body)
		}
		return nil
	})
	resp, err := hc.Call(ctxT(t), "items:list", map[string]any{"k": "a"})
	if err != nil || resp.Result == nil || len(resp.Result.Rows) != 1 {
		t.Fatalf("items:list over HTTPS: %+v %v", resp, err)
	}
}
