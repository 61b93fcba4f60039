package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// Authentication and authorization of the public API.
//
// Every request is authenticated once, at the edge: HTTP requests by their
// "Authorization: Bearer <credential>" header (a WebSocket upgrade may
// instead pass ?access_token=<credential>, since browsers cannot set
// headers on one), gRPC calls by their "authorization" metadata. The
// identity rides in the request's context (auth.NewContext) to the node
// that runs the function. Then each operation is authorized:
//
//	/v1/call, Call, Subscribe   auth.AuthorizeCall on the function and its shard key
//	/v1/fanout, FanOut          auth.AuthorizeCall on every shard key (all_shards: no key)
//	/v1/sql, Sql                auth.AuthorizeSQL (admin, service)
//	/v1/status, Status          any valid credential
//	/v1/admin/keys              auth.AuthorizeAdmin
//	/v1/queues/…, Consume       authorizeQueue (admin, service)
//	/v1/admin/queues/…, alarms  auth.AuthorizeAdmin
//
// No credential is UNAUTHENTICATED (HTTP 401 with WWW-Authenticate:
// Bearer); a credential that does not allow the operation is
// PERMISSION_DENIED (403). With Config.AuthOff every caller is DevIdentity
// (lunora-node dev, which listens on loopback only). /metrics, /healthz
// and /readyz are served outside the gateway's handler and stay open.

// Authenticator checks a bearer credential: *auth.Authenticator.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (*auth.Identity, error)
}

// DevIdentity is every caller's identity when authentication is off: an
// admin (auth.MethodDev) whose lunora_auth('sub') is "dev".
var DevIdentity = &auth.Identity{Method: auth.MethodDev, Role: auth.RoleAdmin, Subject: "dev",
	Claims: map[string]any{"sub": "dev", "role": string(auth.RoleAdmin)}}

// authLabel is the function label of HTTP requests refused before they
// were routed: no credential, or one that does not check out.
const authLabel = "auth"

// AccessTokenParam is the query parameter a WebSocket upgrade may carry
// its credential in instead of the Authorization header.
const AccessTokenParam = "access_token"

// authenticate returns ctx carrying the identity of credential (the part
// after "Bearer "). A ctx already carrying one is kept (an in-process
// caller that authenticated its request).
func (g *Gateway) authenticate(ctx context.Context, credential string) (context.Context, error) {
	if auth.FromContext(ctx) != nil {
		return ctx, nil
	}
	if g.cfg.AuthOff {
		return auth.NewContext(ctx, DevIdentity), nil
	}
	if credential == "" {
		return ctx, auth.ErrNoCredential
	}
	id, err := g.cfg.Auth.Authenticate(ctx, credential)
	if err != nil {
		return ctx, err
	}
	if id == nil {
		return ctx, auth.ErrBadCredential
	}
	// Whether the credential is still valid is the authenticator's call;
	// a live query, which lasts, ends at Expires (for a JWT, exp plus the
	// clock-skew leeway: as long as a call would be accepted).
	return auth.NewContext(ctx, id), nil
}

// grpcAuth authenticates a gRPC call by its "authorization" metadata
// ("Bearer <credential>").
func (g *Gateway) grpcAuth(ctx context.Context) (context.Context, error) {
	if auth.FromContext(ctx) != nil || g.cfg.AuthOff {
		return g.authenticate(ctx, "")
	}
	var cred string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			cred = auth.BearerFrom(v[0])
		}
	}
	return g.authenticate(ctx, cred)
}

// identify returns ctx carrying the request's identity and that identity:
// the one the HTTP edge established, or the gRPC call's.
func (g *Gateway) identify(ctx context.Context) (context.Context, *auth.Identity, error) {
	ctx, err := g.grpcAuth(ctx)
	if err != nil {
		return ctx, nil, err
	}
	id, err := g.caller(ctx)
	return ctx, id, err
}

// authorizeCall authorizes id to call fn on shardID.
func (g *Gateway) authorizeCall(id *auth.Identity, fnName string, shardID string) error {
	fn := g.app.Function(fnName)
	if fn == nil {
		return api.Errorf(codes.NotFound, "unknown function %q", clip(fnName))
	}
	_, key, err := g.app.ParseShardID(shardID)
	if err != nil {
		return err
	}
	return auth.AuthorizeCall(id, fn, key)
}

