package event

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Each known event's level in the table is the one logs use, and no name
// is listed twice.
func TestKnownLevels(t *testing.T) {
	seen := map[Name]bool{}
	for _, e := range Known() {
		assert.False(t, seen[e.Name], "%s listed twice", e.Name)
		seen[e.Name] = true
		assert.Equal(t, e.Level, e.Name.Level(), "%s", e.Name)
		assert.Contains(t, []string{"device", "scs", "command"}, e.Source, "%s", e.Name)
		assert.NotEmpty(t, e.Doc, "%s", e.Name)
	}
	assert.Equal(t, "INFO", HelloOff.Level().String(), "stopping Hellos because provisioned is not a warning")
}

// The README's event list and Known agree: every event amtsim reports is
// documented, and nothing documented is not reported.
func TestREADMEListsEveryEvent(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	readme := string(b)
	start := strings.Index(readme, "<!-- events -->")
	end := strings.Index(readme, "<!-- /events -->")
	require.True(t, start >= 0 && end > start, "README has an <!-- events --> … <!-- /events --> section")
	section := readme[start:end]
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_.]+)` \\|").FindAllStringSubmatch(section, -1) {
		documented[m[1]] = true
	}
	var known, missing, extra []string
	for _, e := range Known() {
		known = append(known, string(e.Name))
		if !documented[string(e.Name)] {
			missing = append(missing, string(e.Name))
		}
		delete(documented, string(e.Name))
	}
	for n := range documented {
		extra = append(extra, n)
	}
	sort.Strings(extra)
	assert.Empty(t, missing, "reported but not in the README")
	assert.Empty(t, extra, "in the README but never reported")
	assert.NotEmpty(t, known)
}

// Every Name constant declared in this package is in Known, so none is
// reported without being documented.
func TestEveryConstantKnown(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "event.go", nil, 0)
	require.NoError(t, err)
	known := map[string]bool{}
	for _, e := range Known() {
		known[string(e.Name)] = true
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					continue
				}
				name, err := strconv.Unquote(lit.Value)
				require.NoError(t, err)
				n++
				assert.True(t, known[name], "%s is declared but not in Known", name)
			}
		}
	}
	assert.Equal(t, len(Known()), n, "Known lists exactly the declared names")
}
