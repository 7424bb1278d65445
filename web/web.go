package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// static holds the browser client. Everything under static/ is served under
// /static/; index.html and phone.html are also served as / and /phone/.
//
//go:embed static
var static embed.FS

// Security headers sent with every answer, 404s included.
const (
	// ContentSecurityPolicy allows only this origin's scripts, inline styles
	// (the finger diagrams are inline SVG with style attributes), data: images
	// (the pairing QR code is a data: PNG) and WebSockets to any host (ws: and
	// wss: cannot be limited to 'self' in every browser).
	ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
		"img-src 'self' data:; connect-src 'self' ws: wss:; media-src 'self' blob: data:; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	// staticMaxAge is the cache lifetime of /static/ files: short, because the
	// file names carry no version; the ETag makes a revalidation cheap.
	staticMaxAge = 5 * time.Minute
)

// file is one embedded file, ready to serve.
type file struct {
	name  string // base name, for http.ServeContent
	ctype string
	etag  string
	body  []byte
	html  bool
}

// Handler returns the http.Handler that serves the browser client:
//
//	GET /             the PC page (static/index.html)
//	GET /phone/       the phone page (static/phone.html); /phone redirects to it
//	GET /p/CODE       the phone page too: a pairing link (the QR code's content)
//	GET /static/NAME  the embedded scripts, styles and pages
//
// Anything else is 404; methods other than GET and HEAD get 405. HTML is sent
// with Cache-Control: no-cache, static files with a short max-age and an ETag.
// Every answer carries X-Content-Type-Options: nosniff, a Content-Security-Policy,
// Referrer-Policy: no-referrer and X-Frame-Options: DENY. The handler is safe for
// concurrent use and never blocks beyond writing the answer.
func Handler() http.Handler {
	files := loadFiles()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), screen-wake-lock=(self)")

		var name string
		switch p := r.URL.Path; {
		case p == "/" || p == "/index.html":
			name = "index.html"
		case p == "/phone/" || p == "/phone/index.html":
			name = "phone.html"
		case isPairPath(p):
			// The QR code's short link: the phone page, which trades the code.
			name = "phone.html"
		case p == "/phone":
			if !getOrHead(w, r) {
				return
			}
			// The fragment (#s=...&p=...) survives a redirect without one.
			http.Redirect(w, r, "/phone/", http.StatusMovedPermanently)
			return
		case strings.HasPrefix(p, "/static/"):
			name = strings.TrimPrefix(p, "/static/")
			if name != path.Clean(name) || strings.Contains(name, "/") {
				name = "" // no directories, no traversal
			}
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if !getOrHead(w, r) {
			return
		}
		h.Set("Content-Type", f.ctype)
		h.Set("ETag", f.etag)
		if f.html {
			h.Set("Cache-Control", "no-cache")
		} else {
			h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(staticMaxAge/time.Second)))
		}
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
	})
}

// isPairPath reports whether p is a pairing link's path: /p/<code> (either
// case, since QR codes carry it upper case), the code 4-32 letters and digits.
func isPairPath(p string) bool {
	code, ok := strings.CutPrefix(p, "/p/")
	if !ok {
		code, ok = strings.CutPrefix(p, "/P/")
	}
	if !ok || len(code) < 4 || len(code) > 32 {
		return false
	}
	for _, c := range code {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

func getOrHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// contentTypes maps the extensions shipped in static/ to their types. A file
// with another extension is not served (Files lists only these).
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".ico":         "image/x-icon",
	".json":        "application/json",
	".webmanifest": "application/manifest+json",
}

func loadFiles() map[string]file {
	files := make(map[string]file)
	entries, err := fs.ReadDir(static, "static")
	if err != nil {
		panic("web: embedded static directory missing: " + err.Error()) // impossible: go:embed checks it at build time
	}
	for _, e := range entries {
		ct, ok := contentTypes[path.Ext(e.Name())]
		if e.IsDir() || !ok {
			continue
		}
		b, err := static.ReadFile("static/" + e.Name())
		if err != nil {
			panic("web: reading embedded " + e.Name() + ": " + err.Error())
		}
		sum := sha256.Sum256(b)
		files[e.Name()] = file{
			name:  e.Name(),
			ctype: ct,
			etag:  `"` + hex.EncodeToString(sum[:8]) + `"`,
			body:  b,
			html:  path.Ext(e.Name()) == ".html",
		}
	}
	return files
}

// Files returns the names of the embedded files served under /static/, in
// lexical order. It is meant for tests and diagnostics.
func Files() []string {
	entries, _ := fs.ReadDir(static, "static")
	var names []string
	for _, e := range entries {
		if _, ok := contentTypes[path.Ext(e.Name())]; ok && !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}
