package nodeproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
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

// TestDevChatImage: the chat example carries an image blob. On the dev
// listener (anonymous: the dev admin) an image is uploaded with a signed
// URL and sent with messages:send; through the same gateway a client
// identity posts one with messages:post. messages:list returns the blob
// IDs in the image column, and a signed download URL serves the bytes.
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

	// The dev listener, and the same gateway with a client identity (a
	// client key's, room r1 granted) put in the request's context in front.
	dev := "http://" + p.HTTPAddr
	h := p.Gateway.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ada := &auth.Identity{Method: auth.MethodJWT, Role: auth.RoleClient, Subject: "ada", Claims: map[string]any{"sub": "ada", "rooms": []any{"pics"}}}
		h.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), ada)))
	}))
	defer srv.Close()
	do := func(base, method, path, ct string, body []byte) (int, []byte) {
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
	decode := func(b []byte) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		return m
	}

	upload := func(base string, png []byte) string {
		t.Helper()
		code, b := do(base, http.MethodPost, "/v1/blobs/upload-url", "application/json", []byte(`{"content_type":"image/png","max_bytes":1000}`))
		if code != http.StatusOK {
			t.Fatalf("upload-url at %s: %d %s", base, code, b)
		}
		up := decode(b)
		if code, b = do(base, http.MethodPut, up["url"].(string), "image/png", png); code != http.StatusCreated {
			t.Fatalf("PUT at %s: %d %s", base, code, b)
		}
		return up["id"].(string)
	}
	devPNG := []byte("\x89PNG\r\n\x1a\n the dev admin's picture")
	adaPNG := []byte("\x89PNG\r\n\x1a\n ada's picture")
	devID, adaID := upload(dev, devPNG), upload(srv.URL, adaPNG)
	call := func(base, body string) []byte {
		t.Helper()
		code, b := do(base, http.MethodPost, "/v1/call", "application/json", []byte(body))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", body, code, b)
		}
		return b
	}
	call(dev, `{"function":"messages:send","args":{"room_id":"pics","author":"dev","body":"look","image":"`+devID+`"}}`)
	call(srv.URL, `{"function":"messages:post","args":{"room_id":"pics","body":"mine","image":"`+adaID+`"}}`)
	var list struct {
		Columns []string
		Rows    [][]any
	}
	if err := json.Unmarshal(call(srv.URL, `{"function":"messages:list","args":{"room_id":"pics"}}`), &list); err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, c := range list.Columns {
		col[c] = i
	}
	images := map[string]any{}
	for _, r := range list.Rows {
		images[r[col["author"]].(string)] = r[col["image"]]
	}
	if len(list.Rows) != 2 || images["dev"] != devID || images["ada"] != adaID {
		t.Fatalf("messages:list = %+v; want dev's image %s and ada's %s", list, devID, adaID)
	}
	for _, c := range []struct {
		base, id string
		png      []byte
	}{{dev, devID, devPNG}, {srv.URL, adaID, adaPNG}} {
		code, b := do(c.base, http.MethodPost, "/v1/blobs/download-url", "application/json", []byte(`{"id":"`+c.id+`"}`))
		if code != http.StatusOK {
			t.Fatalf("download-url: %d %s", code, b)
		}
		if code, b = do(c.base, http.MethodGet, decode(b)["url"].(string), "", nil); code != http.StatusOK || !bytes.Equal(b, c.png) {
			t.Fatalf("GET: %d %q", code, b)
		}
	}
	// The client may not read the dev admin's blob.
	if code, b := do(srv.URL, http.MethodPost, "/v1/blobs/download-url", "application/json", []byte(`{"id":"`+devID+`"}`)); code != http.StatusNotFound {
		t.Fatalf("ada's download-url of another's blob: %d %s, want 404", code, b)
	}

	// The page has the image picker.
	resp, err := http.Get(dev + "/chat/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(page, []byte(`id="image"`)) || !bytes.Contains(page, []byte("/v1/blobs/upload-url")) {
		t.Fatal("the chat page has no image upload")
	}
}
