// Package blob stores large binary objects outside the shards: a Store
// keeps each blob under an ID with its metadata (size, content type,
// SHA-256, uploader), and a Signer issues and checks the expiring,
// HMAC-signed URLs through which clients upload and download them.
//
// Blobs stream: no Store holds a whole blob in memory. Two backends: a
// local directory (dev mode, one node) and any S3-compatible store
// (clusters). Rows reference blobs by ID; deleting a blob is explicit.
package blob

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Meta describes a stored blob.
type Meta struct {
	ID          string    `json:"id"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	SHA256      string    `json:"sha256"` // lowercase hex
	Created     time.Time `json:"created"`
	// Owner is the Subject of the identity that asked for the upload URL
	// ("" when none was recorded).
	Owner string `json:"owner,omitempty"`
}

// PutOptions describe an upload.
type PutOptions struct {
	// Size is the body's length when known (Content-Length), -1 when not.
	// A body that ends before or runs past a known Size is refused.
	Size int64
	// MaxSize bounds the body; reading past it fails with ErrTooLarge.
	// Required (> 0).
	MaxSize int64
	// ContentType is recorded and served back. Required.
	ContentType string
	// Owner is recorded in Meta.Owner.
	Owner string
}

// Store keeps blobs. Implementations are safe for concurrent use and
// never hold a whole blob in memory.
type Store interface {
	// Put reads r to its end and stores it under id. It fails with
	// ErrExists when id is taken (IDs are never overwritten), ErrTooLarge
	// past opts.MaxSize, ErrInvalidID for a malformed id; on any failure
	// nothing is stored.
	Put(ctx context.Context, id string, r io.Reader, opts PutOptions) (Meta, error)
	// Get opens a blob for reading; the caller closes it. The reader is
	// an io.ReadSeeker when the backend can seek (both backends here can).
	Get(ctx context.Context, id string) (io.ReadCloser, Meta, error)
	// Stat returns a blob's metadata.
	Stat(ctx context.Context, id string) (Meta, error)
	// Delete removes a blob; ErrNotFound when there is none.
	Delete(ctx context.Context, id string) error
}

// Errors of every Store. Each carries its canonical code.
var (
	ErrNotFound  = api.New(codes.NotFound, "blob not found")
	ErrExists    = api.New(codes.AlreadyExists, "a blob with this ID already exists; blob IDs are never overwritten")
	ErrTooLarge  = api.New(codes.ResourceExhausted, "blob larger than its allowed maximum")
	ErrInvalidID = api.New(codes.InvalidArgument, "invalid blob ID: 1 to 128 characters of A-Z a-z 0-9 _ -")
	ErrShortBody = api.New(codes.InvalidArgument, "blob body ended before its declared length")
)

// MaxIDLen bounds a blob ID.
const MaxIDLen = 128

// ValidID reports whether id is a well-formed blob ID.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a fresh random blob ID ("b" and 26 base32 characters:
// 128 random bits).
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("blob: crypto/rand failed: " + err.Error())
	}
	return "b" + idEncoding.EncodeToString(b[:])
}

// NormalizeContentType checks that ct is a media type and returns it
// lowercased with its parameters in canonical form.
func NormalizeContentType(ct string) (string, error) {
	if ct == "" {
		return "", api.New(codes.InvalidArgument, "content_type is required (a media type such as image/png)")
	}
	if len(ct) > 200 {
		return "", api.New(codes.InvalidArgument, "content_type is longer than 200 bytes")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return "", api.Errorf(codes.InvalidArgument, "content_type %q is not a media type such as image/png", ct)
	}
	return mime.FormatMediaType(mt, params), nil
}

// SameMediaType reports whether two content types name the same media
// type (parameters such as charset are ignored).
func SameMediaType(a, b string) bool {
	ma, _, errA := mime.ParseMediaType(a)
	mb, _, errB := mime.ParseMediaType(b)
	return errA == nil && errB == nil && ma == mb
}

// meter reads from r, hashing and counting, and fails once more than max
// bytes arrive or ctx is done.
type meter struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
	max int64
	err error // the first failure Read returned, but the source's io.EOF
	eof bool  // the source ended
}

// newMeter meters an upload: at most opts.MaxSize bytes, and no more than
// a declared opts.Size.
func newMeter(ctx context.Context, r io.Reader, opts PutOptions) *meter {
	max := opts.MaxSize
	if opts.Size >= 0 && opts.Size < max {
		max = opts.Size
	}
	return &meter{ctx: ctx, r: r, h: sha256.New(), max: max}
}

func (m *meter) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if err := m.ctx.Err(); err != nil {
		m.err = err
		return 0, err
	}
	n, err := m.r.Read(p)
	m.h.Write(p[:n])
	m.n += int64(n)
	if m.n > m.max {
		m.err = api.Wrap(ErrTooLarge, fmt.Sprintf("the body runs past %d bytes", m.max))
		return n, m.err
	}
	if err == io.EOF {
		m.eof = true
	} else if err != nil {
		m.err = err
	}
	return n, err
}

func (m *meter) sum() string { return hex.EncodeToString(m.h.Sum(nil)) }

// checkPut validates what every Put needs.
func checkPut(id string, opts PutOptions) error {
	if !ValidID(id) {
		return ErrInvalidID
	}
	if opts.MaxSize <= 0 {
		return api.New(codes.InvalidArgument, "blob: PutOptions.MaxSize must be positive")
	}
	if opts.Size > opts.MaxSize {
		return api.Wrap(ErrTooLarge, fmt.Sprintf("the declared length %d is over %d bytes", opts.Size, opts.MaxSize))
	}
	if opts.ContentType == "" {
		return api.New(codes.InvalidArgument, "blob: PutOptions.ContentType is required")
	}
	return nil
}

// checkLength compares what was read with a declared length.
func checkLength(m *meter, opts PutOptions) error {
	if opts.Size >= 0 && m.n != opts.Size {
		return api.Wrap(ErrShortBody, fmt.Sprintf("read %d of %d bytes", m.n, opts.Size))
	}
	return nil
}
