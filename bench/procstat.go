package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ProcSample is one look at a process: from /proc on Linux
// (procstat_linux.go), from ps(1) elsewhere (procstat_other.go), where FDs
// and Threads are not available and stay 0.
type ProcSample struct {
	PID     int           `json:"pid"`
	At      time.Time     `json:"at"`
	CPU     time.Duration `json:"cpu_ns"` // user + system, all threads, since start
	RSS     int64         `json:"rss_bytes"`
	FDs     int           `json:"fds"`
	Threads int           `json:"threads"`
}

// RaiseOpenFileLimit lifts this process's soft RLIMIT_NOFILE to its hard
// limit and returns the new soft limit. Where the hard limit cannot be
// set as a soft one (macOS: "unlimited", above kern.maxfilesperproc; Go's
// runtime already raised the soft limit at start) the soft limit stays,
// and is returned with the error.
func RaiseOpenFileLimit() (int, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	cur := rl.Cur
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return int(min(cur, 1<<30)), err
		}
	}
	return int(min(rl.Cur, 1<<30)), nil
}

// selfCPU is this process's CPU time so far.
func selfCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// parsePSTime parses ps's cumulative CPU time: [[dd-]hh:]mm:ss[.ss].
func parsePSTime(s string) (time.Duration, error) {
	var d time.Duration
	if days, rest, ok := strings.Cut(s, "-"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("chatbench: ps time %q", s)
		}
		d, s = time.Duration(n)*24*time.Hour, rest
	}
	parts := strings.Split(s, ":")
	secs, err := strconv.ParseFloat(parts[len(parts)-1], 64)
	if err != nil || len(parts) > 3 {
		return 0, fmt.Errorf("chatbench: ps time %q", s)
	}
	d += time.Duration(secs * float64(time.Second))
	unit := time.Minute
	for i := len(parts) - 2; i >= 0; i-- {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return 0, fmt.Errorf("chatbench: ps time %q", s)
		}
		d += time.Duration(n) * unit
		unit *= 60
	}
	return d, nil
}
