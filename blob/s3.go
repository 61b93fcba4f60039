package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config configures an S3 store.
type S3Config struct {
	// Endpoint is host:port of the S3-compatible service (no scheme).
	Endpoint string
	// Secure selects https.
	Secure bool
	// Region, when the service needs one.
	Region string
	// Bucket must exist.
	Bucket string
	// Prefix is put before every object name (e.g. "blobs/").
	Prefix    string
	AccessKey string
	SecretKey string
	// PartSize is the size of one multipart part, and so the memory one
	// upload of unknown length buffers; 0 means DefaultS3PartSize.
	PartSize uint64
	// Transport, when set, carries the requests (tests).
	Transport http.RoundTripper
}

// DefaultS3PartSize is the multipart part size (and per-upload buffer).
const DefaultS3PartSize = 16 << 20

// S3 is a Store in an S3-compatible object store (AWS S3, MinIO,
// versitygw, Ceph RGW, ...), for clusters: every gateway sees the same
// blobs. A blob is two objects: its bytes, <prefix>data/<id>/<upload>
// (<upload> random per upload), and its metadata, <prefix>meta/<id> (Meta
// as JSON, naming the bytes' object). The metadata object, written after
// the bytes and only if it does not exist yet (If-None-Match: *), is what
// makes a blob exist: of two uploads to one ID exactly one wins, and the
// other removes its bytes.
type S3 struct {
	c        *minio.Client
	bucket   string
	prefix   string
	partSize uint64
	now      func() time.Time
}

