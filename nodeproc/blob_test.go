package nodeproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/blob"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

// TestDevChatImage: in dev mode the chat example carries an image blob: a
// client uploads it with a signed URL, sends a message whose image column
// holds the blob ID, and reads it back through a signed download URL.
func TestDevChatImage(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := blob.OpenLocal(dir + "/blobs")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := blob.LoadOrCreateSigner(dir + "/blob-secret")
	if err != nil {
		t.Fatal(err)
	}
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
		App: app, Dir: dir, NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Blobs: gateway.NewBlobConfig(store, signer),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() { p.Shutdown(context.Background()) })

	// The process's own listener serves the blob endpoints: without an
	// identity in the request's context 401; with dev mode's (an admin,
	// once authentication sets one) 200 — never "no endpoint".
	resp, err := http.Post("http://"+p.HTTPAddr+"/v1/blobs/upload-url", "application/json", strings.NewReader(`{"content_type":"image/png"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusOK {
		t.Fatalf("upload-url on the dev listener: %d, want 401 or 200", resp.StatusCode)
	}

	// The same gateway, with an authenticated client in front.
	h := p.Gateway.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), &auth.Identity{Method: auth.MethodAPIKey, Role: auth.RoleClient, Subject: "ada"})))
	}))
	defer srv.Close()
	do := func(method, path, ct string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, bytes.NewReader(body))
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
	decode := func(b []byte) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		return m
	}

	png := []byte("\x89PNG\r\n\x1a\n not really a picture")
	code, b := do(http.MethodPost, "/v1/blobs/upload-url", "application/json", []byte(`{"content_type":"image/png","max_bytes":1000}`))
	if code != http.StatusOK {
		t.Fatalf("upload-url: %d %s", code, b)
	}
	up := decode(b)
	id := up["id"].(string)
	if code, b = do(http.MethodPut, up["url"].(string), "image/png", png); code != http.StatusCreated {
		t.Fatalf("PUT: %d %s", code, b)
	}
	call := `{"function":"messages:send","args":{"room_id":"pics","author":"ada","body":"look","image":"` + id + `"}}`
	if code, b = do(http.MethodPost, "/v1/call", "application/json", []byte(call)); code != http.StatusOK {
		t.Fatalf("messages:send: %d %s", code, b)
	}
	code, b = do(http.MethodPost, "/v1/call", "application/json", []byte(`{"function":"messages:list","args":{"room_id":"pics"}}`))
	if code != http.StatusOK {
		t.Fatalf("messages:list: %d %s", code, b)
	}
	var list struct {
		Columns []string
		Rows    [][]any
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	col := -1
	for i, c := range list.Columns {
		if c == "image" {
			col = i
		}
	}
	if col < 0 || len(list.Rows) != 1 || list.Rows[0][col] != id {
		t.Fatalf("messages:list = %s; want one row whose image is %s", b, id)
	}
	code, b = do(http.MethodPost, "/v1/blobs/download-url", "application/json", []byte(`{"id":"`+list.Rows[0][col].(string)+`"}`))
	if code != http.StatusOK {
		t.Fatalf("download-url: %d %s", code, b)
	}
	if code, b = do(http.MethodGet, decode(b)["url"].(string), "", nil); code != http.StatusOK || !bytes.Equal(b, png) {
		t.Fatalf("GET: %d %q", code, b)
	}

	// The page has the image picker.
	resp, err = http.Get("http://" + p.HTTPAddr + "/chat/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(page, []byte(`id="image"`)) || !bytes.Contains(page, []byte("/v1/blobs/upload-url")) {
		t.Fatal("the chat page has no image upload")
	}
}
