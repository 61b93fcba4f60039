package gateway_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/blob"
	"github.com/lunora/lunora/blob/blobtest"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/server"
	"github.com/prometheus/client_golang/prometheus"
)

// bearerAuth authenticates "Authorization: Bearer role:subject" as that
// role and subject: the test's stand-in for API keys.
type bearerAuth struct{}

func (bearerAuth) Authenticate(_ context.Context, cred string) (*auth.Identity, error) {
	role, sub, ok := strings.Cut(cred, ":")
	if !ok || !auth.Role(role).Valid() {
		return nil, auth.ErrBadCredential
	}
	return &auth.Identity{Method: auth.MethodAPIKey, Role: auth.Role(role), Subject: sub}, nil
}

type blobEnv struct {
	reg    *prometheus.Registry
	url    string
	store  blob.Store
	signer *blob.Signer
	client *http.Client
}

func newBlobEnv(t *testing.T, maxBytes int64) *blobEnv {
	t.Helper()
	store, err := blob.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newBlobEnvWith(t, store, maxBytes)
}

// newBlobEnvWith serves the gateway with blobs on store and
// authentication on (bearerAuth).
func newBlobEnvWith(t *testing.T, store blob.Store, maxBytes int64) *blobEnv {
	t.Helper()
	signer, err := blob.NewSigner([]byte("a test secret of at least 32 bytes......"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *gateway.Config) {
		c.AuthOff, c.Auth = false, bearerAuth{}
		c.Blobs = gateway.NewBlobConfig(store, signer)
		c.Blobs.MaxBytes = maxBytes
	})
	return &blobEnv{reg: e.reg, url: e.url, store: store, signer: signer, client: &http.Client{}}
}

type blobAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a blobAnswer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %d %q is not JSON: %v", a.status, a.body, err)
	}
	return m
}

// message is the error message of a JSON error answer.
func (a blobAnswer) message(t *testing.T) string {
	t.Helper()
	e, _ := a.json(t)["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
}

func (e *blobEnv) do(t *testing.T, method, path, who string, hdr map[string]string, body io.Reader, size int64) blobAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+who)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return blobAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *blobEnv) post(t *testing.T, path, who, body string) blobAnswer {
	t.Helper()
	return e.do(t, http.MethodPost, path, who, map[string]string{"Content-Type": "application/json"}, strings.NewReader(body), int64(len(body)))
}

// uploadURL asks for an upload URL and returns the blob ID and URL.
func (e *blobEnv) uploadURL(t *testing.T, who, req string) (string, string) {
	t.Helper()
	a := e.post(t, "/v1/blobs/upload-url", who, req)
	if a.status != http.StatusOK {
		t.Fatalf("upload-url %s: %d %s", req, a.status, a.body)
	}
	m := a.json(t)
	return m["id"].(string), m["url"].(string)
}

func (e *blobEnv) downloadURL(t *testing.T, who, id string) blobAnswer {
	t.Helper()
	return e.post(t, "/v1/blobs/download-url", who, `{"id":"`+id+`"}`)
}

func expect(t *testing.T, what string, a blobAnswer, status int, msgPart string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: status %d (%s), want %d", what, a.status, a.body, status)
	}
	if msgPart != "" {
		if msg := a.message(t); !strings.Contains(msg, msgPart) {
			t.Fatalf("%s: message %q does not say %q", what, msg, msgPart)
		}
	}
}

