package auth

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkAuthenticate is the per-request cost at the gateway: an API key
// whose lookup is cached, and a JWT per algorithm (signature check and
// claims):
//
//	go test -run '^$' -bench BenchmarkAuthenticate ./auth/
func BenchmarkAuthenticate(b *testing.B) {
	ctx := context.Background()
	clock := newFakeClock()
	b.Run("api_key_cached", func(b *testing.B) {
		store := &memKeys{recs: map[string]KeyRecord{}}
		tok, rec, _ := NewKey("k", RoleService, clock.Now())
		store.put(rec)
		a, _ := New(Config{Keys: store, Now: clock.Now})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := a.Authenticate(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	t := &testing.T{}
	keys := []signingKey{rsaKey(t, "r", 0), ecKey(t, "e"), edKey(t, "d")}
	path := filepath.Join(b.TempDir(), "jwks.json")
	writeJWKS(t, path, jwksJSON(t, keys...))
	a, err := New(Config{JWT: &JWTConfig{Issuer: testIssuer, Audience: []string{testAudience}, JWKSFile: path}, Now: clock.Now})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	for _, k := range keys {
		tok := sign(t, k, goodClaims(clock.Now(), "alice"), map[string]any{"rooms": []string{"r1"}})
		b.Run("jwt_"+string(k.alg), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := a.Authenticate(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
