package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

const (
	testIssuer   = "https://idp.example.com/"
	testAudience = "lunora-chat"
)

// signingKey is a private key with its kid and algorithm.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv any
	pub  any
}

var (
	rsaOnce sync.Once
	rsaKeys [2]*rsa.PrivateKey
)

// testRSA returns one of two RSA keys, generated once per test binary.
func testRSA(t *testing.T, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for j := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[j] = k
		}
	})
	return rsaKeys[i]
}

func rsaKey(t *testing.T, kid string, i int) signingKey {
	k := testRSA(t, i)
	return signingKey{kid: kid, alg: jose.RS256, priv: k, pub: &k.PublicKey}
}

func ecKey(t *testing.T, kid string) signingKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.ES256, priv: k, pub: &k.PublicKey}
}

func edKey(t *testing.T, kid string) signingKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.EdDSA, priv: priv, pub: pub}
}

// jwksJSON is the public JWKS of keys.
func jwksJSON(t *testing.T, keys ...signingKey) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.pub, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sign makes a token with the registered claims std and the extra claims.
func sign(t *testing.T, k signingKey, std jwt.Claims, extra map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), k.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b := jwt.Signed(s).Claims(std)
	if extra != nil {
		b = b.Claims(extra)
	}
	tok, err := b.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// goodClaims are valid at now for an hour.
func goodClaims(now time.Time, sub string) jwt.Claims {
	return jwt.Claims{
		Issuer:    testIssuer,
		Subject:   sub,
		Audience:  jwt.Audience{"other-app", testAudience},
		Expiry:    jwt.NewNumericDate(now.Add(time.Hour)),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
	}
}

