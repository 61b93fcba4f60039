package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/codes"

	"github.com/lunora/lunora/api"
)

// JWTConfig configures bearer tokens from an external identity provider.
type JWTConfig struct {
	// Issuer is the required "iss".
	Issuer string
	// Audience: "aud" must contain one of these (at least one is required).
	Audience []string
	// JWKSFile is a JWKS JSON file, re-read when its modification time or
	// size changes.
	JWKSFile string
	// JWKSURL serves the JWKS over HTTPS (http only to a loopback host,
	// for tests or a local sidecar); it is fetched every JWKSRefresh and
	// when a token names an unknown kid (at most once per JWKSMinRefresh).
	// While it cannot be fetched the last good set keeps serving; before
	// the first good fetch, tokens answer UNAVAILABLE.
	JWKSURL string
	// JWKSRefresh is how often JWKSURL is fetched; default 5m.
	JWKSRefresh time.Duration
	// HS256Secret enables HS256 with this shared secret (at least 32
	// bytes); nil: HS256 is refused.
	HS256Secret []byte
	// Leeway is the clock skew allowed on exp, nbf and iat; default 60s,
	// at most 5m.
	Leeway time.Duration
	// RoleClaim names the claim holding the role; default "role". A token
	// without it is a client.
	RoleClaim string
}

const (
	// DefaultJWKSRefresh is JWTConfig.JWKSRefresh when unset.
	DefaultJWKSRefresh = 5 * time.Minute
	// JWKSMinRefresh bounds how often an unknown kid fetches the JWKS URL.
	JWKSMinRefresh = 10 * time.Second
	// DefaultLeeway and MaxLeeway bound JWTConfig.Leeway.
	DefaultLeeway = 60 * time.Second
	MaxLeeway     = 5 * time.Minute
	// MaxTokenLen refuses a bearer token longer than this before parsing.
	MaxTokenLen = 16 << 10
)

// asymmetricAlgs are the signature algorithms accepted from a JWKS.
var asymmetricAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

type jwtVerifier struct {
	cfg    JWTConfig
	now    func() time.Time
	algs   []jose.SignatureAlgorithm
	keys   *jwksSource // nil when only HS256 is configured
	secret []byte
}