func TestBlobUploadDownload(t *testing.T) {
	e := newBlobEnv(t, 1<<20)
	const alice = "client:alice"
	body := strings.Repeat("a picture of a cat ", 1000)
	sum := sha256.Sum256([]byte(body))

	id, up := e.uploadURL(t, alice, `{"content_type":"image/png","max_bytes":100000}`)
	if !strings.HasPrefix(up, "/v1/blobs/"+id+"?") {
		t.Fatalf("upload URL %q", up)
	}
	a := e.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "image/png"}, strings.NewReader(body), int64(len(body)))
	expect(t, "PUT", a, http.StatusCreated, "")
	m := a.json(t)
	if m["id"] != id || m["size"] != float64(len(body)) || m["sha256"] != hex.EncodeToString(sum[:]) || m["content_type"] != "image/png" || m["owner"] != "alice" {
		t.Fatalf("PUT answered %s", a.body)
	}
	// The URL was for one upload: the ID is taken now.
	a = e.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "image/png"}, strings.NewReader("x"), 1)
	expect(t, "second PUT with one URL", a, http.StatusConflict, "never overwritten")

	a = e.do(t, http.MethodGet, "/v1/blobs/"+id+"/meta", alice, nil, nil, 0)
	expect(t, "meta", a, http.StatusOK, "")
	if a.json(t)["sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("meta = %s", a.body)
	}

	a = e.downloadURL(t, alice, id)
	expect(t, "download-url", a, http.StatusOK, "")
	down := a.json(t)["url"].(string)
	a = e.do(t, http.MethodGet, down, "", nil, nil, 0)
	expect(t, "GET", a, http.StatusOK, "")
	if string(a.body) != body || a.header.Get("Content-Type") != "image/png" || a.header.Get("ETag") != `"`+hex.EncodeToString(sum[:])+`"` ||
		a.header.Get("Content-Length") != strconv.Itoa(len(body)) || a.header.Get("Content-Security-Policy") != "sandbox" {
		t.Fatalf("GET: %d bytes, header %v", len(a.body), a.header)
	}
	a = e.do(t, http.MethodGet, down, "", map[string]string{"Range": "bytes=19-37"}, nil, 0)
	if a.status != http.StatusPartialContent || string(a.body) != "a picture of a cat " {
		t.Fatalf("ranged GET: %d %q", a.status, a.body)
	}
	a = e.do(t, http.MethodGet, down, "", map[string]string{"If-None-Match": a.header.Get("ETag")}, nil, 0)
	if a.status != http.StatusNotModified {
		t.Fatalf("GET with the ETag: %d, want 304", a.status)
	}
	a = e.do(t, http.MethodHead, down, "", nil, nil, 0)
	if a.status != http.StatusOK || len(a.body) != 0 || a.header.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Fatalf("HEAD: %d %v", a.status, a.header)
	}

	// Bob, another client, learns nothing of Alice's blob; the admin may.
	expect(t, "bob's download-url", e.downloadURL(t, "client:bob", id), http.StatusNotFound, "uploaded by you")
	expect(t, "bob's meta", e.do(t, http.MethodGet, "/v1/blobs/"+id+"/meta", "client:bob", nil, nil, 0), http.StatusNotFound, "")
	expect(t, "bob's delete", e.do(t, http.MethodDelete, "/v1/blobs/"+id, "client:bob", nil, nil, 0), http.StatusNotFound, "")
	expect(t, "admin's download-url", e.downloadURL(t, "admin:root", id), http.StatusOK, "")

	// Delete is explicit; the download URL then finds nothing.
	a = e.do(t, http.MethodDelete, "/v1/blobs/"+id, alice, nil, nil, 0)
	if a.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", a.status, a.body)
	}
	expect(t, "GET after delete", e.do(t, http.MethodGet, down, "", nil, nil, 0), http.StatusNotFound, "not found")
	expect(t, "second delete", e.do(t, http.MethodDelete, "/v1/blobs/"+id, alice, nil, nil, 0), http.StatusNotFound, "")
}

