package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersityGWVersion is the S3-compatible server the S3 tests start;
// scripts/test builds it with go install.
const VersityGWVersion = "v1.8.0"

// startS3 starts versitygw (an S3 server over a POSIX directory) on a
// loopback port and returns the config of an S3 store in a fresh bucket.
// It skips only when the binary is absent: $LUNORA_VERSITYGW, else
// versitygw on $PATH.
func startS3(t *testing.T) S3Config {
	t.Helper()
	bin := os.Getenv("LUNORA_VERSITYGW")
	if bin == "" {
		p, err := exec.LookPath("versitygw")
		if err != nil {
			t.Skipf("no versitygw binary (set LUNORA_VERSITYGW or put it on PATH; scripts/test builds it: go install github.com/versity/versitygw/cmd/versitygw@%s)", VersityGWVersion)
		}
		bin = p
	} else if _, err := os.Stat(bin); err != nil {
		t.Fatalf("LUNORA_VERSITYGW=%s: %v", bin, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	const access, secret = "lunoratest", "lunoratest-secret-key"
	root := t.TempDir()
	var logBuf bytes.Buffer
	cmd := exec.Command(bin, "--access", access, "--secret", secret, "--port", addr, "--quiet", "posix", root)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("versitygw output:\n%s", logBuf.String())
		}
	})

	c, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(access, secret, "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Poll until the server answers.
	for {
		_, err := c.ListBuckets(ctx)
		if err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("versitygw exited: %v\n%s", err, logBuf.String())
		case <-ctx.Done():
			t.Fatalf("versitygw at %s did not answer: %v", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := c.MakeBucket(ctx, "lunora", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return S3Config{Endpoint: addr, Bucket: "lunora", Prefix: "blobs/", AccessKey: access, SecretKey: secret, PartSize: 5 << 20}
}

func TestS3Store(t *testing.T) {
	cfg := startS3(t)
	ctx := context.Background()
	s, err := OpenS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)

	bad := cfg
	bad.Bucket = "missing"
	if _, err := OpenS3(ctx, bad); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("OpenS3 of a missing bucket: %v", err)
	}
}

// TestS3StoreMultipart: bodies of several parts, of known and unknown
// length, stream through and read back intact.
func TestS3StoreMultipart(t *testing.T) {
	cfg := startS3(t)
	ctx := context.Background()
	s, err := OpenS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const size = 12<<20 + 123 // three 5 MiB parts
	for _, declared := range []int64{-1, size} {
		rng := rand.NewChaCha8([32]byte{byte(declared)})
		h := sha256.New()
		id := NewID()
		m, err := s.Put(ctx, id, io.TeeReader(io.LimitReader(rng, size), h), PutOptions{Size: declared, MaxSize: 64 << 20, ContentType: "application/octet-stream"})
		if err != nil {
			t.Fatalf("Put (declared %d): %v", declared, err)
		}
		want := hex.EncodeToString(h.Sum(nil))
		if m.Size != size || m.SHA256 != want {
			t.Fatalf("Put (declared %d) = %+v, want sha256 %s", declared, m, want)
		}
		rc, _, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		h.Reset()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != want {
			t.Fatalf("Get read %d bytes, %v; sha256 %x, want %s", n, err, h.Sum(nil), want)
		}
	}
	// An oversized multipart upload leaves no object and no upload behind.
	id := NewID()
	if _, err := s.Put(ctx, id, io.LimitReader(rand.NewChaCha8([32]byte{}), 11<<20), PutOptions{Size: -1, MaxSize: 10 << 20, ContentType: "application/octet-stream"}); err == nil {
		t.Fatal("oversized multipart Put succeeded")
	}
	c, _ := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")})
	for o := range c.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: cfg.Prefix + "data/" + id}) {
		t.Fatalf("an oversized upload left object %s (err %v)", o.Key, o.Err)
	}
	for u := range c.ListIncompleteUploads(ctx, cfg.Bucket, cfg.Prefix+"data/"+id, true) {
		t.Fatalf("an oversized upload left multipart upload %s (err %v)", u.UploadID, u.Err)
	}
}
