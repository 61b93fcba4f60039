package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/blob"
	"google.golang.org/grpc/codes"
)

// BlobConfig turns on the blob endpoints (Config.Blobs):
//
//	POST   /v1/blobs/upload-url    authenticated: a signed PUT URL for a new blob
//	POST   /v1/blobs/download-url  authenticated: a signed GET URL for a blob
//	PUT    /v1/blobs/{id}?...      the signed URL is the credential; streams the body in
//	GET    /v1/blobs/{id}?...      (and HEAD) the signed URL is the credential; streams out
//	GET    /v1/blobs/{id}/meta     authenticated: size, content type, SHA-256
//	DELETE /v1/blobs/{id}          authenticated
//
// Who may do what: admin and service identities everything; a client
// identity may ask for upload URLs (up to MaxBytes), and for download
// URLs, metadata and deletion only of blobs it uploaded (the blob's owner
// is the Subject that asked for its upload URL).
type BlobConfig struct {
	Store  blob.Store
	Signer *blob.Signer
	// MaxBytes is the largest blob an upload URL may allow, and the
	// default when the request names none.
	MaxBytes int64
	// DefaultTTL is how long a URL stays valid when the request does not
	// say; MaxTTL bounds what a request may ask.
	DefaultTTL, MaxTTL time.Duration
	// IdleTimeout replaces the listener's whole-request deadlines
	// (server.Config BodyTimeout, WriteTimeout) on a blob transfer: a
	// transfer may take as long as it needs while its bytes keep moving,
	// and is cut once none has moved for this long.
	IdleTimeout time.Duration
}

// DefaultBlobMaxBytes is the default cap on one blob (100 MiB).
const DefaultBlobMaxBytes = 100 << 20

// NewBlobConfig returns a BlobConfig with a 100 MiB cap, URLs valid for
// 15 minutes by default and 24 hours at most, and a 30 s idle timeout.
func NewBlobConfig(store blob.Store, signer *blob.Signer) *BlobConfig {
	return &BlobConfig{Store: store, Signer: signer, MaxBytes: DefaultBlobMaxBytes, DefaultTTL: 15 * time.Minute, MaxTTL: 24 * time.Hour, IdleTimeout: 30 * time.Second}
}

func (c *BlobConfig) validate() error {
	switch {
	case c.Store == nil || c.Signer == nil:
		return errors.New("gateway: BlobConfig needs a Store and a Signer")
	case c.MaxBytes <= 0:
		return errors.New("gateway: BlobConfig.MaxBytes must be positive")
	case c.DefaultTTL <= 0 || c.MaxTTL < c.DefaultTTL:
		return errors.New("gateway: BlobConfig.DefaultTTL must be positive and at most MaxTTL")
	case c.IdleTimeout <= 0:
		return errors.New("gateway: BlobConfig.IdleTimeout must be positive")
	}
	return nil
}

// blobPrefix is where the blob endpoints live.
const blobPrefix = "/v1/blobs/"

// handleBlobs registers the blob endpoints on mux when blobs are on.
func (g *Gateway) handleBlobs(mux *http.ServeMux) {
	if g.cfg.Blobs != nil {
		mux.HandleFunc(blobPrefix, g.serveBlobs)
	}
}

// BlobURLRequest reports whether r is a request on a blob URL (PUT, GET
// or HEAD /v1/blobs/{id}), whose only credential is the URL's signature:
// authentication lets it through without an API key or token, and the
// blob handler refuses it (403) unless its signature checks out.
func BlobURLRequest(r *http.Request) bool {
	switch r.Method {
	case http.MethodPut, http.MethodGet, http.MethodHead:
	default:
		return false
	}
	id, ok := strings.CutPrefix(r.URL.Path, blobPrefix)
	return ok && blob.ValidID(id)
}

type blobURLRequest struct {
	ID               string `json:"id"`           // download-url
	ContentType      string `json:"content_type"` // upload-url
	MaxBytes         int64  `json:"max_bytes"`    // upload-url; 0: the cap
	ExpiresInSeconds int64  `json:"expires_in_seconds"`
}

type blobURLJSON struct {
	ID string `json:"id"`
	// URL is a path with its signed query, relative to the gateway's
	// HTTP address.
	URL         string `json:"url"`
	Method      string `json:"method"`
	ExpiresAt   string `json:"expires_at"`
	MaxBytes    int64  `json:"max_bytes,omitempty"`
	ContentType string `json:"content_type,omitempty"`
}

