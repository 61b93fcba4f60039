package cli

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func parseBlobFlags(t *testing.T, dev bool, args ...string) *BlobFlags {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := RegisterBlobFlags(fs, dev)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBlobFlagsDev: dev mode opens a local store under the data directory
// with a secret generated there, the same secret on the next start.
func TestBlobFlagsDev(t *testing.T) {
	data := t.TempDir()
	c, err := parseBlobFlags(t, true).Open(context.Background(), data)
	if err != nil || c == nil {
		t.Fatalf("dev Open = %v, %v", c, err)
	}
	secret, err := os.ReadFile(filepath.Join(data, "blob-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "blobs", "tmp")); err != nil {
		t.Fatalf("no local store under the data directory: %v", err)
	}
	if _, err := parseBlobFlags(t, true).Open(context.Background(), data); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(data, "blob-secret"))
	if string(again) != string(secret) {
		t.Fatal("a second start replaced the secret")
	}
	if c, err := parseBlobFlags(t, true, "-blob-backend", "none").Open(context.Background(), data); err != nil || c != nil {
		t.Fatalf("-blob-backend none = %v, %v; want no blobs", c, err)
	}
}

// TestBlobFlagsGateway: lunora-gateway serves no blobs by default and
// names what a backend is missing.
func TestBlobFlagsGateway(t *testing.T) {
	if c, err := parseBlobFlags(t, false).Open(context.Background(), ""); err != nil || c != nil {
		t.Fatalf("default = %v, %v; want no blobs", c, err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte(strings.Repeat("k", 40)+"\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-blob-backend", "ftp"}, "none, local or s3"},
		{[]string{"-blob-backend", "local", "-blob-secret-file", secret}, "needs -blob-dir"},
		{[]string{"-blob-backend", "local", "-blob-dir", t.TempDir()}, "needs -blob-secret-file"},
		{[]string{"-blob-backend", "s3", "-blob-secret-file", secret}, "needs -blob-s3-endpoint and -blob-s3-bucket"},
		{[]string{"-blob-backend", "s3", "-blob-secret-file", secret, "-blob-s3-endpoint", "http://s3:9000", "-blob-s3-bucket", "b"}, "without a scheme"},
		{[]string{"-blob-backend", "local", "-blob-dir", t.TempDir(), "-blob-secret-file", secret, "-blob-max-bytes", "0"}, "-blob-max-bytes must be positive"},
		{[]string{"-blob-backend", "local", "-blob-dir", t.TempDir(), "-blob-secret-file", secret, "-blob-url-ttl", "48h"}, "at most 24h"},
	} {
		err := parseBlobFlags(t, false, tc.args...).Check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
	// A credential is needed for S3, from a file or the environment.
	t.Setenv("LUNORA_BLOB_S3_ACCESS_KEY", "")
	_, err := parseBlobFlags(t, false, "-blob-backend", "s3", "-blob-secret-file", secret, "-blob-s3-endpoint", "127.0.0.1:1", "-blob-s3-bucket", "b").Open(context.Background(), "")
	if err == nil || !strings.Contains(err.Error(), "LUNORA_BLOB_S3_ACCESS_KEY") {
		t.Errorf("s3 without credentials: %v", err)
	}
	c, err := parseBlobFlags(t, false, "-blob-backend", "local", "-blob-dir", t.TempDir(), "-blob-secret-file", secret, "-blob-max-bytes", "1000", "-blob-url-ttl", "1m").Open(context.Background(), "")
	if err != nil || c.MaxBytes != 1000 || c.DefaultTTL.Minutes() != 1 {
		t.Fatalf("local Open = %+v, %v", c, err)
	}
}
