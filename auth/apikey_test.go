package auth

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

// fakeClock is a settable clock for the TTL and token time checks.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// memKeys is an in-memory KeyStore that counts lookups.
type memKeys struct {
	mu      sync.Mutex
	recs    map[string]KeyRecord
	lookups int
	err     error
}

func (m *memKeys) LookupKey(_ context.Context, id string) (*KeyRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	if m.err != nil {
		return nil, m.err
	}
	r, ok := m.recs[id]
	if !ok {
		return nil, nil
	}
	return &r, nil
}

func (m *memKeys) put(r KeyRecord) {
	m.mu.Lock()
	m.recs[r.ID] = r
	m.mu.Unlock()
}

func (m *memKeys) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookups
}

func wantUnauthenticated(t *testing.T, err error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want UNAUTHENTICATED (%s)", msg)
	}
	if api.CodeOf(err) != codes.Unauthenticated {
		t.Fatalf("code %v (%v); want UNAUTHENTICATED", api.CodeOf(err), err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Fatalf("error %q does not say %q", err, msg)
	}
}

func TestNewKeyFormat(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tok, rec, err := NewKey("ci", RoleService, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != keyTokenLen || !strings.HasPrefix(tok, "lk_"+rec.ID+"_") || len(rec.ID) != 16 {
		t.Fatalf("token %q / id %q not lk_<16 hex>_<secret>", tok, rec.ID)
	}
	if rec.Name != "ci" || rec.Role != RoleService || !rec.Created.Equal(now) || !rec.Revoked.IsZero() || len(rec.Hash) != 32 {
		t.Fatalf("record %+v", rec)
	}
	if strings.Contains(string(rec.Hash), tok[len(tok)-43:]) {
		t.Fatal("record holds the secret")
	}
	id, hash, ok := ParseKey(tok)
	if !ok || id != rec.ID || string(hash[:]) != string(rec.Hash) {
		t.Fatalf("ParseKey(%q) = %q, %x, %v", tok, id, hash, ok)
	}
	// The last character carries two unused bits: a spelling that sets
	// them is not the same key.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	if _, _, ok := ParseKey(tok[:len(tok)-1] + string(alphabet[last^1])); ok {
		t.Fatal("a non-canonical spelling of the secret parsed")
	}
	tok2, rec2, _ := NewKey("ci", RoleService, now)
	if tok2 == tok || rec2.ID == rec.ID {
		t.Fatal("two keys are equal")
	}
	if _, _, err := NewKey("x", Role("root"), now); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("role root: %v", err)
	}
	for _, bad := range []string{"", "lk_", tok[:len(tok)-1], tok + "A", "lk_" + strings.ToUpper(rec.ID) + tok[19:], strings.Replace(tok, "_", "-", 2), tok[:len(tok)-2] + "*A"} {
		if _, _, ok := ParseKey(bad); ok {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestAPIKeyAuthenticate(t *testing.T) {
	clock := newFakeClock()
	store := &memKeys{recs: map[string]KeyRecord{}}
	tok, rec, err := NewKey("web", RoleClient, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	store.put(rec)
	a, err := New(Config{Keys: store, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	id, err := a.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Method != MethodAPIKey || id.Role != RoleClient || id.Subject != rec.ID || !id.Expires.IsZero() ||
		id.Claims["sub"] != rec.ID || id.Claims["role"] != "client" || id.Claims["name"] != "web" {
		t.Fatalf("identity %+v", id)
	}

	// Wrong secret, same id: refused, and the message never echoes it.
	other, _, _ := NewKey("x", RoleClient, clock.Now())
	forged := tok[:len(KeyPrefix)+keyIDLen+1] + other[len(KeyPrefix)+keyIDLen+1:]
	_, err = a.Authenticate(ctx, forged)
	wantUnauthenticated(t, err, "unknown or its secret is wrong")
	if strings.Contains(err.Error(), forged[20:]) {
		t.Fatalf("error echoes the secret: %v", err)
	}
	if !errors.Is(err, ErrBadCredential) {
		t.Fatalf("not ErrBadCredential: %v", err)
	}
	_, err = a.Authenticate(ctx, other)
	wantUnauthenticated(t, err, "unknown or its secret is wrong")
	_, err = a.Authenticate(ctx, "lk_nothex")
	wantUnauthenticated(t, err, "malformed API key")
	_, err = a.Authenticate(ctx, "")
	wantUnauthenticated(t, err, "authentication required")
	if !errors.Is(err, ErrNoCredential) {
		t.Fatalf("empty credential: %v", err)
	}
	_, err = a.Authenticate(ctx, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
	wantUnauthenticated(t, err, "JWT bearer tokens are not configured")

	// A bad role in the store is refused, not defaulted.
	badTok, bad, _ := NewKey("b", RoleClient, clock.Now())
	bad.Role = "root"
	store.put(bad)
	_, err = a.Authenticate(ctx, badTok)
	wantUnauthenticated(t, err, "no valid role")

	noKeys, _ := New(Config{})
	_, err = noKeys.Authenticate(ctx, tok)
	wantUnauthenticated(t, err, "API keys are not enabled")
}

// TestAPIKeyRevocationBound: a revoked key keeps working only while the
// gateway's cached lookup is younger than KeyCacheTTL, then fails. Hits
// and misses are cached for the same TTL.
func TestAPIKeyRevocationBound(t *testing.T) {
	clock := newFakeClock()
	store := &memKeys{recs: map[string]KeyRecord{}}
	tok, rec, _ := NewKey("svc", RoleService, clock.Now())
	store.put(rec)
	const ttl = 5 * time.Second
	a, err := New(Config{Keys: store, KeyCacheTTL: ttl, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := a.Authenticate(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.count(); n != 1 {
		t.Fatalf("%d lookups for three uses within the TTL; want 1 (cached hit)", n)
	}
	rec.Revoked = clock.Now()
	store.put(rec)
	clock.Advance(ttl - time.Millisecond)
	if _, err := a.Authenticate(ctx, tok); err != nil {
		t.Fatalf("within the TTL the cached record still answers: %v", err)
	}
	clock.Advance(time.Millisecond)
	_, err = a.Authenticate(ctx, tok)
	wantUnauthenticated(t, err, "was revoked at")
	if n := store.count(); n != 2 {
		t.Fatalf("%d lookups; want 2", n)
	}
	// The revocation is cached too.
	clock.Advance(ttl / 2)
	_, err = a.Authenticate(ctx, tok)
	wantUnauthenticated(t, err, "was revoked at")
	if n := store.count(); n != 2 {
		t.Fatalf("%d lookups; want 2 (cached revocation)", n)
	}

	// A miss is cached: a key created after a failed lookup works once the
	// TTL has passed.
	tok2, rec2, _ := NewKey("late", RoleClient, clock.Now())
	_, err = a.Authenticate(ctx, tok2)
	wantUnauthenticated(t, err, "unknown")
	store.put(rec2)
	_, err = a.Authenticate(ctx, tok2)
	wantUnauthenticated(t, err, "unknown")
	clock.Advance(ttl)
	if _, err := a.Authenticate(ctx, tok2); err != nil {
		t.Fatalf("after the TTL the new key works: %v", err)
	}
}

func TestAPIKeyStoreDown(t *testing.T) {
	store := &memKeys{recs: map[string]KeyRecord{}, err: errors.New("no leader")}
	a, _ := New(Config{Keys: store})
	tok, _, _ := NewKey("k", RoleAdmin, time.Now())
	_, err := a.Authenticate(context.Background(), tok)
	if api.CodeOf(err) != codes.Unavailable || api.RetryAfterOf(err) == 0 {
		t.Fatalf("store down: %v (%v); want UNAVAILABLE with a retry hint", err, api.CodeOf(err))
	}
	store.mu.Lock()
	store.err = nil
	store.mu.Unlock()
	// The failure is not cached: the next call asks again.
	_, err = a.Authenticate(context.Background(), tok)
	wantUnauthenticated(t, err, "unknown")
}

func TestBearerFrom(t *testing.T) {
	for in, want := range map[string]string{
		"Bearer abc":    "abc",
		"bearer abc":    "abc",
		"BEARER  abc ":  "abc",
		"Bearer":        "",
		"Bearer ":       "",
		"Basic abc":     "",
		"":              "",
		"Bearer a b":    "",
		"Bearerabc":     "",
		"Bearer lk_x_y": "lk_x_y",
	} {
		if got := BearerFrom(in); got != want {
			t.Errorf("BearerFrom(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestNewConfigRefused(t *testing.T) {
	if _, err := New(Config{KeyCacheTTL: -1}); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("negative TTL: %v", err)
	}
}
