package chat

import (
	"embed"
	"io/fs"
	"net/http"
)

// Web holds the chat page, web/index.html: one dependency-free file that
// sends with POST /v1/call and shows a room live over GET /v1/subscribe.
//
//go:embed web
var Web embed.FS

// Page serves Web's files from its root, "/" being index.html. Dev mode
// mounts it at /chat/ (behind http.StripPrefix("/chat", ...)); the page
// calls the API at /v1/ on the same origin.
func Page() http.Handler {
	root, err := fs.Sub(Web, "web")
	if err != nil {
		panic(err) // the embedded tree always has web/
	}
	files := http.FileServerFS(root)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