func newJWTVerifier(cfg JWTConfig, now func() time.Time) (*jwtVerifier, error) {
	bad := func(format string, args ...any) error {
		return api.Errorf(codes.InvalidArgument, "auth: JWT config: "+format, args...)
	}
	switch {
	case cfg.Issuer == "":
		return nil, bad("an issuer is required")
	case len(cfg.Audience) == 0:
		return nil, bad("at least one audience is required (otherwise a token the provider issued for any other application would be accepted)")
	case cfg.JWKSFile != "" && cfg.JWKSURL != "":
		return nil, bad("give a JWKS file or a JWKS URL, not both")
	case cfg.JWKSFile == "" && cfg.JWKSURL == "" && cfg.HS256Secret == nil:
		return nil, bad("give a JWKS file, a JWKS URL or an HS256 secret")
	case cfg.HS256Secret != nil && len(cfg.HS256Secret) < 32:
		return nil, bad("the HS256 secret is %d bytes; it must be at least 32", len(cfg.HS256Secret))
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, bad("leeway %s is outside 0..%s", cfg.Leeway, MaxLeeway)
	case cfg.JWKSRefresh < 0:
		return nil, bad("JWKS refresh %s must not be negative", cfg.JWKSRefresh)
	}
	for _, a := range cfg.Audience {
		if a == "" {
			return nil, bad("an audience must not be empty")
		}
	}
	if cfg.JWKSURL != "" {
		if err := checkJWKSURL(cfg.JWKSURL); err != nil {
			return nil, bad("%v", err)
		}
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.JWKSRefresh == 0 {
		cfg.JWKSRefresh = DefaultJWKSRefresh
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = "role"
	}
	v := &jwtVerifier{cfg: cfg, now: now}
	if cfg.JWKSFile != "" || cfg.JWKSURL != "" {
		v.algs = append(v.algs, asymmetricAlgs...)
		src, err := newJWKSSource(cfg, now)
		if err != nil {
			return nil, err
		}
		v.keys = src
	}
	if cfg.HS256Secret != nil {
		v.algs = append(v.algs, jose.HS256)
		v.secret = append([]byte(nil), cfg.HS256Secret...)
	}
	return v, nil
}

func (v *jwtVerifier) close() {
	if v.keys != nil {
		v.keys.close()
	}
}

func (v *jwtVerifier) allowed() string {
	names := make([]string, len(v.algs))
	for i, a := range v.algs {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}

func refuse(format string, args ...any) error {
	return api.Wrap(ErrBadCredential, fmt.Sprintf(format, args...))
}

// tokenHeader is the JOSE header, read before verification only to pick
// the key and to refuse an algorithm with a clear message.
type tokenHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

func (v *jwtVerifier) verify(ctx context.Context, token string) (*Identity, error) {
	if len(token) > MaxTokenLen {
		return nil, refuse("token is %d bytes, over the limit of %d", len(token), MaxTokenLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, refuse("malformed token: a JWT has three dot-separated parts, this has %d", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, refuse("malformed token: the header is not base64url")
	}
	var hdr tokenHeader
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return nil, refuse("malformed token: the header is not a JSON object")
	}
	alg := jose.SignatureAlgorithm(hdr.Alg)
	if !algIn(alg, v.algs) {
		return nil, refuse("token algorithm %q is not accepted (accepted: %s)", hdr.Alg, v.allowed())
	}
	tok, err := jwt.ParseSigned(token, v.algs)
	if err != nil {
		return nil, refuse("malformed token: %v", err)
	}
	// From here on, the header as go-jose read it — the one it verifies
	// with — picks the key.
	if len(tok.Headers) != 1 {
		return nil, refuse("malformed token: %d signatures", len(tok.Headers))
	}
	alg = jose.SignatureAlgorithm(tok.Headers[0].Algorithm)
	hdr.Kid = tok.Headers[0].KeyID
	var std jwt.Claims
	var claims map[string]any
	if alg == jose.HS256 {
		if err = tok.Claims(v.secret, &std, &claims); err != nil {
			err = verifyFailure(err, "")
		}
	} else {
		err = v.verifyWithJWKS(ctx, tok, alg, hdr.Kid, &std, &claims)
	}
	if err != nil {
		return nil, err
	}
	return v.identity(&std, claims)
}

// checkJWKSURL accepts https, and http only to a loopback host (tests, a
// sidecar): keys fetched in the clear could be replaced on the way.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("JWKS URL %q: %v", raw, err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("JWKS URL %q: use https (http is accepted only for a loopback host)", raw)
		}
	default:
		return fmt.Errorf("JWKS URL %q: the scheme must be https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("JWKS URL %q names no host", raw)
	}
	return nil
}

func algIn(a jose.SignatureAlgorithm, list []jose.SignatureAlgorithm) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// verifyWithJWKS checks tok's signature against the JWKS keys that fit its
// kid and alg; an unknown kid refreshes a JWKS URL (rate-limited) once.
func (v *jwtVerifier) verifyWithJWKS(ctx context.Context, tok *jwt.JSONWebToken, alg jose.SignatureAlgorithm, kid string, dest ...any) error {
	set, err := v.keys.current(ctx)
	if err != nil {
		return err
	}
	cands := set.candidates(kid, alg)
	if len(cands) == 0 && kid != "" {
		if set, err = v.keys.refreshForKid(ctx, kid); err != nil {
			return err
		}
		cands = set.candidates(kid, alg)
	}
	if len(cands) == 0 {
		why := ""
		if err := v.keys.loadError(); err != nil {
			why = fmt.Sprintf(" (the JWKS's last update did not load: %v)", err)
		}
		if kid != "" {
			return refuse("token key id %q is not in the JWKS%s", kid, why)
		}
		return refuse("no key in the JWKS fits the token's algorithm %s%s", alg, why)
	}
	var err2 error
	for _, k := range cands {
		if err2 = tok.Claims(k.Key, dest...); err2 == nil {
			return nil
		}
		if !errors.Is(err2, jose.ErrCryptoFailure) {
			break
		}
	}
	return verifyFailure(err2, kid)
}

// verifyFailure explains why tok.Claims failed: a signature that does not
// verify, or a payload whose claims do not decode.
func verifyFailure(err error, kid string) error {
	if errors.Is(err, jose.ErrCryptoFailure) {
		if kid == "" {
			return refuse("token signature does not verify (tampered, or signed with another key)")
		}
		return refuse("token signature does not verify with the key %q (tampered, or signed with another key)", kid)
	}
	return refuse("token rejected: %v", err)
}

// identity checks the registered claims and builds the Identity.
func (v *jwtVerifier) identity(std *jwt.Claims, claims map[string]any) (*Identity, error) {
	now := v.now()
	lw := v.cfg.Leeway
	if std.Issuer != v.cfg.Issuer {
		return nil, refuse("token issuer %q is not the configured issuer %q", std.Issuer, v.cfg.Issuer)
	}
	if !audienceMatches(std.Audience, v.cfg.Audience) {
		return nil, refuse("token audience %q does not include any of %q", []string(std.Audience), v.cfg.Audience)
	}
	if std.Expiry == nil {
		return nil, refuse("token has no exp (expiry) claim; one is required")
	}
	exp := std.Expiry.Time()
	if !now.Before(exp.Add(lw)) {
		return nil, refuse("token expired at %s (now %s, leeway %s)", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), lw)
	}
	if std.NotBefore != nil {
		if nbf := std.NotBefore.Time(); now.Add(lw).Before(nbf) {
			return nil, refuse("token is not valid before %s (now %s, leeway %s)", nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), lw)
		}
	}
	if std.IssuedAt != nil {
		if iat := std.IssuedAt.Time(); now.Add(lw).Before(iat) {
			return nil, refuse("token is issued in the future (iat %s, now %s, leeway %s)", iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), lw)
		}
	}
	role := RoleClient
	if rv, ok := claims[v.cfg.RoleClaim]; ok {
		s, _ := rv.(string)
		role = Role(s)
		if !role.Valid() {
			return nil, refuse("token claim %q must be admin, service or client, not %v", v.cfg.RoleClaim, rv)
		}
	}
	return &Identity{
		Method:  MethodJWT,
		Role:    role,
		Subject: std.Subject,
		Claims:  claims,
		// The token is accepted until exp plus the leeway; a live query
		// lasts as long as a call would be accepted, and no longer.
		Expires: exp.Add(lw),
	}, nil
}

func audienceMatches(got jwt.Audience, want []string) bool {
	for _, w := range want {
		if got.Contains(w) {
			return true
		}
	}
	return false
}
