//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)
// needs cgo to ask).
const clockTicks = 100

// procStat holds the fields of /proc/PID/stat chatbench uses.
type procStat struct {
	ppid    int
	utime   uint64
	stime   uint64
	threads int
}

// parseProcStat parses a /proc/PID/stat line. The command name (field 2)
// is in parentheses and may itself hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseProcStat(line string) (procStat, error) {
	end := strings.LastIndexByte(line, ')')
	if end < 0 {
		return procStat{}, errors.New("chatbench: malformed /proc stat line")
	}
	f := strings.Fields(line[end+1:])
	// f[0] is field 3 (state): field k is f[k-3].
	if len(f) < 18 {
		return procStat{}, errors.New("chatbench: short /proc stat line")
	}
	var s procStat
	var err error
	if s.ppid, err = strconv.Atoi(f[1]); err != nil {
		return s, err
	}
	if s.utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return s, err
	}
	if s.stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return s, err
	}
	if s.threads, err = strconv.Atoi(f[17]); err != nil {
		return s, err
	}
	return s, nil
}

// ticksToDuration converts clock ticks to time.
func ticksToDuration(ticks uint64) time.Duration {
	return time.Duration(ticks) * (time.Second / clockTicks)
}

// parseStatusRSS finds VmRSS (kB) in /proc/PID/status.
func parseStatusRSS(status []byte) (int64, error) {
	for _, line := range bytes.Split(status, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v))
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("chatbench: no VmRSS in /proc status")
}

// ReadProc samples a process: CPU, RSS, open descriptors and threads.
func ReadProc(pid int) (ProcSample, error) {
	s := ProcSample{PID: pid, At: time.Now()}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	st, err := parseProcStat(string(raw))
	if err != nil {
		return s, err
	}
	s.CPU = ticksToDuration(st.utime + st.stime)
	s.Threads = st.threads
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	if s.RSS, err = parseStatusRSS(status); err != nil {
		return s, err
	}
	s.FDs, _ = countFDs(pid)
	return s, nil
}

// ReadProcCPU reads only the CPU time, the cheap part of ReadProc.
func ReadProcCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	st, err := parseProcStat(string(raw))
	if err != nil {
		return 0, err
	}
	return ticksToDuration(st.utime + st.stime), nil
}

// ReadProcRSS reads only the resident set size.
func ReadProcRSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusRSS(status)
}

func countFDs(pid int) (int, error) {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(4096)
		n += len(names)
		if err != nil || len(names) == 0 {
			return n, nil
		}
	}
}

// OpenFileLimit reads the soft "Max open files" limit of a process.
func OpenFileLimit(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			if f[0] == "unlimited" {
				return 1 << 30, nil
			}
			return strconv.Atoi(f[0])
		}
	}
	return 0, errors.New("chatbench: no open-file limit in /proc limits")
}

// listenInodes returns the socket inodes listening on TCP port (IPv4 or
// IPv6) from /proc/net/tcp{,6}.
func listenInodes(port int) map[string]bool {
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ... inode (field 9)
			if len(fields) < 10 || fields[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			p, err := strconv.ParseUint(hexPort, 16, 32)
			if err == nil && int(p) == port {
				inodes[fields[9]] = true
			}
		}
		f.Close()
	}
	return inodes
}

// FindListener returns the PID of the process holding a listening socket on
// port. With root > 0 only root and its descendants are considered (the
// server started through `sh -c` or `go run` is a grandchild).
func FindListener(port, root int) (int, error) {
	inodes := listenInodes(port)
	if len(inodes) == 0 {
		return 0, fmt.Errorf("chatbench: nothing listens on port %d", port)
	}
	var candidates []int
	if root > 0 {
		candidates = descendants(root)
	} else {
		candidates = allPIDs()
	}
	for _, pid := range candidates {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		d, err := os.Open(dir)
		if err != nil {
			continue
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, n := range names {
			link, err := os.Readlink(dir + "/" + n)
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("chatbench: no process found holding the listener on port %d", port)
}

func allPIDs() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// descendants returns root and every process below it.
func descendants(root int) []int {
	children := map[int][]int{}
	for _, pid := range allPIDs() {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		st, err := parseProcStat(string(raw))
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
