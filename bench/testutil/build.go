package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// GoTool returns the go command of the toolchain that built the running
// test ($GOROOT/bin/go), or else the go on PATH, so that a test builds
// with the Go it was built with whatever PATH says.
func GoTool() (string, error) {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p, nil
	}
	return exec.LookPath("go")
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

// Build compiles the main package pkg (an import path such as
// "chatd/cmd/chatd", or a directory such as "." for the package under
// test) into dir/name and returns the binary's path. The error carries
// the output of go build.
func Build(pkg, dir, name string) (string, error) {
	goTool, err := GoTool()
	if err != nil {
		return "", fmt.Errorf("go build %s: no go tool: %w", pkg, err)
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command(goTool, "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// BuildInTempDir is Build into t.TempDir(), removed when the test ends;
// it fails t if the build fails.
func BuildInTempDir(t testing.TB, pkg, name string) string {
	t.Helper()
	bin, err := Build(pkg, t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
