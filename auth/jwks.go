package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

// maxJWKSBytes bounds a JWKS document.
const maxJWKSBytes = 1 << 20

// jwksFetchTimeout bounds one fetch of a JWKS URL.
const jwksFetchTimeout = 10 * time.Second

// keySet is one loaded JWKS: its public signing keys.
type keySet struct {
	keys []jose.JSONWebKey
}

// parseJWKS keeps the public signing keys of a JWKS document. Entries it
// cannot use (symmetric keys, encryption keys, unknown key types) are
// skipped; a document with no usable key is an error.
func parseJWKS(data []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS JSON document: %v", err)
	}
	set := &keySet{}
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if json.Unmarshal(raw, &k) != nil || !k.Valid() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		if !k.IsPublic() {
			pub := k.Public()
			if !pub.Valid() {
				continue // symmetric
			}
			k = pub
		}
		set.keys = append(set.keys, k)
	}
	if len(set.keys) == 0 {
		return nil, fmt.Errorf("the JWKS holds no usable public signing key (RSA, P-256 EC or Ed25519)")
	}
	return set, nil
}

// candidates returns the keys that may have signed a token with this kid
// and alg: the same kid (any kid when the token names none), a key alg
// that is unset or equal, and a key type that fits the algorithm.
func (s *keySet) candidates(kid string, alg jose.SignatureAlgorithm) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range s.keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != string(alg) {
			continue
		}
		if keyFits(k.Key, alg) {
			out = append(out, k)
		}
	}
	return out
}

func keyFits(key any, alg jose.SignatureAlgorithm) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == jose.RS256
	case *ecdsa.PublicKey:
		return alg == jose.ES256 && k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// jwksSource holds the current JWKS of a file or a URL.
type jwksSource struct {
	file    string
	url     string
	refresh time.Duration
	now     func() time.Time
	client  *http.Client

	set atomic.Pointer[keySet]

	mu          sync.Mutex // serializes loads; guards the fields below
	fileSize    int64
	fileMod     time.Time
	lastAttempt time.Time
	lastErr     error

	stop chan struct{}
	done chan struct{}
}

func newJWKSSource(cfg JWTConfig, now func() time.Time) (*jwksSource, error) {
	s := &jwksSource{file: cfg.JWKSFile, url: cfg.JWKSURL, refresh: cfg.JWKSRefresh, now: now}
	if s.file != "" {
		// A file is local: failing to read it at start is a configuration
		// error worth refusing to start over.
		st, err := os.Stat(s.file)
		if err != nil {
			return nil, api.Errorf(codes.InvalidArgument, "auth: JWKS file: %v", err)
		}
		s.mu.Lock()
		err = s.loadFileLocked(st)
		s.mu.Unlock()
		if err != nil {
			return nil, api.Errorf(codes.InvalidArgument, "auth: JWKS file %s: %v", s.file, err)
		}
		return s, nil
	}
	// A URL may be down for a while when the gateway starts; API keys keep
	// working, tokens answer UNAVAILABLE until a fetch succeeds.
	s.client = &http.Client{
		Timeout: jwksFetchTimeout,
		// A redirect must meet the URL's own rule: no downgrade to http.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return fmt.Errorf("more than 5 redirects")
			}
			return checkJWKSURL(req.URL.String())
		},
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	s.mu.Lock()
	s.fetchLocked(ctx)
	s.mu.Unlock()
	cancel()
	go s.refreshLoop()
	return s, nil
}

func (s *jwksSource) close() {
	if s.stop != nil {
		select {
		case <-s.stop:
		default:
			close(s.stop)
		}
		<-s.done
	}
}

func (s *jwksSource) refreshLoop() {
	defer close(s.done)
	t := time.NewTicker(s.refresh)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
			go func() { // a Close during a slow fetch does not wait for it
				select {
				case <-s.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			s.mu.Lock()
			s.fetchLocked(ctx)
			s.mu.Unlock()
			cancel()
		}
	}
}

// current returns the key set to verify with, re-reading a file that
// changed since it was loaded.
func (s *jwksSource) current(ctx context.Context) (*keySet, error) {
	if s.file != "" {
		st, err := os.Stat(s.file)
		s.mu.Lock()
		if err == nil && (st.Size() != s.fileSize || !st.ModTime().Equal(s.fileMod)) {
			s.lastErr = s.loadFileLocked(st)
		}
		s.mu.Unlock()
		return s.set.Load(), nil // a file source always has a set: New loaded one
	}
	if set := s.set.Load(); set != nil {
		return set, nil
	}
	return s.refreshForKid(ctx, "")
}

// loadError is why the last load of the file or URL failed; nil if it
// succeeded.
func (s *jwksSource) loadError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// refreshForKid fetches a JWKS URL again because a token names a kid it
// does not hold (or no set is loaded yet), at most once per JWKSMinRefresh.
func (s *jwksSource) refreshForKid(ctx context.Context, kid string) (*keySet, error) {
	if s.file != "" {
		return s.set.Load(), nil // current already re-read a changed file
	}
	s.mu.Lock()
	if s.lastAttempt.IsZero() || s.now().Sub(s.lastAttempt) >= JWKSMinRefresh {
		fctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
		s.fetchLocked(fctx)
		cancel()
	}
	lastErr := s.lastErr
	s.mu.Unlock()
	if set := s.set.Load(); set != nil {
		return set, nil
	}
	return nil, &api.Error{Code: codes.Unavailable, Msg: fmt.Sprintf("cannot verify the token: the JWKS from %s is not loaded (%v)", s.url, lastErr), RetryAfter: JWKSMinRefresh, Err: lastErr}
}

// loadFileLocked reads the file and, if it parses, makes it the current
// set. A file that does not parse leaves the previous set in place; the
// recorded size and time make it be read again only when it changes.
func (s *jwksSource) loadFileLocked(st os.FileInfo) error {
	s.fileSize, s.fileMod = st.Size(), st.ModTime()
	f, err := os.Open(s.file)
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return err
	}
	if len(data) > maxJWKSBytes {
		return fmt.Errorf("over %d bytes", maxJWKSBytes)
	}
	set, err := parseJWKS(data)
	if err != nil {
		return err
	}
	s.set.Store(set)
	return nil
}

// fetchLocked fetches the URL and, if it parses, makes it the current set.
func (s *jwksSource) fetchLocked(ctx context.Context) {
	s.lastAttempt = s.now()
	set, err := s.fetch(ctx)
	s.lastErr = err
	if err == nil {
		s.set.Store(set)
	}
}

func (s *jwksSource) fetch(ctx context.Context) (*keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", s.url, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("GET %s: over %d bytes", s.url, maxJWKSBytes)
	}
	return parseJWKS(data)
}
