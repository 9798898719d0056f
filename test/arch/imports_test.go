// Package arch checks the architecture rules that the compiler does not: a
// service never imports another service, and the platform never imports a
// service. Run by `make test` and `make lint`.
package arch

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/mercato/mercato/"

// rule says which of the repository's packages a folder may not import.
type rule struct {
	dir    string
	forbid func(fromDir, imported string) bool
}

func servicesOf(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "services/")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, "/")
	return name, true
}

var rules = []rule{
	{"services", func(from, imported string) bool {
		own, _ := servicesOf(from)
		other, isService := servicesOf(imported)
		return isService && other != own
	}},
	{"platform", func(_, imported string) bool { _, isService := servicesOf(imported); return isService }},
	{"proto", func(_, imported string) bool { _, isService := servicesOf(imported); return isService }},
	{"loadtest", func(_, imported string) bool { _, isService := servicesOf(imported); return isService }},
}

func TestNoServiceImportsAnother(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, r := range rules {
		err := filepath.WalkDir(filepath.Join(root, r.dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			from := filepath.ToSlash(filepath.Dir(rel))
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				internal, ok := strings.CutPrefix(p, module)
				if ok && r.forbid(from, internal) {
					t.Errorf("%s imports %s: services talk through RPC and events, never by importing each other (shared code belongs in platform/)", rel, p)
				}
			}
			checked++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked < 20 {
		t.Fatalf("only %d files checked; is the test looking at the repository?", checked)
	}
}

func TestRuleCatchesCrossServiceImport(t *testing.T) {
	if !rules[0].forbid("services/cart", "services/catalog") {
		t.Fatal("a cart → catalog import would pass")
	}
	if rules[0].forbid("services/catalog/migrations", "services/catalog") {
		t.Fatal("a service's own subpackage was refused")
	}
	if !rules[1].forbid("platform/events", "services/catalog/migrations") {
		t.Fatal("a platform → service import would pass")
	}
}
