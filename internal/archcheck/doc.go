// Package archcheck holds the test that keeps the floors of the code apart: transport
// → API → domain → data → platform, each importing only its own floor and those below
// (see ARCHITECTURE.md). `make lint` runs it.
package archcheck
