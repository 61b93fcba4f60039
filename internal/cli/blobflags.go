package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lunora/lunora/blob"
	"github.com/lunora/lunora/gateway"
)

// BlobFlags are the blob-store flags of lunora-gateway and of
// lunora-node dev (docs: README, "Blobs").
type BlobFlags struct {
	Backend    string // "none", "local" or "s3"
	Dir        string
	SecretFile string
	MaxBytes   int64
	URLTTL     time.Duration

	S3                            blob.S3Config
	S3AccessKeyFile, S3SecretFile string

	dev bool
}

// RegisterBlobFlags adds the blob flags to fs. In dev mode the backend is
// local, under the data directory, with a generated secret kept there.
func RegisterBlobFlags(fs *flag.FlagSet, dev bool) *BlobFlags {
	b := &BlobFlags{dev: dev}
	backend := "none"
	if dev {
		backend = "local"
	}
	fs.StringVar(&b.Backend, "blob-backend", backend, "blob store: none (no blob endpoints), local (a directory: one node) or s3 (any S3-compatible store: clusters)")
	fs.StringVar(&b.Dir, "blob-dir", "", "local blob directory (dev mode default: <data>/blobs)")
	fs.StringVar(&b.SecretFile, "blob-secret-file", "", "file of HMAC secrets signing blob URLs, one a line, at least 32 bytes each; the first signs, all verify (key rotation). Dev mode default: <data>/blob-secret, created if missing")
	fs.Int64Var(&b.MaxBytes, "blob-max-bytes", gateway.DefaultBlobMaxBytes, "largest blob an upload URL may allow")
	fs.DurationVar(&b.URLTTL, "blob-url-ttl", 15*time.Minute, "how long a signed blob URL stays valid unless the request asks for less or more (at most 24h)")
	fs.StringVar(&b.S3.Endpoint, "blob-s3-endpoint", "", "S3 endpoint host:port (s3 backend)")
	fs.StringVar(&b.S3.Bucket, "blob-s3-bucket", "", "S3 bucket, which must exist (s3 backend)")
	fs.StringVar(&b.S3.Prefix, "blob-s3-prefix", "", "prefix of every object name (s3 backend)")
	fs.StringVar(&b.S3.Region, "blob-s3-region", "", "S3 region, if the store needs one")
	fs.BoolVar(&b.S3.Secure, "blob-s3-tls", true, "reach the S3 endpoint over https")
	fs.StringVar(&b.S3AccessKeyFile, "blob-s3-access-key-file", "", "file holding the S3 access key (default: $LUNORA_BLOB_S3_ACCESS_KEY)")
	fs.StringVar(&b.S3SecretFile, "blob-s3-secret-key-file", "", "file holding the S3 secret key (default: $LUNORA_BLOB_S3_SECRET_KEY)")
	return b
}

// Check validates the flags without touching a file or the network.
func (b *BlobFlags) Check() error {
	switch b.Backend {
	case "none":
		return nil
	case "local":
		if b.Dir == "" && !b.dev {
			return errors.New("-blob-backend local needs -blob-dir")
		}
	case "s3":
		if b.S3.Endpoint == "" || b.S3.Bucket == "" {
			return errors.New("-blob-backend s3 needs -blob-s3-endpoint and -blob-s3-bucket")
		}
		if strings.Contains(b.S3.Endpoint, "://") {
			return fmt.Errorf("-blob-s3-endpoint %q must be host:port without a scheme (-blob-s3-tls picks https)", b.S3.Endpoint)
		}
	default:
		return fmt.Errorf("-blob-backend must be none, local or s3, not %q", b.Backend)
	}
	if b.SecretFile == "" && !b.dev {
		return errors.New("-blob-backend needs -blob-secret-file: the HMAC secrets that sign blob URLs (every gateway of a cluster the same)")
	}
	if b.MaxBytes <= 0 {
		return errors.New("-blob-max-bytes must be positive")
	}
	if b.URLTTL <= 0 || b.URLTTL > 24*time.Hour {
		return errors.New("-blob-url-ttl must be positive and at most 24h")
	}
	return nil
}

// Open opens the store and the signer the flags name (dev mode's under
// dataDir); nil when the backend is none.
func (b *BlobFlags) Open(ctx context.Context, dataDir string) (*gateway.BlobConfig, error) {
	if err := b.Check(); err != nil {
		return nil, err
	}
	if b.Backend == "none" {
		return nil, nil
	}
	var (
		signer *blob.Signer
		err    error
	)
	if b.SecretFile == "" { // dev mode
		signer, err = blob.LoadOrCreateSigner(filepath.Join(dataDir, "blob-secret"))
	} else {
		signer, err = blob.LoadSigner(b.SecretFile)
	}
	if err != nil {
		return nil, err
	}
	var store blob.Store
	switch b.Backend {
	case "local":
		dir := b.Dir
		if dir == "" {
			dir = filepath.Join(dataDir, "blobs")
		}
		store, err = blob.OpenLocal(dir)
	case "s3":
		cfg := b.S3
		if cfg.AccessKey, err = secretFrom(b.S3AccessKeyFile, "LUNORA_BLOB_S3_ACCESS_KEY", "-blob-s3-access-key-file"); err != nil {
			return nil, err
		}
		if cfg.SecretKey, err = secretFrom(b.S3SecretFile, "LUNORA_BLOB_S3_SECRET_KEY", "-blob-s3-secret-key-file"); err != nil {
			return nil, err
		}
		store, err = blob.OpenS3(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	c := gateway.NewBlobConfig(store, signer)
	c.MaxBytes, c.DefaultTTL = b.MaxBytes, b.URLTTL
	return c, nil
}

// secretFrom reads a credential from a file, else from an environment
// variable.
func secretFrom(file, env, flagName string) (string, error) {
	if file != "" {
		s, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flagName, err)
		}
		return strings.TrimSpace(string(s)), nil
	}
	if v := os.Getenv(env); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("-blob-backend s3 needs a credential: %s or $%s", flagName, env)
}
