package blob

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testSigner(t *testing.T, secrets ...string) *Signer {
	t.Helper()
	var b [][]byte
	for _, s := range secrets {
		b = append(b, []byte(s))
	}
	s, err := NewSigner(b...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	secretA = "0123456789abcdef0123456789abcdef"
	secretB = "fedcba9876543210fedcba9876543210"
)

func TestSignerVerify(t *testing.T) {
	s := testSigner(t, secretA)
	now := time.Unix(1_800_000_000, 0)
	s.now = func() time.Time { return now }
	g := Grant{Method: "PUT", ID: "b1", Expires: now.Add(time.Minute), MaxSize: 100, ContentType: "image/png", Owner: "alice"}
	q := s.Query(g)
	got, err := s.Verify("PUT", "b1", q)
	if err != nil || got != g {
		t.Fatalf("Verify = %+v, %v; want %+v", got, err, g)
	}

	// Any change of a signed field breaks the signature.
	for _, tc := range []struct {
		name   string
		method string
		id     string
		edit   func(url.Values)
	}{
		{"method", "GET", "b1", func(url.Values) {}},
		{"id", "PUT", "b2", func(url.Values) {}},
		{"expiry", "PUT", "b1", func(q url.Values) { q.Set("exp", "1900000000") }},
		{"max", "PUT", "b1", func(q url.Values) { q.Set("max", "1000000") }},
		{"content type", "PUT", "b1", func(q url.Values) { q.Set("ct", "text/html") }},
		{"owner", "PUT", "b1", func(q url.Values) { q.Set("own", "mallory") }},
		{"signature", "PUT", "b1", func(q url.Values) { q.Set("sig", q.Get("sig")[:10]+"AAAA"+q.Get("sig")[14:]) }},
		{"signature not base64", "PUT", "b1", func(q url.Values) { q.Set("sig", "!!") }},
	} {
		q2 := url.Values{}
		for k, v := range q {
			q2[k] = append([]string(nil), v...)
		}
		tc.edit(q2)
		if _, err := s.Verify(tc.method, tc.id, q2); !errors.Is(err, ErrBadSignature) {
			t.Errorf("tampered %s: %v, want ErrBadSignature", tc.name, err)
		}
	}
	q3 := url.Values{"exp": q["exp"]}
	if _, err := s.Verify("PUT", "b1", q3); !errors.Is(err, ErrNoSignature) {
		t.Errorf("no signature: %v, want ErrNoSignature", err)
	}

	// Expiry is checked after the signature, at the exact second.
	now = g.Expires
	if _, err := s.Verify("PUT", "b1", q); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v, want ErrExpired", err)
	}
}

// TestSignerRotation: the first secret signs, all verify; a dropped
// secret's URLs stop working.
func TestSignerRotation(t *testing.T) {
	old := testSigner(t, secretA)
	g := Grant{Method: "GET", ID: "b1", Expires: time.Now().Add(time.Hour).Truncate(time.Second)}
	q := old.Query(g)
	rotated := testSigner(t, secretB, secretA)
	if _, err := rotated.Verify("GET", "b1", q); err != nil {
		t.Fatalf("old URL after rotation: %v", err)
	}
	if rq := rotated.Query(g); rq.Get("sig") == q.Get("sig") {
		t.Fatal("rotated signer still signs with the old secret")
	}
	dropped := testSigner(t, secretB)
	if _, err := dropped.Verify("GET", "b1", q); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("URL of a dropped secret: %v, want ErrBadSignature", err)
	}
	if _, err := NewSigner([]byte("short")); err == nil {
		t.Fatal("NewSigner took a 5-byte secret")
	}
}

func TestLoadOrCreateSigner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "blob-secret")
	s1, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v", fi, err)
	}
	s2, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s1.keys[0], s2.keys[0]) {
		t.Fatal("a second start made a new secret")
	}
	// Two secrets, comments, blank lines.
	p2 := filepath.Join(t.TempDir(), "secrets")
	os.WriteFile(p2, []byte("# new first\n"+secretB+"\n\n"+secretA+"\n"), 0o600)
	s3, err := LoadSigner(p2)
	if err != nil || len(s3.keys) != 2 || string(s3.keys[0]) != secretB {
		t.Fatalf("LoadSigner = %v, %v", s3, err)
	}
	os.WriteFile(p2, []byte("tooshort\n"), 0o600)
	if _, err := LoadSigner(p2); err == nil {
		t.Fatal("LoadSigner took a short secret")
	}
}
