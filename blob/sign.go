package blob

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Grant is what a signed URL allows: one method on one blob until
// Expires. An upload grant also bounds the body (MaxSize) and fixes its
// content type; Owner is recorded as the uploader.
type Grant struct {
	Method      string // "PUT" or "GET"
	ID          string
	Expires     time.Time // whole seconds
	MaxSize     int64     // PUT only
	ContentType string    // PUT only
	Owner       string    // PUT only
}

// Errors of a signed URL, all PERMISSION_DENIED (HTTP 403).
var (
	ErrNoSignature  = api.New(codes.PermissionDenied, "this URL is not signed: ask POST /v1/blobs/upload-url or /v1/blobs/download-url for one")
	ErrBadSignature = api.New(codes.PermissionDenied, "the URL's signature does not match: it was altered, or signed with a key no longer accepted")
	ErrExpired      = api.New(codes.PermissionDenied, "the signed URL has expired: ask for a new one")
)

// MinSecretLen is the shortest accepted signing secret, in bytes.
const MinSecretLen = 32

// Signer signs and verifies blob URLs with HMAC-SHA256. It holds one or
// more secrets: the first signs, every one verifies, so a key is rotated
// by putting the new one first and dropping the old one once URLs signed
// with it have expired.
type Signer struct {
	keys [][]byte
	now  func() time.Time
}

// NewSigner returns a Signer; each secret must be at least MinSecretLen
// bytes.
func NewSigner(secrets ...[]byte) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("blob: at least one signing secret is required")
	}
	s := &Signer{now: time.Now}
	for i, k := range secrets {
		if len(k) < MinSecretLen {
			return nil, fmt.Errorf("blob: signing secret %d is %d bytes; at least %d are required", i+1, len(k), MinSecretLen)
		}
		s.keys = append(s.keys, append([]byte(nil), k...))
	}
	return s, nil
}

// LoadSigner reads secrets from a file, one a line (blank lines and lines
// starting with # are skipped), the first line signing.
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("blob: signing secret file: %w", err)
	}
	var secrets [][]byte
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		secrets = append(secrets, []byte(line))
	}
	s, err := NewSigner(secrets...)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return s, nil
}

// LoadOrCreateSigner loads the secret file at path, first writing one
// with a fresh random secret (mode 0600) when there is none: dev mode
// keeps its URLs valid across restarts.
func LoadOrCreateSigner(path string) (*Signer, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("blob: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("blob: %w", err)
		}
		if err == nil {
			_, err = f.WriteString(hex.EncodeToString(k[:]) + "\n")
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("blob: %w", err)
			}
		}
	}
	return LoadSigner(path)
}

// mac computes a grant's MAC with key. Every field is length-prefixed, so
// no two grants share a message.
func mac(key []byte, g Grant) []byte {
	h := hmac.New(sha256.New, key)
	var n [8]byte
	for _, f := range []string{"lunora-blob-v1", g.Method, g.ID, strconv.FormatInt(g.Expires.Unix(), 10), strconv.FormatInt(g.MaxSize, 10), g.ContentType, g.Owner} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return h.Sum(nil)
}

// Query returns the query string of a signed URL for g.
func (s *Signer) Query(g Grant) url.Values {
	q := url.Values{}
	q.Set("exp", strconv.FormatInt(g.Expires.Unix(), 10))
	if g.Method == "PUT" {
		q.Set("max", strconv.FormatInt(g.MaxSize, 10))
		q.Set("ct", g.ContentType)
		if g.Owner != "" {
			q.Set("own", g.Owner)
		}
	}
	q.Set("sig", base64.RawURLEncoding.EncodeToString(mac(s.keys[0], g)))
	return q
}

// Verify reads the grant a signed URL's query carries for method on id and
// checks its signature (against every key, in constant time) and then its
// expiry.
func (s *Signer) Verify(method, id string, q url.Values) (Grant, error) {
	sig := q.Get("sig")
	if sig == "" {
		return Grant{}, ErrNoSignature
	}
	g := Grant{Method: method, ID: id}
	exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
	if err != nil {
		return Grant{}, api.Wrap(ErrBadSignature, "exp is not a Unix time")
	}
	g.Expires = time.Unix(exp, 0)
	if method == "PUT" {
		if g.MaxSize, err = strconv.ParseInt(q.Get("max"), 10, 64); err != nil {
			return Grant{}, api.Wrap(ErrBadSignature, "max is not a byte count")
		}
		g.ContentType, g.Owner = q.Get("ct"), q.Get("own")
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return Grant{}, ErrBadSignature
	}
	ok := false
	for _, k := range s.keys {
		// hmac.Equal is constant-time; every key is tried.
		if hmac.Equal(got, mac(k, g)) {
			ok = true
		}
	}
	if !ok {
		return Grant{}, ErrBadSignature
	}
	if now := s.now(); !now.Before(g.Expires) {
		return Grant{}, api.Wrap(ErrExpired, fmt.Sprintf("it expired at %s", g.Expires.UTC().Format(time.RFC3339)))
	}
	return g, nil
}
