package archcheck

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/latchkey/latchkey"

// floors maps a package path (relative to the module) to its floor, higher floors
// first; the first matching prefix wins. The client (floor 0, below everything) is
// what tenants import into their own backends: it imports no other package of the
// module, and nothing outside the standard library.
var floors = []struct {
	prefix string
	floor  int
	name   string
}{
	{"internal/archcheck", 6, "check"},
	{"internal/app", 6, "wiring"},
	{"cmd/", 6, "wiring"},
	{"examples/", 6, "wiring"},
	{"internal/transport/", 5, "transport"},
	{"graph", 4, "API"},
	{"internal/domain/", 3, "domain"},
	{"internal/data/", 2, "data"},
	{"ent", 2, "data"},
	{"migrate", 2, "data"},
	{"internal/platform/", 1, "platform"},
	{"client", 0, "client"},
}

// floorOf returns pkg's floor and its name ("" for a package of the module on no
// floor), and whether pkg is of the module at all.
func floorOf(pkg string) (int, string, bool) {
	rel, ok := strings.CutPrefix(pkg, module)
	if !ok {
		return 0, "", false // not ours
	}
	rel = strings.TrimPrefix(rel, "/")
	if rel == "" {
		return 6, "wiring", true // package main (server.go)
	}
	for _, f := range floors {
		if rel == strings.TrimSuffix(f.prefix, "/") || strings.HasPrefix(rel, f.prefix) {
			return f.floor, f.name, true
		}
	}
	return 0, "", true
}

// standard reports whether imp is in Go's standard library (its first element has
// no dot).
func standard(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}

// entgql reports whether pkg is ent's generated code or schema, which entgql ties to
// gqlgen by design (Relay connections, filters, node resolution).
func entgql(pkg string) bool {
	rel := strings.TrimPrefix(pkg, module+"/")
	return rel == "ent" || strings.HasPrefix(rel, "ent/")
}

// TestFloors fails when a package imports one of a higher floor, when a package below
// the API floor imports gqlgen or gqlparser, when the client imports anything but the
// standard library and itself, or when a package sits on no floor at all.
func TestFloors(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg := fields[0]
		f, name, ours := floorOf(pkg)
		if !ours {
			continue
		}
		n++
		if name == "" {
			t.Errorf("%s is on no floor: place it under internal/{transport,domain,data,platform}, graph, ent, migrate, client or examples", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if name == "client" && !standard(imp) && !strings.HasPrefix(imp, module+"/") { // the module's own: by floor, next
				t.Errorf("%s (client) imports %s: the client depends only on the standard library", pkg, imp)
			}
			if f <= 3 && !entgql(pkg) && (strings.HasPrefix(imp, "github.com/99designs/gqlgen") || strings.HasPrefix(imp, "github.com/vektah/gqlparser")) {
				t.Errorf("%s (%s) imports %s: GraphQL belongs to the API floor", pkg, name, imp)
			}
			g, gname, ours := floorOf(imp)
			if ours && g > f {
				t.Errorf("%s (%s) imports %s (%s): a lower floor must not import a higher one", pkg, name, imp, gname)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d packages listed", n)
	}
}
