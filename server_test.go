package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// A subcommand that fails says why: its log line, written through the buffered log
// writer, reaches stderr before the process ends.
func TestSubcommandErrorIsLogged(t *testing.T) {
	t.Setenv("DATABASE_URL", "mysql://127.0.0.1/none") // refused before any connection
	args := os.Args
	t.Cleanup(func() { os.Args = args })
	os.Args = []string{"latchkey", "admin-key"}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	code := run()
	os.Stderr = stderr
	w.Close()
	out, _ := io.ReadAll(r)
	if code != 1 || !strings.Contains(string(out), "admin-key") {
		t.Fatalf("exit %d, stderr %q: want 1 and the admin-key error", code, out)
	}
}