func TestBlobRefusals(t *testing.T) {
	e := newBlobEnv(t, 1<<20)
	const alice = "client:alice"
	png := map[string]string{"Content-Type": "image/png"}

	// Issuing URLs, metadata and delete are authenticated calls; the
	// signed PUT and GET below carry no credential.
	expect(t, "anonymous upload-url", e.post(t, "/v1/blobs/upload-url", "", `{"content_type":"image/png"}`), http.StatusUnauthorized, "authentication required")
	expect(t, "anonymous meta", e.do(t, http.MethodGet, "/v1/blobs/b1/meta", "", nil, nil, 0), http.StatusUnauthorized, "")
	expect(t, "anonymous delete", e.do(t, http.MethodDelete, "/v1/blobs/b1", "", nil, nil, 0), http.StatusUnauthorized, "")
	expect(t, "max over the cap", e.post(t, "/v1/blobs/upload-url", alice, `{"content_type":"image/png","max_bytes":2000000}`), http.StatusBadRequest, "cap")
	expect(t, "no content type", e.post(t, "/v1/blobs/upload-url", alice, `{}`), http.StatusBadRequest, "content_type")
	expect(t, "bad content type", e.post(t, "/v1/blobs/upload-url", alice, `{"content_type":"png"}`), http.StatusBadRequest, "media type")
	expect(t, "TTL too long", e.post(t, "/v1/blobs/upload-url", alice, `{"content_type":"image/png","expires_in_seconds":999999}`), http.StatusBadRequest, "at most 86400")
	expect(t, "wrong method", e.do(t, http.MethodGet, "/v1/blobs/upload-url", alice, nil, nil, 0), http.StatusMethodNotAllowed, "use POST")

	id, up := e.uploadURL(t, alice, `{"content_type":"image/png","max_bytes":1000}`)
	u, err := url.Parse(up)
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(k, v string) string {
		q := u.Query()
		q.Set(k, v)
		return u.Path + "?" + q.Encode()
	}
	sig := u.Query().Get("sig")
	flipped := string(sig[0]^1) + sig[1:]
	expect(t, "tampered signature", e.do(t, http.MethodPut, tamper("sig", flipped), "", png, strings.NewReader("x"), 1), http.StatusForbidden, "signature does not match")
	expect(t, "raised max", e.do(t, http.MethodPut, tamper("max", "1000000"), "", png, strings.NewReader("x"), 1), http.StatusForbidden, "signature does not match")
	expect(t, "changed type", e.do(t, http.MethodPut, tamper("ct", "text/html"), "", map[string]string{"Content-Type": "text/html"}, strings.NewReader("x"), 1), http.StatusForbidden, "signature does not match")
	expect(t, "other ID", e.do(t, http.MethodPut, strings.Replace(up, id, "bother", 1), "", png, strings.NewReader("x"), 1), http.StatusForbidden, "signature does not match")
	expect(t, "unsigned", e.do(t, http.MethodPut, "/v1/blobs/"+id, "", png, strings.NewReader("x"), 1), http.StatusForbidden, "not signed")
	expect(t, "upload URL used to download", e.do(t, http.MethodGet, up, "", nil, nil, 0), http.StatusForbidden, "signature does not match")

	// Expired: a URL signed with an expiry in the past.
	past := blob.Grant{Method: http.MethodPut, ID: id, Expires: time.Now().Add(-time.Second).Truncate(time.Second), MaxSize: 1000, ContentType: "image/png", Owner: "alice"}
	expect(t, "expired", e.do(t, http.MethodPut, "/v1/blobs/"+id+"?"+e.signer.Query(past).Encode(), "", png, strings.NewReader("x"), 1), http.StatusForbidden, "expired")

	expect(t, "wrong content type", e.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "text/html"}, strings.NewReader("x"), 1), http.StatusForbidden, `does not match the upload URL's signed content type "image/png"`)
	big := strings.Repeat("x", 1001)
	expect(t, "oversized (Content-Length)", e.do(t, http.MethodPut, up, "", png, strings.NewReader(big), 1001), http.StatusRequestEntityTooLarge, "maximum of 1000 bytes")
	// Chunked: no length up front, refused once the 1001st byte arrives.
	expect(t, "oversized (chunked)", e.do(t, http.MethodPut, up, "", png, io.MultiReader(strings.NewReader(big)), -1), http.StatusRequestEntityTooLarge, "1000 bytes")
	if _, err := e.store.Stat(context.Background(), id); err == nil {
		t.Fatal("a refused upload left a blob")
	}
	// Parameters of the media type are not part of the match; the URL
	// still works after all those refusals.
	a := e.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "image/PNG; x=y"}, strings.NewReader("ok"), -1)
	expect(t, "upload", a, http.StatusCreated, "")

	expect(t, "expired download", e.do(t, http.MethodGet, "/v1/blobs/"+id+"?"+e.signer.Query(blob.Grant{Method: http.MethodGet, ID: id, Expires: time.Now().Add(-time.Second).Truncate(time.Second)}).Encode(), "", nil, nil, 0), http.StatusForbidden, "expired")
	expect(t, "bad ID", e.do(t, http.MethodGet, "/v1/blobs/a.b", alice, nil, nil, 0), http.StatusNotFound, "blob IDs")
	expect(t, "download-url of nothing", e.downloadURL(t, "admin:root", "bnothing"), http.StatusNotFound, "not found")

	// Every blob request is counted with its canonical code.
	got := e.requests(t)
	for k, want := range map[string]float64{
		"auth UNAUTHENTICATED": 3, "blob:upload-url INVALID_ARGUMENT": 4, "blob:upload-url UNIMPLEMENTED": 1, "blob:upload-url OK": 1,
		"blob:put PERMISSION_DENIED": 7, "blob:put RESOURCE_EXHAUSTED": 2, "blob:put OK": 1,
		"blob:get PERMISSION_DENIED": 2, "blob:other NOT_FOUND": 1, "blob:download-url NOT_FOUND": 1,
	} {
		if got[k] != want {
			t.Errorf("lunora_gateway_requests_total{function, code} %s = %v, want %v (all: %v)", k, got[k], want, got)
		}
	}
}