// caller is the identity a request runs as: UNAUTHENTICATED without one.
func (g *Gateway) caller(ctx context.Context) (*auth.Identity, error) {
	if id := auth.FromContext(ctx); id != nil {
		return id, nil
	}
	if g.cfg.AuthOff {
		return DevIdentity, nil
	}
	return nil, auth.ErrNoCredential
}

// withAuth authenticates every HTTP request before h sees it.
func (g *Gateway) withAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.cfg.Blobs != nil && BlobURLRequest(r) {
			// The URL's signature is the credential; the blob handler checks it.
			h.ServeHTTP(w, r)
			return
		}
		cred := auth.BearerFrom(r.Header.Get("Authorization"))
		if cred == "" && r.URL.Path == "/v1/subscribe" {
			cred = r.URL.Query().Get(AccessTokenParam)
		}
		start := time.Now()
		ctx, err := g.authenticate(r.Context(), cred)
		if err != nil {
			// Counted under the "auth" function label: the request was
			// refused before it named anything the app declares.
			g.metrics.observe(protocolHTTP, authLabel, err, time.Since(start))
			g.writeAuthError(w, r, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// writeAuthError answers an authentication failure: 401 with the
// WWW-Authenticate challenge RFC 6750 asks for.
func (g *Gateway) writeAuthError(w http.ResponseWriter, r *http.Request, err error) {
	if api.CodeOf(err) == codes.Unauthenticated {
		challenge := `Bearer realm="lunora"`
		if !errors.Is(err, auth.ErrNoCredential) {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	g.writeError(w, r, err)
}

// expiringStream ends a live query when its caller's credential expires:
// Next answers UNAUTHENTICATED from then on.
type expiringStream struct {
	api.Stream
	expires time.Time
	cancel  context.CancelFunc // ends the stream's context (deadline: expires)
}

func (s *expiringStream) Close() {
	s.Stream.Close()
	s.cancel()
}

func (s *expiringStream) Next(ctx context.Context) (*api.Update, error) {
	if !time.Now().Before(s.expires) {
		return nil, expiredError(s.expires)
	}
	nctx, cancel := context.WithDeadline(ctx, s.expires)
	defer cancel()
	u, err := s.Stream.Next(nctx)
	if err != nil && ctx.Err() == nil && !time.Now().Before(s.expires) {
		return nil, expiredError(s.expires)
	}
	return u, err
}

func expiredError(at time.Time) error {
	return api.Wrap(auth.ErrBadCredential, fmt.Sprintf("the credential expired at %s: the subscription ended; subscribe again with a fresh one", at.UTC().Format(time.RFC3339)))
}

// KeyAdmin manages API keys (the node API's key methods): *rpc.NodeClient,
// *node.Node, *router.Router. The admin key API needs a Backend that is
// one.
type KeyAdmin interface {
	CreateKey(ctx context.Context, name string, role auth.Role) (token string, rec auth.KeyRecord, err error)
	RevokeKey(ctx context.Context, id string, forwarded bool) (auth.KeyRecord, error)
	ListKeys(ctx context.Context, limit int) (keys []auth.KeyRecord, more bool, err error)
}

// keyJSON is an API key in the admin API (never its hash).
type keyJSON struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	Created string `json:"created"`
	Revoked string `json:"revoked,omitempty"`
	// Token is the key itself, answered once when it is created.
	Token string `json:"token,omitempty"`
}

func toKeyJSON(r auth.KeyRecord, token string) keyJSON {
	out := keyJSON{ID: r.ID, Name: r.Name, Role: string(r.Role), Token: token}
	if !r.Created.IsZero() {
		out.Created = r.Created.UTC().Format(time.RFC3339Nano)
	}
	if !r.Revoked.IsZero() {
		out.Revoked = r.Revoked.UTC().Format(time.RFC3339Nano)
	}
	return out
}

// serveKeys serves the admin key API (admin role only):
//
//	POST   /v1/admin/keys       {"name": "ci", "role": "service"} → the key with its token (shown once)
//	GET    /v1/admin/keys       → {"keys": [...], "more": bool}
//	DELETE /v1/admin/keys/{id}  → the revoked key
func (g *Gateway) serveKeys(w http.ResponseWriter, r *http.Request) {
	id, err := g.caller(r.Context())
	if err == nil {
		err = auth.AuthorizeAdmin(id)
	}
	if err != nil {
		g.writeAuthError(w, r, err)
		return
	}
	admin, ok := g.backend.(KeyAdmin)
	if !ok {
		g.writeError(w, r, api.New(codes.Unimplemented, "this gateway's backend keeps no API keys"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
	defer cancel()
	rest := strings.TrimPrefix(r.URL.Path, "/v1/admin/keys")
	switch {
	case rest == "" && r.Method == http.MethodPost:
		var req struct {
			Name string `json:"name"`
			Role string `json:"role"`
		}
		if err := g.decodeBody(w, r, &req); err != nil {
			g.writeError(w, r, err)
			return
		}
		if strings.TrimSpace(req.Name) == "" {
			g.writeError(w, r, api.New(codes.InvalidArgument, `a key needs a "name" (a label for people: who or what uses it)`))
			return
		}
		if !auth.Role(req.Role).Valid() {
			g.writeError(w, r, api.Errorf(codes.InvalidArgument, `"role" must be admin, service or client, not %q`, clip(req.Role)))
			return
		}
		token, rec, err := admin.CreateKey(ctx, req.Name, auth.Role(req.Role))
		if err != nil {
			g.writeError(w, r, g.backendError(ctx, err, "creating an API key", ""))
			return
		}
		g.log.InfoContext(ctx, "API key created", "key", rec.ID, "name", rec.Name, "role", rec.Role, "by", id.Subject)
		w.Header().Set("Cache-Control", "no-store")
		g.writeJSON(w, r, http.StatusCreated, toKeyJSON(rec, token))
	case rest == "" && r.Method == http.MethodGet:
		keys, more, err := admin.ListKeys(ctx, 0)
		if err != nil {
			g.writeError(w, r, g.backendError(ctx, err, "listing API keys", ""))
			return
		}
		out := struct {
			Keys []keyJSON `json:"keys"`
			More bool      `json:"more"`
		}{Keys: make([]keyJSON, len(keys)), More: more}
		for i, k := range keys {
			out.Keys[i] = toKeyJSON(k, "")
		}
		g.writeJSON(w, r, http.StatusOK, out)
	case strings.HasPrefix(rest, "/") && len(rest) > 1 && !strings.Contains(rest[1:], "/") && r.Method == http.MethodDelete:
		rec, err := admin.RevokeKey(ctx, rest[1:], false)
		if err != nil {
			g.writeError(w, r, g.backendError(ctx, err, "revoking an API key", ""))
			return
		}
		g.log.InfoContext(ctx, "API key revoked", "key", rec.ID, "name", rec.Name, "by", id.Subject)
		g.writeJSON(w, r, http.StatusOK, toKeyJSON(rec, ""))
	case rest == "" || (len(rest) > 1 && rest[0] == '/' && !strings.Contains(rest[1:], "/")):
		allow := "GET, POST"
		if rest != "" {
			allow = "DELETE"
		}
		w.Header().Set("Allow", allow)
		g.writeError(w, r, &api.Error{Code: codes.Unimplemented, Msg: fmt.Sprintf("method %s is not allowed on %s: use %s", clip(r.Method), r.URL.Path, allow), Err: ErrMethodNotAllowed})
	default:
		g.writeError(w, r, api.Errorf(codes.NotFound, "no endpoint %s: use /v1/admin/keys or /v1/admin/keys/{id}", clip(r.URL.Path)))
	}
}

// authorizeFanOut authorizes id to call p's function on every shard it
// names; a fan-out over all shards names no shard key, which a function
// scoped by a claim refuses to a client. One refused shard refuses the
// request.
func (g *Gateway) authorizeFanOut(id *auth.Identity, p *fanOutPlan) error {
	if p.lister != nil {
		return auth.AuthorizeCall(id, p.fn, nil)
	}
	if len(p.targets) == 0 {
		return auth.AuthorizeCall(id, p.fn, nil)
	}
	for _, t := range p.targets {
		if t.fail != nil {
			continue
		}
		if err := g.authorizeCall(id, p.fn.Name, t.id); err != nil {
			return err
		}
	}
	return nil
}
