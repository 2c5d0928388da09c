//go:build !linux

package bench

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Without /proc (macOS, the BSDs) a process is sampled with ps(1): RSS and
// CPU time. Open descriptors, threads and another process's open-file
// limit are not available here: FDs and Threads stay 0, OpenFileLimit
// returns ErrNotAvailable (the report then shows no server limit), and
// the machine-wide kernel figures (kernel.go, /proc/meminfo) are absent.

// ErrNotAvailable is returned for a reading this OS does not offer.
var ErrNotAvailable = errors.New("chatbench: not available on this OS (no /proc)")

// psSample runs ps for pid's resident set (KiB) and CPU time.
func psSample(pid int) (rss int64, cpu time.Duration, err error) {
	out, err := exec.Command("ps", "-o", "rss=", "-o", "time=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("chatbench: ps -p %d: %w", pid, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("chatbench: ps -p %d: %q", pid, out)
	}
	kb, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("chatbench: ps rss %q: %w", f[0], err)
	}
	cpu, err = parsePSTime(f[1])
	return kb << 10, cpu, err
}

// ReadProc samples a process: CPU and RSS (FDs and Threads: 0).
func ReadProc(pid int) (ProcSample, error) {
	s := ProcSample{PID: pid, At: time.Now()}
	var err error
	s.RSS, s.CPU, err = psSample(pid)
	return s, err
}

// ReadProcCPU reads a process's CPU time.
func ReadProcCPU(pid int) (time.Duration, error) {
	_, cpu, err := psSample(pid)
	return cpu, err
}

// ReadProcRSS reads a process's resident set size.
func ReadProcRSS(pid int) (int64, error) {
	rss, _, err := psSample(pid)
	return rss, err
}

// OpenFileLimit is not available for another process here.
func OpenFileLimit(int) (int, error) { return 0, ErrNotAvailable }

// FindListener returns the PID of the process listening on TCP port,
// asking lsof(1) (macOS has it; on FreeBSD it is a package). With root > 0
// only root and its descendants count. Without lsof, a root whose port
// answers a dial is taken as the listener itself (a server started through
// `go run` or a shell is then sampled as its parent, wrongly).
func FindListener(port, root int) (int, error) {
	out, err := exec.Command("lsof", "-nP", "-t", fmt.Sprintf("-iTCP:%d", port), "-sTCP:LISTEN").Output()
	if errors.Is(err, exec.ErrNotFound) {
		if root <= 0 {
			return 0, fmt.Errorf("chatbench: no lsof to find who listens on port %d (give the server's pid)", port)
		}
		c, derr := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if derr != nil {
			return 0, fmt.Errorf("chatbench: nothing listens on port %d", port)
		}
		c.Close()
		return root, nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return 0, fmt.Errorf("chatbench: nothing listens on port %d", port)
	}
	if root <= 0 {
		return pids[0], nil
	}
	for _, d := range descendants(root) {
		for _, pid := range pids {
			if pid == d {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("chatbench: no process found holding the listener on port %d", port)
}

// descendants returns root and every process below it (ps -A).
func descendants(root int) []int {
	out, err := exec.Command("ps", "-A", "-o", "pid=", "-o", "ppid=").Output()
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i += 2 {
		pid, err1 := strconv.Atoi(f[i])
		ppid, err2 := strconv.Atoi(f[i+1])
		if err1 == nil && err2 == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	list := []int{root}
	for i := 0; i < len(list); i++ {
		list = append(list, children[list[i]]...)
	}
	return list
}