// TestBlobS3: the endpoints over the S3 backend, against a real S3
// server (versitygw): a multipart upload of unknown length with one signed
// URL, a download and a ranged download with another, an oversized upload
// refused with nothing left behind.
func TestBlobS3(t *testing.T) {
	cfg := blobtest.StartS3(t)
	store, err := blob.OpenS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := newBlobEnvWith(t, store, 64<<20)
	const svc = "service:worker"
	const size = 12<<20 + 5 // three 5 MiB parts
	h := sha256.New()
	id, up := e.uploadURL(t, svc, `{"content_type":"application/octet-stream"}`)
	a := e.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "application/octet-stream"}, io.TeeReader(newGenReader(size), h), -1)
	expect(t, "PUT", a, http.StatusCreated, "")
	want := hex.EncodeToString(h.Sum(nil))
	if m := a.json(t); m["sha256"] != want || m["size"] != float64(size) {
		t.Fatalf("PUT answered %s, want sha256 %s", a.body, want)
	}
	a = e.downloadURL(t, svc, id)
	expect(t, "download-url", a, http.StatusOK, "")
	down := a.json(t)["url"].(string)
	a = e.do(t, http.MethodGet, down, "", nil, nil, 0)
	if sum := sha256.Sum256(a.body); a.status != http.StatusOK || hex.EncodeToString(sum[:]) != want || a.header.Get("ETag") != `"`+want+`"` {
		t.Fatalf("GET: %d, %d bytes, ETag %s", a.status, len(a.body), a.header.Get("ETag"))
	}
	full := a.body
	a = e.do(t, http.MethodGet, down, "", map[string]string{"Range": "bytes=10485700-10485799"}, nil, 0)
	if a.status != http.StatusPartialContent || string(a.body) != string(full[10485700:10485800]) {
		t.Fatalf("ranged GET: %d, %d bytes", a.status, len(a.body))
	}

	id, up = e.uploadURL(t, svc, `{"content_type":"application/octet-stream","max_bytes":6000000}`)
	a = e.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "application/octet-stream"}, newGenReader(7<<20), -1)
	expect(t, "oversized PUT", a, http.StatusRequestEntityTooLarge, "6000000 bytes")
	if _, err := store.Stat(context.Background(), id); err == nil {
		t.Fatal("an oversized upload was stored")
	}
	expect(t, "DELETE", e.do(t, http.MethodDelete, "/v1/blobs/"+id, svc, nil, nil, 0), http.StatusNotFound, "")
}

