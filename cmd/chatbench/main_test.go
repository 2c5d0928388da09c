package main

import (
	"bytes"
	"os/exec"
	"regexp"
	"runtime"
	"testing"

	"chatd/bench/testutil"
)

// TestChatbenchVersion: chatbench -version prints its build on one line of
// stdout and exits 0, with or without a scenario before it.
func TestChatbenchVersion(t *testing.T) {
	bin := testutil.BuildInTempDir(t, ".", "chatbench")
	re := regexp.MustCompile(`^chatbench (\S+) revision=(\S+) time=(\S+) dirty=(\S+) go=(\S+)\n$`)
	for _, args := range [][]string{{"-version"}, {"density", "-version"}} {
		cmd := exec.Command(bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chatbench %q: %v, want exit status 0\n%s", args, err, stderr.String())
		}
		m := re.FindStringSubmatch(stdout.String())
		if m == nil {
			t.Fatalf("chatbench %q printed %q, want chatbench VERSION revision=... time=... dirty=... go=...", args, stdout.String())
		}
		if m[5] != runtime.Version() {
			t.Errorf("go=%s, want %s", m[5], runtime.Version())
		}
		if stderr.Len() != 0 {
			t.Errorf("chatbench %q wrote to stderr: %q", args, stderr.String())
		}
	}
}
