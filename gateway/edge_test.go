package gateway_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lunora/lunora/gateway"
)

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	e := newEnv(t, nil)
	h := e.gw.Handler()
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/v1/call", sendBody},                   // 200
		{"POST", "/v1/call", `{"function": "nope"}`},     // 404
		{"GET", "/v1/call", ""},                          // 405
		{"GET", "/v1/status", ""},                        // 200
		{"GET", "/nowhere", ""},                          // 404
		{"POST", "/v1/sql", `{"sql": "SELECT 1"} trail`}, // 400
	} {
		w := serve(h, "10.0.0.1:1", nil, tc.method, tc.path, tc.body, nil)
		hd := w.Header()
		for k, want := range map[string]string{
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"X-Frame-Options":         "DENY",
			"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
		} {
			if got := hd.Get(k); got != want {
				t.Errorf("%s %s (%d): %s = %q, want %q", tc.method, tc.path, w.Code, k, got, want)
			}
		}
		if hd.Get("Strict-Transport-Security") != "" || hd.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s %s: HSTS or CORS headers on a plain request without Origin: %v", tc.method, tc.path, hd)
		}
	}

	// HSTS only over TLS; SecurityHeaders alone (the binaries' whole
	// listener) carries no CSP, so a page it serves keeps its own.
	page := gateway.SecurityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
	}))
	w := serve(page, "10.0.0.1:1", nil, "GET", "/chat/", "", nil)
	if w.Header().Get("Strict-Transport-Security") != "" || w.Header().Get("Content-Security-Policy") != "" || w.Header().Get("X-Frame-Options") != "DENY" {
		t.Errorf("plain-HTTP page headers: %v", w.Header())
	}
	r := httptest.NewRequest("GET", "/chat/", nil)
	r.TLS = &tls.ConnectionState{}
	w = record(page, r)
	if got := w.Header().Get("Strict-Transport-Security"); got != "max-age=31536000" {
		t.Errorf("HSTS over TLS = %q", got)
	}
}

func TestCORS(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.CORSOrigins = []string{"https://app.example.com", "http://localhost:3000/"} })
	h := e.gw.Handler()
	origin := func(o string) map[string]string { return map[string]string{"Origin": o} }

	// An allowed origin: the call runs, ACAO echoes the origin, never
	// credentials.
	w := serve(h, "10.0.0.1:1", nil, "POST", "/v1/call", sendBody, origin("https://app.example.com"))
	if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" || w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("allowed origin: %d %v", w.Code, w.Header())
	}
	if !strings.Contains(w.Header().Get("Vary"), "Origin") || !strings.Contains(w.Header().Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Errorf("allowed origin: Vary/Expose headers %v", w.Header())
	}
	// Origins compare case-insensitively in scheme and host; the list's
	// trailing slash is ignored.
	if w := serve(h, "10.0.0.1:1", nil, "GET", "/v1/status", "", origin("http://LOCALHOST:3000")); w.Code != 200 {
		t.Errorf("listed origin in upper case: %d %s", w.Code, w.Body)
	}

	// Any other origin is refused before the call runs: a cross-site
	// "simple" POST must not execute.
	before := e.backend.count()
	for _, o := range []string{"https://evil.example", "http://app.example.com", "https://app.example.com:8443", "null"} {
		w := serve(h, "10.0.0.1:1", nil, "POST", "/v1/call", sendBody, origin(o))
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "PERMISSION_DENIED") || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("origin %q: %d %v %s", o, w.Code, w.Header(), w.Body)
		}
	}
	if e.backend.count() != before {
		t.Errorf("a refused origin's call reached the backend")
	}

	// The gateway's own origin (the dev chat page) is always allowed.
	r := httptest.NewRequest("POST", "/v1/call", strings.NewReader(sendBody))
	r.Host = "gw.internal:8080"
	r.Header.Set("Origin", "http://gw.internal:8080")
	if w := record(h, r); w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("same origin: %d %v %s", w.Code, w.Header(), w.Body)
	}

	// Preflights.
	pre := func(o, method, headers string) *httptest.ResponseRecorder {
		hd := map[string]string{"Origin": o, "Access-Control-Request-Method": method}
		if headers != "" {
			hd["Access-Control-Request-Headers"] = headers
		}
		return serve(h, "10.0.0.1:1", nil, "OPTIONS", "/v1/call", "", hd)
	}
	w = pre("https://app.example.com", "POST", "authorization, content-type")
	if w.Code != http.StatusNoContent || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		w.Header().Get("Access-Control-Allow-Methods") != "GET, POST" || !strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") ||
		w.Header().Get("Access-Control-Max-Age") == "" || w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("allowed preflight: %d %v", w.Code, w.Header())
	}
	if w := pre("https://evil.example", "POST", ""); w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from a refused origin: %d %v", w.Code, w.Header())
	}
	if w := pre("https://app.example.com", "DELETE", ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("preflight for DELETE: %d", w.Code)
	}
	if w := pre("https://app.example.com", "POST", "x-forwarded-for"); w.Code != http.StatusForbidden {
		t.Errorf("preflight with a header not allowed: %d", w.Code)
	}
	// An OPTIONS that is not a preflight is just a wrong method.
	if w := serve(h, "10.0.0.1:1", nil, "OPTIONS", "/v1/call", "", nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("plain OPTIONS: %d", w.Code)
	}
}

