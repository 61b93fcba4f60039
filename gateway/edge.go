package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// The HTTP edge: security headers, CORS and the cross-origin check.
//
// A browser sends an Origin header with cross-origin requests and with
// every WebSocket upgrade. The gateway answers a request carrying one only
// if the origin is the gateway's own (same host, as the dev chat page) or
// allow-listed (Config.CORSOrigins); any other is refused with
// PERMISSION_DENIED (403) before it runs — not merely left without CORS
// headers, since a "simple" cross-site POST would otherwise still run
// (there are no cookies to steal, but a dev-mode gateway on loopback has
// no authentication to stop a web page the developer visits). Requests
// without an Origin (curl, servers, gRPC) are not affected.
//
// Allowed cross-origin callers get Access-Control-Allow-Origin (the
// origin itself, or "*" when the list is "*"), never
// Access-Control-Allow-Credentials: Lunora authenticates with the
// Authorization header, which needs no credentials mode, and has no
// cookies.

// ErrOriginNotAllowed: a browser request came from an origin that is not
// the gateway's own and not in Config.CORSOrigins.
var ErrOriginNotAllowed = api.New(codes.PermissionDenied, "origin not allowed")

const (
	// apiCSP is the Content-Security-Policy of API answers: JSON is never
	// a document, so nothing may load, run or frame it.
	apiCSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
	// hsts is sent on answers served over TLS.
	hsts = "max-age=31536000"

	corsAllowMethods = "GET, POST"
	corsMaxAge       = "600"
)

// corsAllowHeaders are the request headers a cross-origin caller may send
// (beyond the CORS-safelisted ones).
var corsAllowHeaders = []string{"Authorization", "Content-Type", BookmarkHeader}

// corsExposeHeaders are the answer headers a cross-origin caller may read.
const corsExposeHeaders = "Retry-After, " + BookmarkHeader

// ParseOrigins checks an allow-list of origins: each "*" (any origin, on
// its own) or scheme://host[:port] with scheme http or https and nothing
// after the host. It returns them normalized (lower case, no trailing
// slash).
func ParseOrigins(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, o := range list {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o == "*" {
			if len(list) > 1 {
				return nil, fmt.Errorf("CORS origins: \"*\" allows every origin and must be alone in the list")
			}
			return []string{"*"}, nil
		}
		n, err := normalizeOrigin(strings.TrimSuffix(o, "/"))
		if err != nil {
			return nil, fmt.Errorf("CORS origins: %q: %v", o, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return "", err
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("an origin is http:// or https:// and a host")
	case u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", fmt.Errorf("an origin is scheme://host[:port] and nothing else")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// originAllowed reports whether r may be served as far as its Origin is
// concerned, and the value of Access-Control-Allow-Origin to answer with
// ("" for none: no Origin, or the gateway's own).
func (g *Gateway) originAllowed(r *http.Request) (allow string, ok bool) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return "", true
	}
	if len(g.origins) == 1 && g.origins[0] == "*" {
		return "*", true
	}
	n, err := normalizeOrigin(origin)
	if err != nil {
		return "", false // "null" (sandboxed frames, file://) and garbage
	}
	if _, ok := g.originSet[n]; ok {
		return origin, true
	}
	if u, _ := url.Parse(n); u != nil && strings.EqualFold(u.Host, r.Host) {
		return "", true // same origin
	}
	return "", false
}

// edge wraps the API handler: security headers with the API's
// Content-Security-Policy on every answer, CORS preflights answered, and
// requests from origins not allowed refused.
func (g *Gateway) edge(next http.Handler) http.Handler {
	return SecurityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", apiCSP)
		if len(g.origins) > 0 {
			h.Add("Vary", "Origin")
		}
		allow, ok := g.originAllowed(r)
		if !ok {
			g.metrics.observe(protocolHTTP, limitedLabel, ErrOriginNotAllowed, 0)
			g.writeError(w, r, &api.Error{
				Code: codes.PermissionDenied,
				Msg:  fmt.Sprintf("origin %q may not call this API: it is not the gateway's own and not in the gateway's CORS allow-list (-cors-origins)", clip(r.Header.Get("Origin"))),
				Err:  ErrOriginNotAllowed,
			})
			return
		}
		if allow != "" {
			h.Set("Access-Control-Allow-Origin", allow)
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			g.preflight(w, r, allow)
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// preflight answers a CORS preflight from an allowed origin.
func (g *Gateway) preflight(w http.ResponseWriter, r *http.Request, allow string) {
	method := r.Header.Get("Access-Control-Request-Method")
	if method != http.MethodGet && method != http.MethodPost {
		w.Header().Set("Allow", corsAllowMethods)
		g.writeError(w, r, &api.Error{Code: codes.Unimplemented, Msg: fmt.Sprintf("method %s is not allowed: the API takes GET and POST", clip(method)), Err: ErrMethodNotAllowed})
		return
	}
	for _, name := range strings.Split(r.Header.Get("Access-Control-Request-Headers"), ",") {
		name = strings.TrimSpace(name)
		if name != "" && !allowedHeader(name) {
			g.writeError(w, r, api.Errorf(codes.PermissionDenied, "request header %q may not be sent cross-origin; allowed: %s", clip(name), strings.Join(corsAllowHeaders, ", ")))
			return
		}
	}
	h := w.Header()
	if allow != "" {
		h.Set("Access-Control-Allow-Methods", corsAllowMethods)
		h.Set("Access-Control-Allow-Headers", strings.Join(corsAllowHeaders, ", "))
		h.Set("Access-Control-Max-Age", corsMaxAge)
	}
	h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
}

func allowedHeader(name string) bool {
	for _, h := range corsAllowHeaders {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// SecurityHeaders sets the headers every answer of a Lunora HTTP listener
// carries — X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer,
// X-Frame-Options: DENY, and Strict-Transport-Security on answers served
// over TLS — and calls next. Handler applies it to the API; the binaries
// wrap their whole listener (ops endpoints, the dev chat page) with it.
func SecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", hsts)
		}
		next.ServeHTTP(w, r)
	})
}
