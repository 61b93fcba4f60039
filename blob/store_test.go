package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// testStore runs the behaviour every Store must have.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	body := bytes.Repeat([]byte("lunora blob "), 100_000) // 1.2 MB
	sum := sha256.Sum256(body)

	id := NewID()
	if !ValidID(id) {
		t.Fatalf("NewID %q is not a valid ID", id)
	}
	if _, err := s.Stat(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of a missing blob: %v, want ErrNotFound", err)
	}
	// Unknown length: the body streams to its end.
	m, err := s.Put(ctx, id, bytes.NewReader(body), PutOptions{Size: -1, MaxSize: 2 << 20, ContentType: "image/png", Owner: "alice"})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if m.ID != id || m.Size != int64(len(body)) || m.ContentType != "image/png" || m.SHA256 != hex.EncodeToString(sum[:]) || m.Owner != "alice" || m.Created.IsZero() {
		t.Fatalf("Put meta = %+v", m)
	}
	st, err := s.Stat(ctx, id)
	if err != nil || st != m {
		t.Fatalf("Stat = %+v, %v; want %+v", st, err, m)
	}
	rc, gm, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, body) || gm != m {
		t.Fatalf("Get read %d bytes (err %v), meta %+v", len(got), err, gm)
	}
	rs, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatalf("Get's reader %T does not seek", rc)
	}
	if _, err := rs.Seek(12*1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 12)
	if _, err := io.ReadFull(rs, part); err != nil || string(part) != "lunora blob " {
		t.Fatalf("after Seek read %q, %v", part, err)
	}
	rc.Close()

	// IDs are never overwritten.
	if _, err := s.Put(ctx, id, strings.NewReader("x"), PutOptions{Size: 1, MaxSize: 10, ContentType: "text/plain"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Put of one ID: %v, want ErrExists", err)
	}

	// Too large, known length or not: nothing is stored.
	big := NewID()
	if _, err := s.Put(ctx, big, bytes.NewReader(body), PutOptions{Size: -1, MaxSize: 1000, ContentType: "text/plain"}); !errors.Is(err, ErrTooLarge) || api.CodeOf(err) != codes.ResourceExhausted {
		t.Fatalf("oversized Put: %v, want ErrTooLarge", err)
	}
	if _, err := s.Put(ctx, big, bytes.NewReader(body), PutOptions{Size: int64(len(body)), MaxSize: 1000, ContentType: "text/plain"}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put declaring too much: %v, want ErrTooLarge", err)
	}
	if _, err := s.Stat(ctx, big); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a refused Put, Stat: %v, want ErrNotFound", err)
	}
	// A body shorter than declared is refused.
	short := NewID()
	if _, err := s.Put(ctx, short, strings.NewReader("abc"), PutOptions{Size: 10, MaxSize: 100, ContentType: "text/plain"}); !errors.Is(err, ErrShortBody) {
		t.Fatalf("short body: %v, want ErrShortBody", err)
	}
	if _, err := s.Stat(ctx, short); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a short body, Stat: %v, want ErrNotFound", err)
	}
	// A cancelled upload stores nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	cid := NewID()
	if _, err := s.Put(cctx, cid, bytes.NewReader(body), PutOptions{Size: -1, MaxSize: 2 << 20, ContentType: "text/plain"}); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	if _, err := s.Stat(ctx, cid); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a cancelled Put, Stat: %v, want ErrNotFound", err)
	}
	// Empty blobs are blobs.
	empty := NewID()
	if m, err := s.Put(ctx, empty, strings.NewReader(""), PutOptions{Size: 0, MaxSize: 10, ContentType: "text/plain"}); err != nil || m.Size != 0 {
		t.Fatalf("empty Put: %+v, %v", m, err)
	}

	if _, err := s.Put(ctx, "../etc", strings.NewReader("x"), PutOptions{Size: 1, MaxSize: 10, ContentType: "text/plain"}); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("Put with a path as ID: %v, want ErrInvalidID", err)
	}

	if err := s.Delete(ctx, id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v, want ErrNotFound", err)
	}
}

func TestLocalStore(t *testing.T) {
	s, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
}

// TestLocalStoreCleansTemp: temporary files a crash left are removed when
// the directory is opened again.
func TestLocalStoreCleansTemp(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenLocal(dir); err != nil {
		t.Fatal(err)
	}
	leftover := dir + "/tmp/put-123"
	if err := writeFile(leftover, "half"); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocal(dir); err != nil {
		t.Fatal(err)
	}
	if fileExists(leftover) {
		t.Fatal("OpenLocal kept a temporary file")
	}
}
