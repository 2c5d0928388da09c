package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"chatd/bench/testutil"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "chatd", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "-buildmode", Value: "exe"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-05-02T10:15:00Z"},
			{Key: "vcs.modified", Value: "true"},
		}}
	got := fromBuildInfo(bi)
	want := Info{Version: "v1.2.3", Revision: "0123456789abcdef0123456789abcdef01234567", Time: "2026-05-02T10:15:00Z", Dirty: "true", GoVersion: "go1.99.1"}
	if got != want {
		t.Fatalf("fromBuildInfo = %+v, want %+v", got, want)
	}
	if s, w := got.String("chatd"), "chatd v1.2.3 revision=0123456789abcdef0123456789abcdef01234567 time=2026-05-02T10:15:00Z dirty=true go=go1.99.1"; s != w {
		t.Errorf("String = %q, want %q", s, w)
	}
	// Built without VCS information (go run, go test, -buildvcs=false).
	got = fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "chatd", Version: "(devel)"}})
	want = Info{Version: "(devel)", Revision: Unknown, Time: Unknown, Dirty: Unknown, GoVersion: "go1.99.1"}
	if got != want {
		t.Fatalf("fromBuildInfo without VCS = %+v, want %+v", got, want)
	}
}

func TestReadInTest(t *testing.T) {
	got := Read()
	if got.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", got.GoVersion, runtime.Version())
	}
	if got.Version == "" || got.Revision == "" || got.Time == "" || got.Dirty == "" {
		t.Errorf("empty field in %+v: want a value or %q", got, Unknown)
	}
}

// TestStampedBinary builds a program around this package with go build in
// a fresh git repository, as a release build would be, and checks what it
// reads against git: the commit, its time, clean; then dirty after an
// edit. (chatd's own tests check chatd -version against its checkout.)
func TestStampedBinary(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is needed to build a VCS-stamped binary: %v", err)
	}
	goTool, err := testutil.GoTool()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src, err := os.ReadFile("buildinfo.go")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"go.mod":                 "module stamp\n\ngo 1.26\n",
		"buildinfo/buildinfo.go": string(src),
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\n\t\"stamp/buildinfo\"\n)\n\n" +
			"func main() { fmt.Println(buildinfo.Read().String(\"stamp\")) }\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(gitBin, append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %q: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "stamp")
	rev := git("rev-parse", "HEAD")
	unix := git("log", "-1", "--format=%ct")
	build := func() string {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "stamp")
		cmd := exec.Command(goTool, "build", "-buildvcs=true", "-o", bin, ".")
		cmd.Dir = dir
		// Whatever the environment says (-buildvcs=false here and there):
		// this build is to be stamped.
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		out, err := exec.Command(bin).Output()
		if err != nil {
			t.Fatalf("running the stamped binary: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	sec, err := strconv.ParseInt(unix, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Unix(sec, 0).UTC().Format(time.RFC3339)
	got := build()
	t.Logf("clean build: %s", got)
	if !strings.HasPrefix(got, "stamp ") ||
		!strings.HasSuffix(got, " revision="+rev+" time="+when+" dirty=false go="+runtime.Version()) {
		t.Errorf("clean build: %q, want revision=%s time=%s dirty=false go=%s", got, rev, when, runtime.Version())
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(files["main.go"]+"\n// edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got = build()
	t.Logf("edited: %s", got)
	if !strings.Contains(got, " revision="+rev+" ") || !strings.Contains(got, " dirty=true ") {
		t.Errorf("build with an edit: %q, want revision=%s dirty=true", got, rev)
	}
}
