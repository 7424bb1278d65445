package web

import (
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestRoutes(t *testing.T) {
	h := Handler()
	type route struct {
		path, ctype, cache, contains string
		status                       int
	}
	tests := []route{
		{"/", "text/html; charset=utf-8", "no-cache", `id="qr"`, 200},
		{"/index.html", "text/html; charset=utf-8", "no-cache", `src="/static/pc.js"`, 200},
		{"/phone/", "text/html; charset=utf-8", "no-cache", `id="practice-toggle"`, 200},
		{"/static/link.js", "text/javascript; charset=utf-8", "public, max-age=300", "export class Link", 200},
		{"/static/chords.js", "text/javascript; charset=utf-8", "public, max-age=300", "export function strum", 200},
		{"/static/style.css", "text/css; charset=utf-8", "public, max-age=300", "#chord", 200},
		{"/static/phone.html", "text/html; charset=utf-8", "no-cache", "phone.js", 200},
		{"/p/K7QX2M9DPA4T", "text/html; charset=utf-8", "no-cache", `id="practice-toggle"`, 200},
		{"/P/K7QX2M9DPA4T", "text/html; charset=utf-8", "no-cache", `id="practice-toggle"`, 200},
	}
	for _, path := range []string{"/static/", "/static/nope.js", "/static/../web.go", "/static/sub/x.js", "/favicon.ico",
		"/api/sessions", "/phone/extra", "/p/", "/p/AB/CD", "/p/ABC%2E", "/web.go"} {
		tests = append(tests, route{path: path, status: 404})
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			res := get(t, h, http.MethodGet, tt.path, nil)
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.status)
			}
			checkSecurityHeaders(t, res)
			if tt.status != 200 {
				return
			}
			if got := res.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type %q, want %q", got, tt.ctype)
			}
			if got := res.Header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control %q, want %q", got, tt.cache)
			}
			if res.Header.Get("ETag") == "" {
				t.Error("no ETag")
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body does not contain %q", tt.contains)
			}
		})
	}
}

func checkSecurityHeaders(t *testing.T, res *http.Response) {
	t.Helper()
	if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", got)
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "img-src 'self' data:", "connect-src 'self' ws: wss:", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-eval") || regexp.MustCompile(`script-src[^;]*unsafe-inline`).MatchString(csp) {
		t.Errorf("CSP allows inline or eval'd scripts: %q", csp)
	}
	if got := res.Header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy %q", got)
	}
}

func TestPhoneRedirectKeepsPath(t *testing.T) {
	res := get(t, Handler(), http.MethodGet, "/phone", nil)
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/phone/" {
		t.Fatalf("got %d %q, want 301 /phone/", res.StatusCode, res.Header.Get("Location"))
	}
}

func TestMethodsAndConditional(t *testing.T) {
	h := Handler()
	res := get(t, h, http.MethodPost, "/", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /: %d Allow=%q", res.StatusCode, res.Header.Get("Allow"))
	}
	res = get(t, h, http.MethodHead, "/static/link.js", nil)
	if res.StatusCode != 200 {
		t.Fatalf("HEAD: %d", res.StatusCode)
	}
	etag := res.Header.Get("ETag")
	res = get(t, h, http.MethodGet, "/static/link.js", map[string]string{"If-None-Match": etag})
	if res.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d, want 304", res.StatusCode)
	}
}

// TestPagesHaveTestIDs pins the element ids that browser tests read.
func TestPagesHaveTestIDs(t *testing.T) {
	pages := map[string][]string{
		"static/index.html": {"qr", "pairing-url", "chord", "path", "practice", "members", "ws-state", "latency", "error"},
		"static/phone.html": {"chord", "practice-toggle", "path", "ws-state", "error", "grid", "practice"},
	}
	for name, ids := range pages {
		b, err := static.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if !strings.Contains(string(b), `id="`+id+`"`) {
				t.Errorf("%s lacks id %q", name, id)
			}
		}
	}
	for _, want := range []string{`data-path="relay"`, `data-state="connecting"`, `data-status=""`} {
		b, _ := static.ReadFile("static/index.html")
		if !strings.Contains(string(b), want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
}

// TestEveryFileReferenced checks that every file under static/ is embedded,
// served, and referenced by a page or a module (no dead files), and that
// every reference points at a file that exists.
func TestEveryFileReferenced(t *testing.T) {
	served := map[string]bool{}
	for _, n := range Files() {
		served[n] = true
	}
	disk, err := os.ReadDir("static")
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, e := range disk {
		if !served[e.Name()] {
			t.Errorf("static/%s is not embedded or has an extension the handler does not serve", e.Name())
		}
		b, err := fs.ReadFile(static, "static/"+e.Name())
		if err != nil {
			t.Errorf("static/%s not embedded: %v", e.Name(), err)
			continue
		}
		all.Write(b)
	}
	text := all.String()
	roots := map[string]bool{"index.html": true, "phone.html": true}
	for n := range served {
		if roots[n] {
			continue
		}
		if !strings.Contains(text, "/static/"+n) && !strings.Contains(text, "'./"+n+"'") {
			t.Errorf("static/%s is referenced by no page or module", n)
		}
	}
	ref := regexp.MustCompile(`(?:"/static/([^"]+)"|from '\./([^']+)')`)
	for _, m := range ref.FindAllStringSubmatch(text, -1) {
		n := m[1] + m[2]
		if !served[n] {
			t.Errorf("reference to missing file %q", n)
		}
	}
}

// TestJavaScript runs the Node unit tests of the browser client (testdata/)
// when node is installed (under CI=true it must be). The modules are copied
// next to a package.json that marks them as ES modules, so any Node from 18
// on runs them unchanged, with protocol's list of error codes
// (protocol/testdata/api_codes.json) and the shared delivery vectors
// (protocol/testdata/delivery.json, liveness.json) beside the tests.
func TestJavaScript(t *testing.T) {
	node := testkit.Need(t, "node")
	dir := t.TempDir()
	for _, sub := range []string{"static", "testdata"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyGlob := func(pattern, sub string) []string {
		files, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, sub, filepath.Base(f))
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out = append(out, dst)
		}
		return out
	}
	copyGlob("static/*.js", "static")
	tests := copyGlob("testdata/*.test.mjs", "testdata")
	for _, f := range []string{"api_codes.json", "delivery.json", "liveness.json"} {
		if len(copyGlob("../protocol/testdata/"+f, "testdata")) != 1 {
			t.Fatal("no ../protocol/testdata/" + f)
		}
	}
	if len(tests) == 0 {
		t.Fatal("no testdata/*.test.mjs")
	}
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"--test"}, tests...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}
