//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/blob"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

// TestChatBrowserImage: on the chat page a person picks an image file and
// sends a message; the page uploads it through a signed URL, sends the blob
// ID with the message, and the image shows — loaded through a signed
// download URL — in the page that sent it and in a page that loads the room
// afterwards. The page talks to a dev-mode node with blobs on, as
// "lunora-node dev" runs it.
func TestChatBrowserImage(t *testing.T) {
	for _, p := range []string{chromedriverPath, chromiumPath} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed (apt-get install chromium chromium-driver; scripts/test does): %v", p, err)
		}
	}
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := blob.OpenLocal(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := blob.LoadOrCreateSigner(filepath.Join(dir, "blob-secret"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
		App: app, Dir: dir, NodeID: "dev", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Blobs: gateway.NewBlobConfig(store, signer),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	base := "http://" + p.HTTPAddr // dev mode: anonymous, every caller the dev admin

	// A real 24x16 PNG.
	img := image.NewRGBA(image.Rect(0, 0, 24, 16))
	for x := range 24 {
		for y := range 16 {
			img.Set(x, y, color.RGBA{uint8(x * 10), uint8(y * 15), 200, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "picture.png")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())

	wd := startChromedriver(t)
	a, err := wd.newSession(t, "A")
	wdMust(t, err)
	room := "pictures-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	wdMust(t, a.navigate(base+"/chat/?room="+room))
	a.waitLive(t, 0)
	a.setField(t, "#author", "ada")
	a.setField(t, "#body", "my picture")
	input, err := a.find("#image")
	wdMust(t, err)
	wdMust(t, a.cmd(http.MethodPost, "/element/"+input+"/value", map[string]any{"text": file}, nil))
	wdMust(t, a.click("#send"))
	a.waitMessage(t, "ada", "my picture")
	blobID := waitImage(t, a, 24)

	// The row holds the blob ID; the blob is the file, byte for byte.
	h := lunoratest.NewHTTPClient(t, p.HTTPAddr)
	res := mustHTTP(t, h, "messages:list", map[string]any{"room_id": room})
	if col := res.Column("image"); col < 0 || len(res.Rows) != 1 || res.Rows[0][col] != blobID {
		t.Fatalf("messages:list = %+v, want one row with image %s", res, blobID)
	}
	m, err := store.Stat(context.Background(), blobID)
	if err != nil || m.SHA256 != hex.EncodeToString(sum[:]) || m.ContentType != "image/png" {
		t.Fatalf("blob %s: %+v, %v; want the file's sha256 %x", blobID, m, err, sum)
	}
	if v := a.fieldValue(t, "#image"); v != "" {
		t.Fatalf("#image after sending = %q, want it cleared", v)
	}

	// A page opened afterwards gets the row in its snapshot and shows the image.
	b, err := wd.newSession(t, "B")
	wdMust(t, err)
	wdMust(t, b.navigate(base+"/chat/?room="+room))
	b.waitLive(t, 0)
	if got := waitImage(t, b, 24); got != blobID {
		t.Fatalf("page B shows blob %s, want %s", got, blobID)
	}
}

// waitImage waits until the page's one message image has loaded with the
// given natural width, and returns its blob ID.
func waitImage(t *testing.T, s *wdSession, width int) string {
	t.Helper()
	var got string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		wdMust(t, s.exec(`var i = document.querySelectorAll('#messages li img.image');
			if (i.length !== 1) return 'images: ' + i.length;
			return [i[0].complete && i[0].naturalWidth, i[0].dataset.blob, i[0].alt].join(' ')`, &got))
		if f := strings.Fields(got); len(f) >= 2 && f[0] == strconv.Itoa(width) {
			return f[1]
		}
	}
	var errText string
	s.exec(`return document.getElementById('error').textContent`, &errText)
	t.Fatalf("page %s: no loaded image after 20s: %q (error line %q)", s.name, got, errText)
	return ""
}
