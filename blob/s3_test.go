package blob_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/lunora/lunora/blob"
	"github.com/lunora/lunora/blob/blobtest"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func TestS3Store(t *testing.T) {
	cfg := blobtest.StartS3(t)
	ctx := context.Background()
	s, err := blob.OpenS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Conformance(t, s)

	bad := cfg
	bad.Bucket = "missing"
	if _, err := blob.OpenS3(ctx, bad); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("blob.OpenS3 of a missing bucket: %v", err)
	}
}

// TestS3StoreMultipart: bodies of several parts, of known and unknown
// length, stream through and read back intact.
func TestS3StoreMultipart(t *testing.T) {
	cfg := blobtest.StartS3(t)
	ctx := context.Background()
	s, err := blob.OpenS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const size = 12<<20 + 123 // three 5 MiB parts
	for _, declared := range []int64{-1, size} {
		rng := rand.NewChaCha8([32]byte{byte(declared)})
		h := sha256.New()
		id := blob.NewID()
		m, err := s.Put(ctx, id, io.TeeReader(io.LimitReader(rng, size), h), blob.PutOptions{Size: declared, MaxSize: 64 << 20, ContentType: "application/octet-stream"})
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
	id := blob.NewID()
	if _, err := s.Put(ctx, id, io.LimitReader(rand.NewChaCha8([32]byte{}), 11<<20), blob.PutOptions{Size: -1, MaxSize: 10 << 20, ContentType: "application/octet-stream"}); err == nil {
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
