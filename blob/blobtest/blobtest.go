// Package blobtest tests blob stores: the behaviour every blob.Store must
// have (Conformance), and a real S3-compatible server for the S3 backend
// (StartS3).
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/blob"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"google.golang.org/grpc/codes"
)

// VersityGWVersion is the S3-compatible server the S3 tests start;
// scripts/test builds it with go install.
const VersityGWVersion = "v1.8.0"

// StartS3 starts versitygw (an S3 server over a POSIX directory) on a
// loopback port and returns the config of an S3 store in a fresh bucket.
// It skips only when the binary is absent: $LUNORA_VERSITYGW, else
// versitygw on $PATH.
func StartS3(t testing.TB) blob.S3Config {
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
	// The port is picked free and then handed to versitygw: another
	// process may take it in between, so a server that exits at once is
	// started again on another port.
	for attempt := 1; ; attempt++ {
		cfg, exitErr := startVersityGW(t, bin)
		if exitErr == nil {
			return cfg
		}
		if attempt == 3 {
			t.Fatalf("versitygw exited at start, 3 times; last: %v", exitErr)
		}
		t.Logf("versitygw exited at start (%v); again on another port", exitErr)
	}
}

// startVersityGW starts one versitygw and waits for it to answer; an
// error means it exited first.
func startVersityGW(t testing.TB, bin string) (blob.S3Config, error) {
	t.Helper()
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
	stopped := false
	t.Cleanup(func() {
		if stopped {
			return
		}
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
			stopped = true
			return blob.S3Config{}, fmt.Errorf("%v: %s", err, strings.TrimSpace(logBuf.String()))
		case <-ctx.Done():
			t.Fatalf("versitygw at %s did not answer: %v", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := c.MakeBucket(ctx, "lunora", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return blob.S3Config{Endpoint: addr, Bucket: "lunora", Prefix: "blobs/", AccessKey: access, SecretKey: secret, PartSize: 5 << 20}, nil
}

// Conformance runs the behaviour every blob.Store must have against s.
func Conformance(t *testing.T, s blob.Store) {
	ctx := context.Background()
	body := bytes.Repeat([]byte("lunora blob "), 100_000) // 1.2 MB
	sum := sha256.Sum256(body)

	id := blob.NewID()
	if !blob.ValidID(id) {
		t.Fatalf("blob.NewID %q is not a valid ID", id)
	}
	if _, err := s.Stat(ctx, id); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat of a missing blob: %v, want blob.ErrNotFound", err)
	}
	// Unknown length: the body streams to its end.
	m, err := s.Put(ctx, id, bytes.NewReader(body), blob.PutOptions{Size: -1, MaxSize: 2 << 20, ContentType: "image/png", Owner: "alice"})
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
	if _, err := s.Put(ctx, id, strings.NewReader("x"), blob.PutOptions{Size: 1, MaxSize: 10, ContentType: "text/plain"}); !errors.Is(err, blob.ErrExists) {
		t.Fatalf("second Put of one ID: %v, want blob.ErrExists", err)
	}

	// Too large, known length or not: nothing is stored.
	big := blob.NewID()
	if _, err := s.Put(ctx, big, bytes.NewReader(body), blob.PutOptions{Size: -1, MaxSize: 1000, ContentType: "text/plain"}); !errors.Is(err, blob.ErrTooLarge) || api.CodeOf(err) != codes.ResourceExhausted {
		t.Fatalf("oversized Put: %v, want blob.ErrTooLarge", err)
	}
	if _, err := s.Put(ctx, big, bytes.NewReader(body), blob.PutOptions{Size: int64(len(body)), MaxSize: 1000, ContentType: "text/plain"}); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("Put declaring too much: %v, want blob.ErrTooLarge", err)
	}
	if _, err := s.Stat(ctx, big); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after a refused Put, Stat: %v, want blob.ErrNotFound", err)
	}
	// A body shorter than declared is refused.
	short := blob.NewID()
	if _, err := s.Put(ctx, short, strings.NewReader("abc"), blob.PutOptions{Size: 10, MaxSize: 100, ContentType: "text/plain"}); !errors.Is(err, blob.ErrShortBody) {
		t.Fatalf("short body: %v, want blob.ErrShortBody", err)
	}
	if _, err := s.Stat(ctx, short); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after a short body, Stat: %v, want blob.ErrNotFound", err)
	}
	// A cancelled upload stores nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	cid := blob.NewID()
	if _, err := s.Put(cctx, cid, bytes.NewReader(body), blob.PutOptions{Size: -1, MaxSize: 2 << 20, ContentType: "text/plain"}); err == nil {
		t.Fatal("Put with a cancelled context succeeded")
	}
	if _, err := s.Stat(ctx, cid); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after a cancelled Put, Stat: %v, want blob.ErrNotFound", err)
	}
	// Empty blobs are blobs.
	empty := blob.NewID()
	if m, err := s.Put(ctx, empty, strings.NewReader(""), blob.PutOptions{Size: 0, MaxSize: 10, ContentType: "text/plain"}); err != nil || m.Size != 0 {
		t.Fatalf("empty Put: %+v, %v", m, err)
	}

	if _, err := s.Put(ctx, "../etc", strings.NewReader("x"), blob.PutOptions{Size: 1, MaxSize: 10, ContentType: "text/plain"}); !errors.Is(err, blob.ErrInvalidID) {
		t.Fatalf("Put with a path as ID: %v, want blob.ErrInvalidID", err)
	}

	racePuts(t, s)

	if err := s.Delete(ctx, id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := s.Get(ctx, id); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want blob.ErrNotFound", err)
	}
	if err := s.Delete(ctx, id); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("second Delete: %v, want blob.ErrNotFound", err)
	}
}

// gate is a body whose first Read says it started and then waits for go.
type gate struct {
	r       io.Reader
	started chan<- struct{}
	goAhead <-chan struct{}
	once    sync.Once
}

func (g *gate) Read(p []byte) (int, error) {
	g.once.Do(func() {
		g.started <- struct{}{}
		<-g.goAhead
	})
	return g.r.Read(p)
}

// racePuts: two uploads to one ID, both under way before either ends:
// exactly one wins, and the blob is entirely the winner's.
func racePuts(t *testing.T, s blob.Store) {
	ctx := context.Background()
	id := blob.NewID()
	bodies := []string{strings.Repeat("first ", 50_000), strings.Repeat("second ", 50_000)}
	started, goAhead := make(chan struct{}, 2), make(chan struct{})
	type result struct {
		m   blob.Meta
		err error
	}
	results := make(chan result, 2)
	for _, b := range bodies {
		go func() {
			m, err := s.Put(ctx, id, &gate{r: strings.NewReader(b), started: started, goAhead: goAhead}, blob.PutOptions{Size: -1, MaxSize: 1 << 20, ContentType: "text/plain"})
			results <- result{m, err}
		}()
	}
	<-started
	<-started
	close(goAhead)
	var won []blob.Meta
	for range bodies {
		r := <-results
		switch {
		case r.err == nil:
			won = append(won, r.m)
		case !errors.Is(r.err, blob.ErrExists):
			t.Fatalf("racing Put: %v, want success or ErrExists", r.err)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d of two racing Puts won, want exactly one", len(won))
	}
	rc, m, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	sum := sha256.Sum256(got)
	if err != nil || m != won[0] || hex.EncodeToString(sum[:]) != m.SHA256 || int64(len(got)) != m.Size {
		t.Fatalf("after the race: %d bytes (err %v), sha256 %x; meta %+v, winner %+v", len(got), err, sum, m, won[0])
	}
}