// OpenS3 connects to the store and checks that the bucket exists.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("blob: S3 endpoint and bucket are required")
	}
	if strings.Contains(cfg.Endpoint, "://") {
		return nil, fmt.Errorf("blob: S3 endpoint %q must be host:port, without a scheme (https is chosen by the secure setting)", cfg.Endpoint)
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.Secure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("blob: S3 client: %w", err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("blob: S3 bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("blob: S3 bucket %s does not exist at %s; create it first", cfg.Bucket, cfg.Endpoint)
	}
	ps := cfg.PartSize
	if ps == 0 {
		ps = DefaultS3PartSize
	}
	return &S3{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix, partSize: ps, now: time.Now}, nil
}

func (s *S3) metaKey(id string) string { return s.prefix + "meta/" + id }

// s3Meta is the metadata object: Meta and the object holding the bytes.
type s3Meta struct {
	Meta
	Object string `json:"object"`
}

func isNoSuchKey(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound" || minio.ToErrorResponse(err).StatusCode == http.StatusNotFound
}

// Put implements Store. The body streams to the store in parts of
// PartSize (one buffer per upload); a failed upload is aborted.
func (s *S3) Put(ctx context.Context, id string, r io.Reader, opts PutOptions) (Meta, error) {
	if err := checkPut(id, opts); err != nil {
		return Meta{}, err
	}
	if _, err := s.Stat(ctx, id); err == nil {
		return Meta{}, ErrExists
	} else if !errors.Is(err, ErrNotFound) {
		return Meta{}, err
	}
	var token [8]byte
	if _, err := rand.Read(token[:]); err != nil {
		return Meta{}, err
	}
	dataKey := s.prefix + "data/" + id + "/" + hex.EncodeToString(token[:])
	m := newMeter(ctx, r, opts)
	size := opts.Size
	if size < 0 {
		size = -1
	}
	_, err := s.c.PutObject(ctx, s.bucket, dataKey, m, size, minio.PutObjectOptions{
		ContentType: opts.ContentType,
		PartSize:    s.partSize,
	})
	if err == nil {
		err = checkLength(m, opts)
		if err != nil {
			s.remove(ctx, dataKey)
		}
	}
	if err != nil {
		// A failure of the body (too large, short, cancelled) is reported
		// as itself, whatever the client wrapped it in.
		if m.err != nil {
			return Meta{}, m.err
		}
		if lerr := checkLength(m, opts); m.eof && lerr != nil {
			return Meta{}, lerr
		}
		if cerr := ctx.Err(); cerr != nil {
			return Meta{}, cerr
		}
		return Meta{}, fmt.Errorf("blob: S3 upload of %s: %w", id, err)
	}
	meta := Meta{ID: id, Size: m.n, ContentType: opts.ContentType, SHA256: m.sum(), Created: s.now().UTC().Truncate(time.Second), Owner: opts.Owner}
	b, err := json.Marshal(s3Meta{Meta: meta, Object: dataKey})
	if err != nil {
		return Meta{}, err
	}
	po := minio.PutObjectOptions{ContentType: "application/json"}
	po.SetMatchETagExcept("*") // create only
	if _, err := s.c.PutObject(ctx, s.bucket, s.metaKey(id), bytes.NewReader(b), int64(len(b)), po); err != nil {
		s.remove(ctx, dataKey)
		if minio.ToErrorResponse(err).StatusCode == http.StatusPreconditionFailed || minio.ToErrorResponse(err).Code == "PreconditionFailed" {
			return Meta{}, ErrExists
		}
		return Meta{}, fmt.Errorf("blob: S3 metadata of %s: %w", id, err)
	}
	return meta, nil
}

// remove deletes an object best-effort, even when ctx is done.
func (s *S3) remove(ctx context.Context, key string) {
	_ = s.c.RemoveObject(context.WithoutCancel(ctx), s.bucket, key, minio.RemoveObjectOptions{})
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, id string) (Meta, error) {
	m, err := s.stat(ctx, id)
	return m.Meta, err
}

func (s *S3) stat(ctx context.Context, id string) (s3Meta, error) {
	if !ValidID(id) {
		return s3Meta{}, ErrInvalidID
	}
	o, err := s.c.GetObject(ctx, s.bucket, s.metaKey(id), minio.GetObjectOptions{})
	if err != nil {
		return s3Meta{}, fmt.Errorf("blob: S3 metadata of %s: %w", id, err)
	}
	defer o.Close()
	b, err := io.ReadAll(io.LimitReader(o, 64<<10))
	if err != nil {
		if isNoSuchKey(err) {
			return s3Meta{}, ErrNotFound
		}
		return s3Meta{}, fmt.Errorf("blob: S3 metadata of %s: %w", id, err)
	}
	var m s3Meta
	if err := json.Unmarshal(b, &m); err != nil || m.Object == "" {
		return s3Meta{}, fmt.Errorf("blob: S3 metadata of %s is not valid (%v)", id, err)
	}
	return m, nil
}

// Get implements Store; the reader is a *minio.Object, which seeks with
// ranged requests.
func (s *S3) Get(ctx context.Context, id string) (io.ReadCloser, Meta, error) {
	m, err := s.stat(ctx, id)
	if err != nil {
		return nil, Meta{}, err
	}
	o, err := s.c.GetObject(ctx, s.bucket, m.Object, minio.GetObjectOptions{})
	if err != nil {
		return nil, Meta{}, fmt.Errorf("blob: S3 get %s: %w", id, err)
	}
	// GetObject is lazy; Stat makes a missing object an error now.
	if _, err := o.Stat(); err != nil {
		o.Close()
		if isNoSuchKey(err) {
			return nil, Meta{}, ErrNotFound
		}
		return nil, Meta{}, fmt.Errorf("blob: S3 get %s: %w", id, err)
	}
	return o, m.Meta, nil
}

// Delete implements Store: the metadata object first, then the bytes.
func (s *S3) Delete(ctx context.Context, id string) error {
	m, err := s.stat(ctx, id)
	if err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, s.metaKey(id), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("blob: S3 delete %s: %w", id, err)
	}
	if err := s.c.RemoveObject(ctx, s.bucket, m.Object, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("blob: S3 delete %s: %w", id, err)
	}
	return nil
}
