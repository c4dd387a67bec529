package sdk_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"strings"
	"testing"
)

// Plugin authors never handle the wire protocol: no exported declaration
// of package sdk (function and method signatures, types, their exported
// fields, variables) names a type of sdk/pluginv1.
func TestExportedAPIDoesNotNameTheWireProtocol(t *testing.T) {
	fset := token.NewFileSet()
	files, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	show := func(n ast.Node) string {
		var b bytes.Buffer
		_ = printer.Fprint(&b, fset, n)
		return b.String()
	}
	check := func(what string, n ast.Node) {
		if n != nil && strings.Contains(show(n), "pluginv1.") {
			t.Errorf("sdk.%s exposes the wire protocol: %s", what, show(n))
		}
	}
	checked := 0
	for _, e := range files {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() || d.Recv != nil && !ast.IsExported(strings.TrimLeft(show(d.Recv.List[0].Type), "*")) {
					continue
				}
				checked++
				check(d.Name.Name, d.Type)
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						checked++
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, fld := range st.Fields.List {
								if len(fld.Names) == 0 || fld.Names[0].IsExported() {
									check(s.Name.Name+" field", fld.Type)
								}
							}
							continue
						}
						check(s.Name.Name, s.Type)
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								checked++
								check(n.Name, s.Type)
							}
						}
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d exported declarations: the test did not find the package's files", checked)
	}
}
