// Package buildinfo says which build of chatd (or chatbench) is running:
// the module version, the VCS revision and its time, whether the tree had
// uncommitted changes, and the Go version, as the go command recorded them
// in the binary (runtime/debug.ReadBuildInfo).
//
// A binary built with "go build" in a git checkout has all of them; "go
// run", "go test" and builds with -buildvcs=false have no VCS fields, and
// the module version is "(devel)" unless the go command could derive one
// from a tag or the commit.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Unknown is the value of a field the binary does not record.
const Unknown = "unknown"

// Info is one binary's build.
type Info struct {
	Version   string // module version: v1.2.3, a pseudo-version, or (devel)
	Revision  string // VCS revision (git commit hash)
	Time      string // the revision's commit time, RFC 3339
	Dirty     string // "true" if the tree had uncommitted changes, "false" if not
	GoVersion string // the Go toolchain that built it, e.g. go1.26.8
}

// Read returns the running binary's build; a field it does not record is
// Unknown.
func Read() Info {
	info := Info{Version: Unknown, Revision: Unknown, Time: Unknown, Dirty: Unknown, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Version: Unknown, Revision: Unknown, Time: Unknown, Dirty: Unknown, GoVersion: runtime.Version()}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	if bi.Main.Version != "" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		if s.Value == "" {
			continue
		}
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Dirty = s.Value
		}
	}
	return info
}

// String is the -version line of program: its name, then the fields as
// key=value, e.g.
//
//	chatd v0.0.0-20260502101500-8f3c2a1b9d4e revision=8f3c2a1b9d4e... time=2026-05-02T10:15:00Z dirty=false go=go1.26.8
func (i Info) String(program string) string {
	var b strings.Builder
	b.WriteString(program)
	b.WriteString(" ")
	b.WriteString(i.Version)
	for _, kv := range [...][2]string{{"revision", i.Revision}, {"time", i.Time}, {"dirty", i.Dirty}, {"go", i.GoVersion}} {
		b.WriteString(" ")
		b.WriteString(kv[0])
		b.WriteString("=")
		b.WriteString(kv[1])
	}
	return b.String()
}

// LogAttrs are the fields as slog key-value pairs, for a start-up line.
func (i Info) LogAttrs() []any {
	return []any{"version", i.Version, "revision", i.Revision, "revision_time", i.Time, "dirty", i.Dirty, "go", i.GoVersion}
}