func TestCORSAnyOrigin(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.CORSOrigins = []string{"*"} })
	w := serve(e.gw.Handler(), "10.0.0.1:1", nil, "POST", "/v1/call", sendBody, map[string]string{"Origin": "https://anyone.example"})
	if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != "*" || w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("any origin: %d %v", w.Code, w.Header())
	}
}

func TestCORSDefaultIsSameOriginOnly(t *testing.T) {
	e := newEnv(t, nil)
	if w := serve(e.gw.Handler(), "10.0.0.1:1", nil, "POST", "/v1/call", sendBody, map[string]string{"Origin": "https://anyone.example"}); w.Code != http.StatusForbidden {
		t.Errorf("cross origin with no allow-list: %d", w.Code)
	}
}

func TestWebSocketOriginCheck(t *testing.T) {
	e := newEnv(t, func(c *gateway.Config) { c.CORSOrigins = []string{"https://app.example.com"} })
	url := "ws" + strings.TrimPrefix(e.url, "http") + "/v1/subscribe"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(origin string) (int, error) {
		opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
		if origin != "" {
			opts.HTTPHeader.Set("Origin", origin)
		}
		c, resp, err := websocket.Dial(ctx, url, opts)
		if c != nil {
			c.CloseNow()
		}
		if resp != nil {
			return resp.StatusCode, err
		}
		return 0, err
	}
	host := strings.TrimPrefix(e.url, "http://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true}, // not a browser
		{"https://app.example.com", true},
		{"http://" + host, true}, // same origin: the dev chat page
		{"https://evil.example", false},
		{"https://" + "app.example.com.evil.example", false},
	} {
		status, err := dial(tc.origin)
		if tc.ok && (err != nil || status != http.StatusSwitchingProtocols) {
			t.Errorf("origin %q: refused (%d, %v)", tc.origin, status, err)
		}
		if !tc.ok && (err == nil || status != http.StatusForbidden) {
			t.Errorf("origin %q: status %d, err %v; want 403", tc.origin, status, err)
		}
	}
}

func TestParseOrigins(t *testing.T) {
	got, err := gateway.ParseOrigins([]string{" https://App.Example.com/ ", "http://[::1]:8080", ""})
	if err != nil || len(got) != 2 || got[0] != "https://app.example.com" || got[1] != "http://[::1]:8080" {
		t.Errorf("ParseOrigins = %q, %v", got, err)
	}
	for _, bad := range [][]string{
		{"app.example.com"}, {"ftp://app.example.com"}, {"https://app.example.com/path"},
		{"https://user@app.example.com"}, {"https://"}, {"*", "https://a.example"}, {"https://a.example?x=1"},
	} {
		if _, err := gateway.ParseOrigins(bad); err == nil {
			t.Errorf("ParseOrigins(%q) accepted", bad)
		}
	}
}

func record(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
