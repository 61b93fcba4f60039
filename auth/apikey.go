package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

// An API key is "lk_<id>_<secret>": id is 16 hex characters (8 random
// bytes), secret 32 random bytes in unpadded base64url. The server stores
// only the id and SHA-256 of the secret's bytes.
const (
	// KeyPrefix starts every API key; a bearer credential with it is
	// checked as an API key, anything else as a JWT.
	KeyPrefix    = "lk_"
	keyIDLen     = 16
	keySecretLen = 32
	// keyTokenLen is the length of a well-formed key.
	keyTokenLen = len(KeyPrefix) + keyIDLen + 1 + 43
)

// KeyRecord is a stored API key. It never holds the secret.
type KeyRecord struct {
	ID      string
	Name    string
	Role    Role
	Hash    []byte // SHA-256 of the secret
	Created time.Time
	Revoked time.Time // zero: live
}

// NewKey makes a new key: the token to hand out once and the record to
// store.
func NewKey(name string, role Role, now time.Time) (token string, rec KeyRecord, err error) {
	if !role.Valid() {
		return "", KeyRecord{}, api.Errorf(codes.InvalidArgument, "API key role %q is not admin, service or client", role)
	}
	var buf [8 + keySecretLen]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", KeyRecord{}, fmt.Errorf("auth: random key: %w", err)
	}
	id := hex.EncodeToString(buf[:8])
	secret := buf[8:]
	sum := sha256.Sum256(secret)
	token = KeyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret)
	return token, KeyRecord{ID: id, Name: name, Role: role, Hash: sum[:], Created: now}, nil
}

// KeyStore reads key records.
//
// LookupKey returns (nil, nil) when the id is unknown; an error only when
// the store cannot answer (the credential is then neither accepted nor
// declared invalid). It is called concurrently.
type KeyStore interface {
	LookupKey(ctx context.Context, id string) (*KeyRecord, error)
}

// ParseKey splits an API key into its id and the SHA-256 of its secret. It
// reports false for anything not shaped like a key NewKey makes.
func ParseKey(token string) (id string, hash [32]byte, ok bool) {
	if len(token) != keyTokenLen || token[:len(KeyPrefix)] != KeyPrefix || token[len(KeyPrefix)+keyIDLen] != '_' {
		return "", hash, false
	}
	id = token[len(KeyPrefix) : len(KeyPrefix)+keyIDLen]
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", hash, false
		}
	}
	var secret [keySecretLen]byte
	// Strict: one spelling per secret (no ignored trailing bits).
	n, err := base64.RawURLEncoding.Strict().Decode(secret[:], []byte(token[len(KeyPrefix)+keyIDLen+1:]))
	if err != nil || n != keySecretLen {
		return "", hash, false
	}
	return id, sha256.Sum256(secret[:]), true
}

// keyCacheMax bounds the cached lookups; beyond it expired entries are
// dropped, and if none has expired the new lookup is not cached (so a
// flood of made-up ids cannot grow the cache without bound).
const keyCacheMax = 10000

// keyCache caches LookupKey answers — hits, misses and revocations alike —
// for ttl, which bounds how long a revoked key keeps working.
type keyCache struct {
	store KeyStore
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	entries map[string]keyEntry
}

type keyEntry struct {
	rec     *KeyRecord // nil: unknown id
	fetched time.Time
}

func newKeyCache(store KeyStore, ttl time.Duration, now func() time.Time) *keyCache {
	return &keyCache{store: store, ttl: ttl, now: now, entries: map[string]keyEntry{}}
}

func (c *keyCache) lookup(ctx context.Context, id string) (*KeyRecord, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	if ok && now.Sub(e.fetched) < c.ttl && !now.Before(e.fetched) {
		return e.rec, nil
	}
	rec, err := c.store.LookupKey(ctx, id)
	if err != nil {
		if code := api.CodeOf(err); code == codes.Canceled || code == codes.DeadlineExceeded {
			return nil, err
		}
		return nil, &api.Error{Code: codes.Unavailable, Msg: "cannot check the API key now: " + err.Error(), RetryAfter: time.Second, Err: err}
	}
	if rec != nil {
		cp := *rec
		rec = &cp
	}
	c.mu.Lock()
	if len(c.entries) >= keyCacheMax {
		for k, old := range c.entries {
			if now.Sub(old.fetched) >= c.ttl || now.Before(old.fetched) {
				delete(c.entries, k)
			}
		}
	}
	if len(c.entries) < keyCacheMax {
		c.entries[id] = keyEntry{rec: rec, fetched: now}
	}
	c.mu.Unlock()
	return rec, nil
}

func (c *keyCache) authenticate(ctx context.Context, token string) (*Identity, error) {
	id, hash, ok := ParseKey(token)
	if !ok {
		return nil, api.Wrap(ErrBadCredential, "malformed API key (expected lk_<16 hex>_<43 base64url characters>)")
	}
	rec, err := c.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	// The same answer for an unknown id and a wrong secret: a guesser
	// learns nothing about which ids exist.
	if rec == nil || subtle.ConstantTimeCompare(hash[:], rec.Hash) != 1 {
		return nil, api.Wrap(ErrBadCredential, fmt.Sprintf("API key %s is unknown or its secret is wrong", id))
	}
	if !rec.Revoked.IsZero() {
		return nil, api.Wrap(ErrBadCredential, fmt.Sprintf("API key %s (%s) was revoked at %s", id, rec.Name, rec.Revoked.UTC().Format(time.RFC3339)))
	}
	if !rec.Role.Valid() {
		return nil, api.Wrap(ErrBadCredential, fmt.Sprintf("API key %s has no valid role (%q)", id, rec.Role))
	}
	return &Identity{
		Method:  MethodAPIKey,
		Role:    rec.Role,
		Subject: rec.ID,
		Claims:  map[string]any{"sub": rec.ID, "role": string(rec.Role), "name": rec.Name},
	}, nil
}