// Values of the function label of blob requests in the gateway's
// request metrics.
const (
	blobUploadURLLabel   = "blob:upload-url"
	blobDownloadURLLabel = "blob:download-url"
	blobPutLabel         = "blob:put"
	blobGetLabel         = "blob:get"
	blobMetaLabel        = "blob:meta"
	blobDeleteLabel      = "blob:delete"
	blobOtherLabel       = "blob:other"
)

func (g *Gateway) serveBlobs(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	label, err := g.routeBlob(w, r)
	if err != nil {
		g.writeError(w, r, err)
	}
	g.metrics.observe(protocolHTTP, label, err, time.Since(start))
}

// routeBlob serves one blob request and returns its metrics label and the
// error to answer, if any (nothing has been written then).
func (g *Gateway) routeBlob(w http.ResponseWriter, r *http.Request) (string, error) {
	rest := strings.TrimPrefix(r.URL.Path, blobPrefix)
	switch {
	case rest == "upload-url":
		if err := blobMethod(w, r, http.MethodPost); err != nil {
			return blobUploadURLLabel, err
		}
		return blobUploadURLLabel, g.serveUploadURL(w, r)
	case rest == "download-url":
		if err := blobMethod(w, r, http.MethodPost); err != nil {
			return blobDownloadURLLabel, err
		}
		return blobDownloadURLLabel, g.serveDownloadURL(w, r)
	case strings.HasSuffix(rest, "/meta") && blob.ValidID(strings.TrimSuffix(rest, "/meta")):
		if err := blobMethod(w, r, http.MethodGet); err != nil {
			return blobMetaLabel, err
		}
		return blobMetaLabel, g.serveBlobMeta(w, r, strings.TrimSuffix(rest, "/meta"))
	case blob.ValidID(rest):
		switch r.Method {
		case http.MethodPut:
			return blobPutLabel, g.serveBlobPut(w, r, rest)
		case http.MethodGet, http.MethodHead:
			return blobGetLabel, g.serveBlobGet(w, r, rest)
		case http.MethodDelete:
			return blobDeleteLabel, g.serveBlobDelete(w, r, rest)
		}
		return blobOtherLabel, blobMethod(w, r, "PUT, GET, HEAD, DELETE")
	}
	return blobOtherLabel, api.Errorf(codes.NotFound, "no blob endpoint %s: blob IDs are 1 to %d characters of A-Z a-z 0-9 _ -", clip(r.URL.Path), blob.MaxIDLen)
}

// blobMethod is a 405 error (with its Allow header set) unless r uses one
// of allowed.
func blobMethod(w http.ResponseWriter, r *http.Request, allowed string) error {
	for _, m := range strings.Split(allowed, ", ") {
		if r.Method == m {
			return nil
		}
	}
	w.Header().Set("Allow", allowed)
	return &api.Error{
		Code: codes.Unimplemented,
		Msg:  fmt.Sprintf("method %s is not allowed on %s: use %s", clip(r.Method), r.URL.Path, allowed),
		Err:  ErrMethodNotAllowed,
	}
}

// blobCaller returns the authenticated identity, or an error.
func blobCaller(r *http.Request) (*auth.Identity, error) {
	id := auth.FromContext(r.Context())
	if id == nil {
		return nil, api.New(codes.Unauthenticated, "the blob API needs an authenticated caller: send an API key or a bearer token")
	}
	if !id.Role.Valid() {
		return nil, api.Errorf(codes.PermissionDenied, "role %q may not use the blob API", clip(string(id.Role)))
	}
	return id, nil
}

// mayUse reports whether id may read or delete a blob uploaded by owner.
func mayUse(id *auth.Identity, owner string) bool {
	if id.Role == auth.RoleAdmin || id.Role == auth.RoleService {
		return true
	}
	return id.Subject != "" && id.Subject == owner
}

func (g *Gateway) blobTTL(req blobURLRequest) (time.Duration, error) {
	c := g.cfg.Blobs
	if req.ExpiresInSeconds < 0 {
		return 0, api.New(codes.InvalidArgument, "expires_in_seconds must not be negative")
	}
	if req.ExpiresInSeconds == 0 {
		return c.DefaultTTL, nil
	}
	ttl := time.Duration(req.ExpiresInSeconds) * time.Second
	if ttl > c.MaxTTL || req.ExpiresInSeconds > int64(c.MaxTTL/time.Second) {
		return 0, api.Errorf(codes.InvalidArgument, "expires_in_seconds may be at most %d", int64(c.MaxTTL/time.Second))
	}
	return ttl, nil
}

func signedURL(id string, q url.Values) string {
	return blobPrefix + id + "?" + q.Encode()
}

