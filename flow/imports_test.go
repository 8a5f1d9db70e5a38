package flow

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoTunnelImport keeps flow below the layers that use it: it must import neither the
// tunnel core, nor quic-go (quicgate's fork or upstream), nor the ingresses.
func TestNoTunnelImport(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	more, _ := filepath.Glob("*/*.go")
	for _, f := range append(files, more...) {
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, banned := range []string{"quicmux", "quic-go", "github.com/quicgate/quicgate/ingress"} {
				if strings.Contains(p, banned) {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}