func writeJWKS(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newJWTAuth(t *testing.T, cfg JWTConfig, clock *fakeClock) *Authenticator {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = testIssuer
	}
	if cfg.Audience == nil {
		cfg.Audience = []string{testAudience}
	}
	a, err := New(Config{JWT: &cfg, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestJWTAccepts: RS256, ES256 and EdDSA from a JWKS file and HS256 with
// a shared secret give an identity with the token's subject, role, claims
// and expiry.
func TestJWTAccepts(t *testing.T) {
	clock := newFakeClock()
	rk, ek, dk := rsaKey(t, "r1", 0), ecKey(t, "e1"), edKey(t, "d1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, jwksJSON(t, rk, ek, dk))
	secret := []byte(strings.Repeat("s", 32))
	a := newJWTAuth(t, JWTConfig{JWKSFile: path, HS256Secret: secret}, clock)
	now := clock.Now()
	hk := signingKey{alg: jose.HS256, priv: secret}
	for _, k := range []signingKey{rk, ek, dk, hk} {
		t.Run(string(k.alg), func(t *testing.T) {
			tok := sign(t, k, goodClaims(now, "alice"), map[string]any{"rooms": []string{"r1", "r2"}, "org": 7})
			id, err := a.Authenticate(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			if id.Method != MethodJWT || id.Role != RoleClient || id.Subject != "alice" {
				t.Fatalf("identity %+v", id)
			}
			if want := now.Add(time.Hour).Add(time.Minute); !id.Expires.Equal(want) {
				t.Fatalf("Expires %v; want exp + the default leeway, %v", id.Expires, want)
			}
			rooms, _ := id.Claims["rooms"].([]any)
			if len(rooms) != 2 || rooms[0] != "r1" || id.Claims["org"] != float64(7) || id.Claims["sub"] != "alice" {
				t.Fatalf("claims %#v", id.Claims)
			}
		})
	}
	// A key without kid in the token: any JWKS key of the right type may
	// verify it.
	nokid := rk
	nokid.kid = ""
	if _, err := a.Authenticate(context.Background(), sign(t, nokid, goodClaims(now, "bob"), nil)); err != nil {
		t.Fatalf("token without kid: %v", err)
	}
}

func TestJWTRoleClaim(t *testing.T) {
	clock := newFakeClock()
	rk := rsaKey(t, "r1", 0)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, jwksJSON(t, rk))
	a := newJWTAuth(t, JWTConfig{JWKSFile: path, RoleClaim: "lunora_role"}, clock)
	now := clock.Now()
	ctx := context.Background()
	for _, tc := range []struct {
		extra map[string]any
		role  Role
		err   string
	}{
		{nil, RoleClient, ""},
		{map[string]any{"lunora_role": "service"}, RoleService, ""},
		{map[string]any{"lunora_role": "admin", "role": "client"}, RoleAdmin, ""},
		{map[string]any{"role": "admin"}, RoleClient, ""}, // not the configured claim
		{map[string]any{"lunora_role": "root"}, "", `"lunora_role" must be admin, service or client`},
		{map[string]any{"lunora_role": 1}, "", `"lunora_role" must be admin, service or client`},
	} {
		id, err := a.Authenticate(ctx, sign(t, rk, goodClaims(now, "u"), tc.extra))
		if tc.err != "" {
			wantUnauthenticated(t, err, tc.err)
			continue
		}
		if err != nil || id.Role != tc.role {
			t.Fatalf("%v: %+v, %v; want role %s", tc.extra, id, err, tc.role)
		}
	}
}

// noneToken is a token with alg none and no signature.
func noneToken(claims map[string]any) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	p, _ := json.Marshal(claims)
	return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// TestJWTRefused: every kind of bad token is UNAUTHENTICATED with a
// message that says what is wrong.
func TestJWTRefused(t *testing.T) {
	clock := newFakeClock()
	rk, other := rsaKey(t, "r1", 0), rsaKey(t, "r1", 1) // other: same kid, another key
	ek := ecKey(t, "e1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, jwksJSON(t, rk, ek))
	a := newJWTAuth(t, JWTConfig{JWKSFile: path, Leeway: 30 * time.Second}, clock)
	now := clock.Now()
	good := sign(t, rk, goodClaims(now, "alice"), nil)
	parts := strings.Split(good, ".")
	evilPayload, _ := json.Marshal(map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "mallory", "exp": now.Add(time.Hour).Unix(), "role": "admin"})
	tamperedPayload := parts[0] + "." + base64.RawURLEncoding.EncodeToString(evilPayload) + "." + parts[2]
	// Swap one base64url character in the middle of the signature for
	// another valid one, so the token still decodes but the bytes differ.
	sig := []byte(parts[2])
	if sig[10] == 'A' {
		sig[10] = 'B'
	} else {
		sig[10] = 'A'
	}
	tamperedSig := parts[0] + "." + parts[1] + "." + string(sig)

	claims := func(mod func(*jwt.Claims)) jwt.Claims {
		c := goodClaims(now, "alice")
		mod(&c)
		return c
	}
	// HS256 signed with the RSA public key's bytes: the classic algorithm
	// confusion; HS256 is not configured here.
	pubDER, _ := json.Marshal(jose.JSONWebKey{Key: &testRSA(t, 0).PublicKey})
	confused := sign(t, signingKey{kid: "r1", alg: jose.HS256, priv: pubDER}, goodClaims(now, "alice"), nil)

	for _, tc := range []struct {
		name, token, msg string
	}{
		{"empty", "", "authentication required"},
		{"malformed", "not-a-token", "malformed token"},
		{"two parts", "abc.def", "malformed token"},
		{"bad base64 header", "!!!.e30.sig", "malformed token"},
		{"header not json", base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".e30.sig", "malformed token"},
		{"alg none", noneToken(map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "x", "exp": now.Add(time.Hour).Unix()}), `algorithm "none" is not accepted`},
		{"HS256 not configured", confused, `algorithm "HS256" is not accepted`},
		{"RS384", sign(t, signingKey{kid: "r1", alg: jose.RS384, priv: testRSA(t, 0)}, goodClaims(now, "alice"), nil), `algorithm "RS384" is not accepted`},
		{"tampered payload", tamperedPayload, "signature does not verify"},
		{"tampered signature", tamperedSig, "signature does not verify"},
		{"wrong key", sign(t, other, goodClaims(now, "alice"), nil), "signature does not verify"},
		{"unknown kid", sign(t, rsaKey(t, "r9", 1), goodClaims(now, "alice"), nil), `key id "r9" is not in the JWKS`},
		{"expired", sign(t, rk, claims(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-31 * time.Second)) }), nil), "token expired at"},
		{"no exp", sign(t, rk, claims(func(c *jwt.Claims) { c.Expiry = nil }), nil), "no exp"},
		{"not yet valid", sign(t, rk, claims(func(c *jwt.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(31 * time.Second)) }), nil), "not valid before"},
		{"issued in the future", sign(t, rk, claims(func(c *jwt.Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Minute)) }), nil), "issued in the future"},
		{"wrong audience", sign(t, rk, claims(func(c *jwt.Claims) { c.Audience = jwt.Audience{"other-app"} }), nil), "audience"},
		{"no audience", sign(t, rk, claims(func(c *jwt.Claims) { c.Audience = nil }), nil), "audience"},
		{"wrong issuer", sign(t, rk, claims(func(c *jwt.Claims) { c.Issuer = "https://evil.example.com/" }), nil), "issuer"},
		{"too long", strings.Repeat("a", MaxTokenLen+1), "over the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := a.Authenticate(context.Background(), tc.token)
			if err == nil {
				t.Fatalf("accepted: %+v", id)
			}
			wantUnauthenticated(t, err, tc.msg)
			t.Log(err)
		})
	}
	// Within the leeway, exp and nbf pass.
	edge := sign(t, rk, claims(func(c *jwt.Claims) {
		c.Expiry = jwt.NewNumericDate(now.Add(-29 * time.Second))
		c.NotBefore = jwt.NewNumericDate(now.Add(29 * time.Second))
	}), nil)
	if _, err := a.Authenticate(context.Background(), edge); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	// The token goes stale as the clock moves.
	clock.Advance(time.Hour + 31*time.Second)
	_, err := a.Authenticate(context.Background(), good)
	wantUnauthenticated(t, err, "token expired at")
}

func TestJWTConfigRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, jwksJSON(t, ecKey(t, "e")))
	for _, tc := range []struct {
		cfg JWTConfig
		msg string
	}{
		{JWTConfig{Audience: []string{"a"}, JWKSFile: path}, "issuer is required"},
		{JWTConfig{Issuer: "i", JWKSFile: path}, "audience is required"},
		{JWTConfig{Issuer: "i", Audience: []string{""}, JWKSFile: path}, "audience must not be empty"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}}, "JWKS file, a JWKS URL or an HS256 secret"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}, JWKSFile: path, JWKSURL: "http://x"}, "not both"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}, HS256Secret: []byte("short")}, "at least 32"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}, JWKSFile: path, Leeway: 6 * time.Minute}, "leeway"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}, JWKSFile: path + ".missing"}, "JWKS file"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}, JWKSURL: "http://idp.example.com/jwks"}, "use https"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}, JWKSURL: "ftp://idp.example.com/jwks"}, "scheme must be https"},
		{JWTConfig{Issuer: "i", Audience: []string{"a"}, JWKSURL: "https:///jwks"}, "names no host"},
	} {
		cfg := tc.cfg
		_, err := New(Config{JWT: &cfg})
		if api.CodeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: %v; want INVALID_ARGUMENT saying %q", tc.cfg, err, tc.msg)
		}
	}
	// A JWKS with no usable key (a symmetric key only) is refused.
	oct, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte(strings.Repeat("k", 32)), KeyID: "o"}}})
	writeJWKS(t, path, oct)
	if _, err := New(Config{JWT: &JWTConfig{Issuer: "i", Audience: []string{"a"}, JWKSFile: path}}); err == nil || !strings.Contains(err.Error(), "no usable public signing key") {
		t.Fatalf("symmetric-only JWKS: %v", err)
	}
}

// TestJWKSFileRotation: a key added to (or removed from) the JWKS file is
// used from the next token on, without a restart.
func TestJWKSFileRotation(t *testing.T) {
	clock := newFakeClock()
	k1, k2 := ecKey(t, "2026-01"), edKey(t, "2026-02")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, jwksJSON(t, k1))
	a := newJWTAuth(t, JWTConfig{JWKSFile: path}, clock)
	ctx := context.Background()
	now := clock.Now()
	tok1, tok2 := sign(t, k1, goodClaims(now, "a"), nil), sign(t, k2, goodClaims(now, "a"), nil)
	if _, err := a.Authenticate(ctx, tok1); err != nil {
		t.Fatal(err)
	}
	_, err := a.Authenticate(ctx, tok2)
	wantUnauthenticated(t, err, `"2026-02" is not in the JWKS`)

	writeJWKS(t, path, jwksJSON(t, k1, k2))
	if _, err := a.Authenticate(ctx, tok2); err != nil {
		t.Fatalf("after adding the new key: %v", err)
	}
	writeJWKS(t, path, jwksJSON(t, k2))
	_, err = a.Authenticate(ctx, tok1)
	wantUnauthenticated(t, err, `"2026-01" is not in the JWKS`)
	// A broken file keeps the last good key set, and a refusal says the
	// update did not load.
	writeJWKS(t, path, []byte("{not json"))
	if _, err := a.Authenticate(ctx, tok2); err != nil {
		t.Fatalf("after a broken write: %v", err)
	}
	_, err = a.Authenticate(ctx, tok1)
	wantUnauthenticated(t, err, "the JWKS's last update did not load: not a JWKS JSON document")
}

// jwksServer serves a swappable JWKS and counts fetches.
type jwksServer struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	fetches atomic.Int64
	fail    atomic.Bool
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{}
	s.set(body)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if s.fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(b []byte) { s.body.Store(&b) }