func (g *Gateway) serveUploadURL(w http.ResponseWriter, r *http.Request) error {
	c := g.cfg.Blobs
	who, err := blobCaller(r)
	var req blobURLRequest
	if err == nil {
		err = g.decodeBody(w, r, &req)
	}
	var ttl time.Duration
	if err == nil {
		ttl, err = g.blobTTL(req)
	}
	var ct string
	if err == nil {
		ct, err = blob.NormalizeContentType(req.ContentType)
	}
	if err == nil && req.ID != "" {
		err = api.New(codes.InvalidArgument, "an upload URL is for a new blob: the gateway picks its ID, do not send one")
	}
	if err == nil && (req.MaxBytes < 0 || req.MaxBytes > c.MaxBytes) {
		err = api.Errorf(codes.InvalidArgument, "max_bytes must be between 1 and %d (the gateway's cap), got %d", c.MaxBytes, req.MaxBytes)
	}
	if err != nil {
		return err
	}
	max := req.MaxBytes
	if max == 0 {
		max = c.MaxBytes
	}
	grant := blob.Grant{Method: http.MethodPut, ID: blob.NewID(), Expires: time.Now().Add(ttl).Truncate(time.Second), MaxSize: max, ContentType: ct, Owner: who.Subject}
	g.writeJSON(w, r, http.StatusOK, blobURLJSON{
		ID: grant.ID, URL: signedURL(grant.ID, c.Signer.Query(grant)), Method: http.MethodPut,
		ExpiresAt: grant.Expires.UTC().Format(time.RFC3339), MaxBytes: max, ContentType: ct,
	})
	return nil
}

func (g *Gateway) serveDownloadURL(w http.ResponseWriter, r *http.Request) error {
	c := g.cfg.Blobs
	who, err := blobCaller(r)
	var req blobURLRequest
	if err == nil {
		err = g.decodeBody(w, r, &req)
	}
	var ttl time.Duration
	if err == nil {
		ttl, err = g.blobTTL(req)
	}
	if err == nil && (req.ContentType != "" || req.MaxBytes != 0) {
		err = api.New(codes.InvalidArgument, "a download URL takes only id and expires_in_seconds")
	}
	if err == nil && !blob.ValidID(req.ID) {
		err = blob.ErrInvalidID
	}
	var meta blob.Meta
	if err == nil {
		meta, err = c.Store.Stat(r.Context(), req.ID)
	}
	if err == nil && !mayUse(who, meta.Owner) {
		// Not found, not forbidden: a client learns nothing of others' blobs.
		err = api.Wrap(blob.ErrNotFound, "no blob "+req.ID+" uploaded by you")
	}
	if err != nil {
		return blobError(err)
	}
	grant := blob.Grant{Method: http.MethodGet, ID: req.ID, Expires: time.Now().Add(ttl).Truncate(time.Second)}
	g.writeJSON(w, r, http.StatusOK, blobURLJSON{
		ID: grant.ID, URL: signedURL(grant.ID, c.Signer.Query(grant)), Method: http.MethodGet,
		ExpiresAt: grant.Expires.UTC().Format(time.RFC3339), ContentType: meta.ContentType,
	})
	return nil
}

func (g *Gateway) serveBlobPut(w http.ResponseWriter, r *http.Request, id string) error {
	c := g.cfg.Blobs
	grant, err := c.Signer.Verify(http.MethodPut, id, r.URL.Query())
	if err == nil && !blob.SameMediaType(r.Header.Get("Content-Type"), grant.ContentType) {
		err = api.Errorf(codes.PermissionDenied, "Content-Type %q does not match the upload URL's signed content type %q", clip(r.Header.Get("Content-Type")), grant.ContentType)
	}
	if err == nil && grant.MaxSize > c.MaxBytes {
		// Signed under a larger cap than today's: today's holds.
		grant.MaxSize = c.MaxBytes
	}
	if err == nil && r.ContentLength > grant.MaxSize {
		err = &api.Error{Code: codes.ResourceExhausted, Msg: fmt.Sprintf("Content-Length %d is over the upload URL's maximum of %d bytes", r.ContentLength, grant.MaxSize), Err: ErrBodyTooLarge}
	}
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	body := http.MaxBytesReader(w, &progressBody{r: r.Body, p: progress{rc: rc, idle: c.IdleTimeout}}, grant.MaxSize)
	meta, err := c.Store.Put(r.Context(), id, body, blob.PutOptions{
		Size: r.ContentLength, MaxSize: grant.MaxSize, ContentType: grant.ContentType, Owner: grant.Owner,
	})
	if err != nil {
		return blobError(err)
	}
	g.writeJSON(w, r, http.StatusCreated, meta)
	return nil
}