func TestBlobURLRequest(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		want           bool
	}{
		{"PUT", "/v1/blobs/b1?exp=1&sig=x", true},
		{"GET", "/v1/blobs/b1?exp=1&sig=x", true},
		{"HEAD", "/v1/blobs/b1?sig=", true},
		{"DELETE", "/v1/blobs/b1?sig=x", false},
		{"POST", "/v1/blobs/upload-url?sig=x", false},
		{"GET", "/v1/blobs/b1/meta?sig=x", false},
		{"GET", "/v1/blobs/b1", true},
		{"GET", "/v1/call?sig=x", false},
	} {
		if got := gateway.BlobURLRequest(httptest.NewRequest(tc.method, tc.target, nil)); got != tc.want {
			t.Errorf("%s %s: %v, want %v", tc.method, tc.target, got, tc.want)
		}
	}
}

// requests reads lunora_gateway_requests_total{protocol="http"} by
// "function code".
func (e *blobEnv) requests(t *testing.T) map[string]float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "lunora_gateway_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["protocol"] == "http" {
				out[l["function"]+" "+l["code"]] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// vmRSS is this process's resident set size in bytes.
func vmRSS(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// genReader yields n pseudo-random bytes (ChaCha8 with a fixed seed),
// made as they are read.
type genReader struct {
	n   int64
	rng *rand.ChaCha8
}

func newGenReader(n int64) *genReader {
	return &genReader{n: n, rng: rand.NewChaCha8([32]byte{'l', 'u', 'n', 'o', 'r', 'a'})}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n {
		p = p[:g.n]
	}
	n, _ := g.rng.Read(p)
	g.n -= int64(n)
	return n, nil
}

// TestBlobStreamMemory streams a generated body up through the HTTP
// handler into the local store and back down, checking its SHA-256 and
// that the process's RSS grows by less than 64 MiB: 1 GiB, or 64 MiB
// with -short.
func TestBlobStreamMemory(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	e := newBlobEnv(t, size)
	const svc = "service:worker"

	// Peak RSS, sampled while the transfer runs.
	base := vmRSS(t)
	var mu sync.Mutex
	peak := base
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				r := vmRSS(t)
				mu.Lock()
				peak = max(peak, r)
				mu.Unlock()
			}
		}
	}()
	start := time.Now()

	upHash := sha256.New()
	id, up := e.uploadURL(t, svc, `{"content_type":"application/octet-stream","max_bytes":`+strconv.FormatInt(size, 10)+`}`)
	body := io.TeeReader(newGenReader(size), upHash)
	a := e.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "application/octet-stream"}, body, -1)
	expect(t, "PUT", a, http.StatusCreated, "")
	want := hex.EncodeToString(upHash.Sum(nil))
	if m := a.json(t); m["sha256"] != want || m["size"] != float64(size) {
		t.Fatalf("PUT answered %s, want sha256 %s", a.body, want)
	}
	upTime := time.Since(start)

	a = e.downloadURL(t, svc, id)
	expect(t, "download-url", a, http.StatusOK, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+a.json(t)["url"].(string), nil)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	downHash := sha256.New()
	n, err := io.Copy(downHash, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || hex.EncodeToString(downHash.Sum(nil)) != want {
		t.Fatalf("GET read %d bytes (err %v), sha256 %x; want %d bytes, %s", n, err, downHash.Sum(nil), size, want)
	}
	close(stop)
	<-done
	growth := peak - base
	t.Logf("%d MiB up in %v, down in %v; RSS %d MiB before, peak growth %.1f MiB",
		size>>20, upTime.Round(time.Millisecond), (time.Since(start) - upTime).Round(time.Millisecond), base>>20, float64(growth)/(1<<20))
	if growth >= 64<<20 {
		t.Fatalf("RSS grew by %.1f MiB streaming %d MiB; want < 64 MiB", float64(growth)/(1<<20), size>>20)
	}
}

