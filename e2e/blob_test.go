package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
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

// TestGatewayBlobsS3: lunora-gateway with authentication on and the S3
// blob flags, against a real S3 server (versitygw). A client key asks for
// an upload URL; the upload itself carries no credential but the URL's
// signature and lands in the bucket; the client's download URL serves it
// back. Without a key the URL endpoints are 401; another client's key
// learns nothing of the blob; an admin deletes it; a body over the signed
// maximum is 413 and a tampered URL 403.
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
	schema := chatSchemaFile(t)
	node := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "serve", "-schema", schema))
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b, schema, node.GRPCAddr(), "-auth=on",
		"-blob-backend", "s3", "-blob-s3-endpoint", s3.Endpoint, "-blob-s3-bucket", s3.Bucket, "-blob-s3-prefix", "e2e/",
		"-blob-s3-tls=false", "-blob-s3-access-key-file", write("access", s3.AccessKey), "-blob-s3-secret-key-file", write("secret", s3.SecretKey),
		"-blob-secret-file", write("blob-secret", strings.Repeat("s", 48)+"\n"), "-blob-max-bytes", "1000000"))
	admin := strings.TrimSpace(keysCLI(t, b, "create", "-node", node.GRPCAddr(), "-name", "ops", "-role", "admin"))
	ada := strings.TrimSpace(keysCLI(t, b, "create", "-node", node.GRPCAddr(), "-name", "ada", "-role", "client"))
	bob := strings.TrimSpace(keysCLI(t, b, "create", "-node", node.GRPCAddr(), "-name", "bob", "-role", "client"))

	base := "http://" + gw.HTTPAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	do := func(method, path, key, ct string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	decode := func(b []byte) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		return m
	}

	if code, body := do(http.MethodPost, "/v1/blobs/upload-url", "", "application/json", []byte(`{"content_type":"image/png"}`)); code != http.StatusUnauthorized {
		t.Fatalf("upload-url without a credential: %d %s, want 401", code, body)
	}
	code, body := do(http.MethodPost, "/v1/blobs/upload-url", ada, "application/json", []byte(`{"content_type":"image/png","max_bytes":500000}`))
	if code != http.StatusOK {
		t.Fatalf("upload-url: %d %s", code, body)
	}
	up := decode(body)
	id := up["id"].(string)
	png := bytes.Repeat([]byte("\x89PNG pixels "), 10000)
	if code, body := do(http.MethodPut, up["url"].(string), "", "image/png", png); code != http.StatusCreated {
		t.Fatalf("PUT with the signed URL and no credential: %d %s", code, body)
	}
	// The blob is in the bucket, under the prefix, owned by ada's key.
	store, err := blob.OpenS3(ctx, blob.S3Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Prefix: "e2e/", AccessKey: s3.AccessKey, SecretKey: s3.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	m, err := store.Stat(ctx, id)
	if err != nil || m.Size != int64(len(png)) || m.Owner == "" {
		t.Fatalf("in the bucket: %+v, %v", m, err)
	}
	if code, body := do(http.MethodPost, "/v1/blobs/download-url", bob, "application/json", []byte(`{"id":"`+id+`"}`)); code != http.StatusNotFound {
		t.Fatalf("another client's download-url: %d %s, want 404", code, body)
	}
	code, body = do(http.MethodPost, "/v1/blobs/download-url", ada, "application/json", []byte(`{"id":"`+id+`"}`))
	if code != http.StatusOK {
		t.Fatalf("download-url: %d %s", code, body)
	}
	down := decode(body)["url"].(string)
	if code, body := do(http.MethodGet, down, "", "", nil); code != http.StatusOK || !bytes.Equal(body, png) {
		t.Fatalf("GET: %d, %d bytes", code, len(body))
	}

	code, body = do(http.MethodPost, "/v1/blobs/upload-url", ada, "application/json", []byte(`{"content_type":"image/png","max_bytes":1000}`))
	if code != http.StatusOK {
		t.Fatalf("upload-url: %d %s", code, body)
	}
	small := decode(body)["url"].(string)
	if code, body := do(http.MethodPut, small, "", "image/png", png); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized PUT: %d %s, want 413", code, body)
	}
	if code, body := do(http.MethodPut, strings.Replace(small, "max=1000", "max=1000000", 1), "", "image/png", png); code != http.StatusForbidden || !strings.Contains(string(body), "signature does not match") {
		t.Fatalf("PUT with a raised max: %d %s, want 403", code, body)
	}

	if code, body := do(http.MethodDelete, "/v1/blobs/"+id, admin, "", nil); code != http.StatusNoContent {
		t.Fatalf("admin DELETE: %d %s", code, body)
	}
	if code, _ := do(http.MethodGet, down, "", "", nil); code != http.StatusNotFound {
		t.Fatalf("GET after delete: %d, want 404", code)
	}
}
