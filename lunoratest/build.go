package lunoratest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binaries are the Lunora commands, built by Build.
type Binaries struct {
	// Node and Gateway are the paths of lunora-node and lunora-gateway.
	Node, Gateway string
	// ModuleRoot is the directory of the lunora module's go.mod.
	ModuleRoot string
	// Race reports whether they were built with -race (they are when the
	// test binary is). Their stderr is then checked for data race reports.
	Race bool
}

// buildTimeout bounds "go build"; the first cgo SQLite build takes about a
// minute on a small machine.
const buildTimeout = 8 * time.Minute

// built is the one build of this test binary. It is state shared by every
// test of the binary on purpose: building once is the point.
var built struct {
	once sync.Once
	dir  string
	bins *Binaries
	err  error
}

// Build builds cmd/lunora-node and cmd/lunora-gateway into a temporary
// directory the first time it is called in a test binary and returns them;
// later calls return the same binaries. A failed build fails t (and every
// later caller). Call Main from TestMain to remove the directory at exit.
func Build(t testing.TB) *Binaries {
	t.Helper()
	built.once.Do(func() { built.bins, built.dir, built.err = build() })
	if built.err != nil {
		t.Fatalf("lunoratest: %v", built.err)
	}
	return built.bins
}

// Main runs m and removes what Build built, then exits with m's code. Use
// it as the body of TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func build() (*Binaries, string, error) {
	goBin, err := goCommand()
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return nil, "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return nil, "", errors.New("Build must run inside the lunora module (go env GOMOD is empty)")
	}
	root := filepath.Dir(gomod)
	dir, err := os.MkdirTemp("", "lunoratest-bin-")
	if err != nil {
		return nil, "", err
	}
	// -tags lunorafault: the crash tests' fault points (LUNORA_FAULT, read
	// by cmd/lunora-node/fault_lunorafault.go only in such a build).
	args := []string{"build", "-tags", "lunorafault", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/lunora-node", "./cmd/lunora-gateway")
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	var combined bytes.Buffer
	cmd.Stdout, cmd.Stderr = &combined, &combined
	start := time.Now()
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("go %s (in %s, after %s): %v\n%s", strings.Join(args, " "), root, time.Since(start).Round(time.Millisecond), err, combined.Bytes())
	}
	return &Binaries{
		Node:       filepath.Join(dir, "lunora-node"),
		Gateway:    filepath.Join(dir, "lunora-gateway"),
		ModuleRoot: root,
		Race:       raceEnabled,
	}, dir, nil
}

// goCommand finds the go command: the one on PATH, else GOROOT's.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("the go command is neither on PATH nor in GOROOT/bin")
}