// TestJWKSURLRotationOnUnknownKid: a token with a kid the cached JWKS does
// not hold fetches the URL again — at most once per JWKSMinRefresh.
func TestJWKSURLRotationOnUnknownKid(t *testing.T) {
	clock := newFakeClock()
	k1, k2 := rsaKey(t, "old", 0), rsaKey(t, "new", 1)
	srv := newJWKSServer(t, jwksJSON(t, k1))
	a := newJWTAuth(t, JWTConfig{JWKSURL: srv.URL, JWKSRefresh: time.Hour}, clock)
	ctx := context.Background()
	now := clock.Now()
	tok1, tok2 := sign(t, k1, goodClaims(now, "a"), nil), sign(t, k2, goodClaims(now, "a"), nil)
	if _, err := a.Authenticate(ctx, tok1); err != nil {
		t.Fatal(err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after start; want 1", n)
	}
	// The provider rotates; the first token with the new kid arrives
	// within JWKSMinRefresh of the last fetch: no fetch, refused.
	srv.set(jwksJSON(t, k1, k2))
	_, err := a.Authenticate(ctx, tok2)
	wantUnauthenticated(t, err, `"new" is not in the JWKS`)
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches; an unknown kid within %s of the last fetch must not fetch", n, JWKSMinRefresh)
	}
	clock.Advance(JWKSMinRefresh)
	if _, err := a.Authenticate(ctx, tok2); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches; want 2", n)
	}
	// Many tokens with unknown kids cost at most one fetch per interval.
	for i := 0; i < 20; i++ {
		a.Authenticate(ctx, sign(t, rsaKey(t, "bogus", 1), goodClaims(now, "a"), nil))
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after 20 unknown kids; want 2", n)
	}
}

// TestJWKSURLScheduledRefresh: the JWKS URL is fetched on schedule, so a
// key the provider withdraws stops verifying without any restart; while the
// provider is down the last good set keeps serving.
func TestJWKSURLScheduledRefresh(t *testing.T) {
	clock := newFakeClock()
	k1, k2 := ecKey(t, "k1"), ecKey(t, "k2")
	srv := newJWKSServer(t, jwksJSON(t, k1, k2))
	a := newJWTAuth(t, JWTConfig{JWKSURL: srv.URL, JWKSRefresh: 10 * time.Millisecond}, clock)
	ctx := context.Background()
	now := clock.Now()
	tok1 := sign(t, k1, goodClaims(now, "a"), nil)
	if _, err := a.Authenticate(ctx, tok1); err != nil {
		t.Fatal(err)
	}
	srv.fail.Store(true)
	base := srv.fetches.Load()
	waitFor(t, func() bool { return srv.fetches.Load() >= base+2 })
	if _, err := a.Authenticate(ctx, tok1); err != nil {
		t.Fatalf("provider down: the last good set must keep serving: %v", err)
	}
	srv.set(jwksJSON(t, k2))
	srv.fail.Store(false)
	waitFor(t, func() bool {
		_, err := a.Authenticate(ctx, tok1)
		return err != nil && strings.Contains(err.Error(), `"k1" is not in the JWKS`)
	})
}

// TestJWKSURLDownAtStart: New succeeds while the provider is down; tokens
// answer UNAVAILABLE until a fetch succeeds.
func TestJWKSURLDownAtStart(t *testing.T) {
	clock := newFakeClock()
	k := edKey(t, "k")
	srv := newJWKSServer(t, jwksJSON(t, k))
	srv.fail.Store(true)
	a := newJWTAuth(t, JWTConfig{JWKSURL: srv.URL, JWKSRefresh: time.Hour}, clock)
	tok := sign(t, k, goodClaims(clock.Now(), "a"), nil)
	_, err := a.Authenticate(context.Background(), tok)
	if api.CodeOf(err) != codes.Unavailable || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("provider down: %v (%v); want UNAVAILABLE naming the failure", err, api.CodeOf(err))
	}
	srv.fail.Store(false)
	clock.Advance(JWKSMinRefresh)
	if _, err := a.Authenticate(context.Background(), tok); err != nil {
		t.Fatalf("provider back: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestJWKSURLRedirectDowngrade: a redirect from the JWKS URL to a plain
// http host is not followed.
func TestJWKSURLRedirectDowngrade(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("http://idp.example.com/jwks.json", http.StatusFound))
	defer srv.Close()
	clock := newFakeClock()
	a := newJWTAuth(t, JWTConfig{JWKSURL: srv.URL, JWKSRefresh: time.Hour}, clock)
	k := edKey(t, "k")
	_, err := a.Authenticate(context.Background(), sign(t, k, goodClaims(clock.Now(), "a"), nil))
	if api.CodeOf(err) != codes.Unavailable || !strings.Contains(err.Error(), "use https") {
		t.Fatalf("redirect to http: %v (%v); want UNAVAILABLE saying use https", err, api.CodeOf(err))
	}
}
