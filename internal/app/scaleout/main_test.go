package scaleout

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// serverBinary is the latchkey binary built once by TestMain.
var serverBinary string

// TestMain builds the server binary once for every test of the package, runs the
// tests, removes the binary and fails the package if a goroutine outlived them.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse() // for testing.Verbose
	dir, err := os.MkdirTemp("", "latchkey-scaleout-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "scaleout:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	serverBinary, err = buildServer(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scaleout: building the server:", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Printf("scaleout: built %s in %v\n", serverBinary, time.Since(start).Round(time.Millisecond))
	}

	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "scaleout: goroutines leaked:", err)
			return 1
		}
	}
	return code
}

// buildServer runs `go build -o dir/latchkey <module root>` and returns the binary's path.
func buildServer(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build the server: %w", err)
	}
	bin := filepath.Join(dir, "latchkey")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the working directory")
		}
		dir = parent
	}
}
