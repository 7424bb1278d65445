package protocol

import (
	"bytes"
	"encoding/json"
	"flag"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/api_codes.json from the Code constants")

// codeFile is testdata/api_codes.json: every Code constant of the package
// (message errors and HTTP refusals) with its comment. The browser client's
// tests (web/testdata/*.test.mjs) load it to check that the JavaScript
// compares error codes only with codes that exist.
type codeFile struct {
	Comment string            `json:"comment"`
	Codes   map[string]string `json:"codes"`
}

const codeFileComment = "Generated from protocol's Code constants by TestAPICodesFile " +
	"(go test ./protocol/ -run TestAPICodesFile -update); do not edit."

// sourceCodes reads every `X Code = "value" // comment` constant of the
// package's non-test files.
func sourceCodes(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := gotoken.NewFileSet()
	codes := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != gotoken.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
					continue
				}
				for i, n := range vs.Names {
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != gotoken.STRING {
						t.Fatalf("%s: %s is not a string literal", name, n.Name)
					}
					v, _ := strconv.Unquote(lit.Value)
					if _, dup := codes[v]; dup {
						t.Fatalf("%s: code %q defined twice", name, v)
					}
					codes[v] = strings.TrimSpace(vs.Comment.Text())
				}
			}
		}
	}
	return codes
}

// TestAPICodesFile keeps testdata/api_codes.json equal to the Code constants.
func TestAPICodesFile(t *testing.T) {
	codes := sourceCodes(t)
	for _, c := range []Code{CodeInvalidJSON, CodeInternal, CodeTokenRequired, CodeDraining} {
		if _, ok := codes[string(c)]; !ok {
			t.Fatalf("the parser missed %s (found %d codes)", c, len(codes))
		}
	}
	snake := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for c, doc := range codes {
		if !snake.MatchString(c) || doc == "" {
			t.Errorf("code %q (%q): want snake_case with a comment saying what it means", c, doc)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(codeFile{Comment: codeFileComment, Codes: codes}); err != nil {
		t.Fatal(err)
	}
	want := buf.Bytes()
	path := filepath.Join("testdata", "api_codes.json")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run go test ./protocol/ -run TestAPICodesFile -update", path)
	}
}
