package e2e_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/blob"
	"github.com/lunora/lunora/blob/blobtest"
	"github.com/lunora/lunora/lunoratest"
)

// TestGatewayBlobsS3: lunora-gateway started with the S3 blob flags
// against a real S3 server (versitygw) takes an upload through a signed
// URL into the bucket and serves it back through another; the URL-issuing
// endpoint wants a credential; a body over the signed maximum is 413.
func TestGatewayBlobsS3(t *testing.T) {
	t.Parallel()
	s3 := blobtest.StartS3(t)
	b := lunoratest.Build(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secretFile := write("blob-secret", strings.Repeat("s", 48)+"\n")
	schema := chatSchemaFile(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", schema))
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schema, node.GRPCAddr(),
		"-blob-backend", "s3", "-blob-s3-endpoint", s3.Endpoint, "-blob-s3-bucket", s3.Bucket, "-blob-s3-prefix", "e2e/",
		"-blob-s3-tls=false", "-blob-s3-access-key-file", write("access", s3.AccessKey), "-blob-s3-secret-key-file", write("secret", s3.SecretKey),
		"-blob-secret-file", secretFile, "-blob-max-bytes", "1000000"))
	base := "http://" + gw.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	do := func(method, path, ct string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	if code, body := do(http.MethodPost, "/v1/blobs/upload-url", "application/json", []byte(`{"content_type":"image/png"}`)); code != http.StatusUnauthorized {
		t.Fatalf("upload-url without a credential: %d %s, want 401", code, body)
	}

	// URLs signed with the gateway's secret, as upload-url would issue.
	signer, err := blob.LoadSigner(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	id := blob.NewID()
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	up := "/v1/blobs/" + id + "?" + signer.Query(blob.Grant{Method: http.MethodPut, ID: id, Expires: exp, MaxSize: 1000000, ContentType: "image/png", Owner: "ada"}).Encode()
	png := bytes.Repeat([]byte("\x89PNG pixels "), 10000)
	if code, body := do(http.MethodPut, up, "image/png", png); code != http.StatusCreated {
		t.Fatalf("PUT: %d %s", code, body)
	}
	// The blob is in the bucket, under the prefix.
	store, err := blob.OpenS3(ctx, blob.S3Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: "e2e/", AccessKey: s3.AccessKey, SecretKey: s3.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := store.Stat(ctx, id); err != nil || m.Size != int64(len(png)) || m.Owner != "ada" {
		t.Fatalf("in the bucket: %+v, %v", m, err)
	}
	down := "/v1/blobs/" + id + "?" + signer.Query(blob.Grant{Method: http.MethodGet, ID: id, Expires: exp}).Encode()
	if code, body := do(http.MethodGet, down, "", nil); code != http.StatusOK || !bytes.Equal(body, png) {
		t.Fatalf("GET: %d, %d bytes", code, len(body))
	}

	big := blob.NewID()
	up = "/v1/blobs/" + big + "?" + signer.Query(blob.Grant{Method: http.MethodPut, ID: big, Expires: exp, MaxSize: 1000, ContentType: "image/png"}).Encode()
	if code, body := do(http.MethodPut, up, "image/png", png); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized PUT: %d %s, want 413", code, body)
	}
	if code, body := do(http.MethodPut, up+"x", "image/png", []byte("x")); code != http.StatusForbidden || !strings.Contains(string(body), "signature does not match") {
		t.Fatalf("tampered PUT: %d %s, want 403", code, body)
	}
}