func (g *Gateway) serveBlobGet(w http.ResponseWriter, r *http.Request, id string) error {
	c := g.cfg.Blobs
	if _, err := c.Signer.Verify(http.MethodGet, id, r.URL.Query()); err != nil {
		return err
	}
	rc, meta, err := c.Store.Get(r.Context(), id)
	if err != nil {
		return blobError(err)
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", meta.ContentType)
	h.Set("ETag", `"`+meta.SHA256+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	// A blob is the uploader's bytes: never let a browser run it as a
	// page of the gateway's origin.
	h.Set("Content-Security-Policy", "sandbox")
	h.Set("Cache-Control", "private, max-age=3600")
	w = &progressWriter{ResponseWriter: w, p: progress{rc: http.NewResponseController(w), idle: c.IdleTimeout}}
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", meta.Created, rs) // Range, If-None-Match, HEAD
		return nil
	}
	h.Set("Content-Length", strconv.FormatInt(meta.Size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		if _, err := io.Copy(w, rc); err != nil {
			g.log.WarnContext(r.Context(), "blob download cut short", "id", id, "err", err)
		}
	}
	return nil
}

func (g *Gateway) serveBlobMeta(w http.ResponseWriter, r *http.Request, id string) error {
	who, err := blobCaller(r)
	var meta blob.Meta
	if err == nil {
		meta, err = g.cfg.Blobs.Store.Stat(r.Context(), id)
	}
	if err == nil && !mayUse(who, meta.Owner) {
		err = api.Wrap(blob.ErrNotFound, "no blob "+id+" uploaded by you")
	}
	if err != nil {
		return blobError(err)
	}
	g.writeJSON(w, r, http.StatusOK, meta)
	return nil
}

func (g *Gateway) serveBlobDelete(w http.ResponseWriter, r *http.Request, id string) error {
	s := g.cfg.Blobs.Store
	who, err := blobCaller(r)
	var meta blob.Meta
	if err == nil {
		meta, err = s.Stat(r.Context(), id)
	}
	if err == nil && !mayUse(who, meta.Owner) {
		err = api.Wrap(blob.ErrNotFound, "no blob "+id+" uploaded by you")
	}
	if err == nil {
		err = s.Delete(r.Context(), id)
	}
	if err != nil {
		return blobError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// progress moves a connection's deadlines forward while a blob's bytes
// move: to idle from now, at most once a second.
type progress struct {
	rc   *http.ResponseController
	idle time.Duration
	next time.Time
}

func (p *progress) moved(read bool) {
	now := time.Now()
	if now.Before(p.next) {
		return
	}
	p.next = now.Add(time.Second)
	// Not every ResponseWriter supports deadlines; then the listener's own
	// bounds stay.
	if read {
		_ = p.rc.SetReadDeadline(now.Add(p.idle))
	}
	// The answer comes after the body: the write deadline moves too.
	_ = p.rc.SetWriteDeadline(now.Add(p.idle))
}

// progressBody is an upload's body, moving the deadlines as it arrives.
type progressBody struct {
	r io.ReadCloser
	p progress
}

func (b *progressBody) Read(buf []byte) (int, error) {
	b.p.moved(true)
	return b.r.Read(buf)
}

func (b *progressBody) Close() error { return b.r.Close() }

// progressWriter is a download's ResponseWriter, moving the write deadline
// as the answer goes out.
type progressWriter struct {
	http.ResponseWriter
	p progress
}

func (w *progressWriter) Write(b []byte) (int, error) {
	w.p.moved(false)
	return w.ResponseWriter.Write(b)
}

func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// blobError codes a Store's error for the client: an oversized body is
// 413, a backend failure INTERNAL (logged by writeError, not shown).
func blobError(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &api.Error{Code: codes.ResourceExhausted, Msg: fmt.Sprintf("the body runs past the upload URL's maximum of %d bytes", mbe.Limit), Err: ErrBodyTooLarge}
	case errors.Is(err, blob.ErrTooLarge):
		return &api.Error{Code: codes.ResourceExhausted, Msg: err.Error(), Err: ErrBodyTooLarge}
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	if api.CodeOf(err) == codes.Canceled || api.CodeOf(err) == codes.DeadlineExceeded {
		return api.Errorf(api.CodeOf(err), "blob transfer interrupted: %v", err)
	}
	return err
}
