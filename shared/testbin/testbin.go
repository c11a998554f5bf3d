// Package testbin builds the binaries of Heartline's services for tests that need
// another service as a real process: a service module never imports another one, so an
// end-to-end test runs the other service the way production does. Binaries are built
// once per test process, from the workspace the test runs in.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	built = map[string]string{}
	dir   string
)

// Root returns the repository root: the nearest parent directory holding go.work.
func Root() (string, error) {
	if r := os.Getenv("HEARTLINE_ROOT"); r != "" {
		return r, nil
	}
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("testbin: no go.work above the working directory")
		}
		d = parent
	}
}

// Path builds services/<name>/cmd/<name> (once per process) and returns the binary.
func Path(name string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[name]; ok {
		return p, nil
	}
	root, err := Root()
	if err != nil {
		return "", err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "heartline-bin-"); err != nil {
			return "", err
		}
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = filepath.Join(root, "services", name)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testbin: building %s: %v\n%s", name, err, b)
	}
	built[name] = out
	return out, nil
}

// Build is Path for tests: it fails the test when the build fails.
func Build(t testing.TB, name string) string {
	t.Helper()
	p, err := Path(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
