//go:build linux

package bench

import (
	"net"
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses, as /proc shows it.
	line := "4242 (my (odd) srv) S 17 4242 17 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 999 123456 789 18446744073709551615"
	s, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if s.ppid != 17 || s.utime != 250 || s.stime != 75 || s.threads != 12 {
		t.Errorf("parsed %+v", s)
	}
	if d := ticksToDuration(s.utime + s.stime); d != 3250*time.Millisecond {
		t.Errorf("325 ticks = %v", d)
	}
	if _, err := parseProcStat("garbage"); err == nil {
		t.Errorf("garbage parsed")
	}
}

func TestParseStatusRSS(t *testing.T) {
	rss, err := parseStatusRSS([]byte("Name:\tchatd\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads:\t7\n"))
	if err != nil || rss != 2048<<10 {
		t.Errorf("rss %d, %v", rss, err)
	}
}

func TestReadProcSelfAndFindListener(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.Threads <= 0 || s.FDs <= 0 {
		t.Errorf("self sample %+v", s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := FindListener(ln.Addr().(*net.TCPAddr).Port, os.Getpid())
	if err != nil || pid != os.Getpid() {
		t.Errorf("FindListener = %d, %v; want %d", pid, err, os.Getpid())
	}
	if limit, err := OpenFileLimit(os.Getpid()); err != nil || limit <= 0 {
		t.Errorf("OpenFileLimit = %d, %v", limit, err)
	}
}