// slowReader yields n bytes in chunks, pausing between them.
type slowReader struct {
	n     int
	chunk int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	k := min(len(p), s.chunk, s.n)
	for i := range p[:k] {
		p[i] = 'z'
	}
	s.n -= k
	return k, nil
}

// TestBlobSlowTransfer: behind the real listener (package server) with
// 400 ms body and write timeouts, an upload and a download that take
// seconds go through while their bytes keep moving, and a stalled upload
// is cut after the blob idle timeout.
func TestBlobSlowTransfer(t *testing.T) {
	store, err := blob.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := blob.NewSigner([]byte("a test secret of at least 32 bytes......"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *gateway.Config) {
		c.Blobs = gateway.NewBlobConfig(store, signer)
		c.Blobs.IdleTimeout = 1500 * time.Millisecond
	})
	h := e.gw.Handler()
	proc := server.New(server.NewRegistry(), nil, nil, server.Config{BodyTimeout: 400 * time.Millisecond, WriteTimeout: 400 * time.Millisecond})
	putDone := make(chan time.Time, 10) // when each PUT's handler returned
	addr, err := proc.ServeHTTP("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(auth.NewContext(r.Context(), &auth.Identity{Method: auth.MethodAPIKey, Role: auth.RoleService, Subject: "svc"}))
		h.ServeHTTP(w, r)
		if r.Method == http.MethodPut {
			putDone <- time.Now()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Shutdown(context.Background()) })
	be := &blobEnv{url: "http://" + addr.String(), store: store, signer: signer, client: &http.Client{}}

	// 2 s of upload, 100 ms between chunks.
	_, up := be.uploadURL(t, "", `{"content_type":"text/plain"}`)
	a := be.do(t, http.MethodPut, up, "", map[string]string{"Content-Type": "text/plain"}, &slowReader{n: 20 << 10, chunk: 1 << 10, pause: 100 * time.Millisecond}, -1)
	expect(t, "slow upload", a, http.StatusCreated, "")

	// A download read slowly: 32 MiB, 1 MiB every 80 ms.
	bigID, bigUp := be.uploadURL(t, "", `{"content_type":"application/octet-stream"}`)
	a = be.do(t, http.MethodPut, bigUp, "", map[string]string{"Content-Type": "application/octet-stream"}, newGenReader(32<<20), 32<<20)
	expect(t, "upload", a, http.StatusCreated, "")
	a = be.downloadURL(t, "", bigID)
	resp, err := http.Get(be.url + a.json(t)["url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	buf := make([]byte, 1<<20)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		got += int64(n)
		if err != nil {
			break
		}
		time.Sleep(80 * time.Millisecond)
	}
	resp.Body.Close()
	if got != 32<<20 {
		t.Fatalf("slow download got %d bytes, want %d", got, 32<<20)
	}

	<-putDone
	<-putDone

	// An upload that stalls for longer than the idle timeout fails.
	stalledID, up := be.uploadURL(t, "", `{"content_type":"text/plain"}`)
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("a start"))
		time.Sleep(4 * time.Second)
		pw.CloseWithError(errors.New("client gave up"))
	}()
	req, _ := http.NewRequest(http.MethodPut, be.url+up, pr)
	req.Header.Set("Content-Type", "text/plain")
	start := time.Now()
	resp, err = http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	if d := (<-putDone).Sub(start); d > 3*time.Second {
		t.Fatalf("a stalled upload was cut after %v, want about the 1.5 s idle timeout", d)
	}
	if _, err := store.Stat(context.Background(), stalledID); err == nil {
		t.Fatal("a stalled upload was stored")
	}
}
