package auth

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

// Config configures an Authenticator.
type Config struct {
	// Keys looks up API keys; nil: API keys are refused.
	Keys KeyStore
	// KeyCacheTTL is how long a looked-up key (or its absence, or its
	// revocation) is cached; default 5s. It bounds how long a revoked key
	// keeps working on a gateway that saw it live.
	KeyCacheTTL time.Duration
	// JWT configures bearer tokens from an identity provider; nil: tokens
	// other than API keys are refused.
	JWT *JWTConfig
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// DefaultKeyCacheTTL is Config.KeyCacheTTL when unset.
const DefaultKeyCacheTTL = 5 * time.Second

// Authenticator turns a bearer credential into an Identity. It is safe for
// concurrent use.
type Authenticator struct {
	cfg  Config
	keys *keyCache
	jwt  *jwtVerifier
}

// New returns an Authenticator for cfg.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KeyCacheTTL == 0 {
		cfg.KeyCacheTTL = DefaultKeyCacheTTL
	}
	if cfg.KeyCacheTTL < 0 {
		return nil, api.Errorf(codes.InvalidArgument, "auth: key cache TTL must not be negative")
	}
	a := &Authenticator{cfg: cfg}
	if cfg.Keys != nil {
		a.keys = newKeyCache(cfg.Keys, cfg.KeyCacheTTL, cfg.Now)
	}
	if cfg.JWT != nil {
		v, err := newJWTVerifier(*cfg.JWT, cfg.Now)
		if err != nil {
			return nil, err
		}
		a.jwt = v
	}
	return a, nil
}

// Authenticate checks a bearer credential (the part after "Bearer "): an
// API key (prefix "lk_") or a JWT. Errors are *api.Error with
// codes.Unauthenticated and a message that never echoes the secret.
func (a *Authenticator) Authenticate(ctx context.Context, credential string) (*Identity, error) {
	if credential == "" {
		return nil, ErrNoCredential
	}
	if strings.HasPrefix(credential, KeyPrefix) {
		if a.keys == nil {
			return nil, api.Wrap(ErrBadCredential, "API keys are not enabled on this server")
		}
		return a.keys.authenticate(ctx, credential)
	}
	if a.jwt == nil {
		return nil, api.Wrap(ErrBadCredential, "not an API key (lk_…) and JWT bearer tokens are not configured")
	}
	return a.jwt.verify(ctx, credential)
}

// Close stops the JWKS refresher, if any.
func (a *Authenticator) Close() error {
	if a.jwt != nil {
		a.jwt.close()
	}
	return nil
}

// BearerFrom extracts the credential from an "Authorization" header value
// ("Bearer x", scheme case-insensitive); "" if absent or malformed.
func BearerFrom(header string) string {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return ""
	}
	cred := strings.TrimSpace(header[len(scheme):])
	if cred == "" || strings.ContainsAny(cred, " \t") {
		return ""
	}
	return cred
}
