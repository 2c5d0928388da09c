package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
)

// KernelSample is the machine-wide memory chatbench watches around a run:
// what the kernel holds for sockets does not show in any process's RSS.
// On loopback both ends of every connection are on this machine, so a
// connection costs the kernel two sockets.
type KernelSample struct {
	MemAvailable int64 `json:"mem_available_bytes"` // /proc/meminfo MemAvailable
	Slab         int64 `json:"slab_bytes"`          // /proc/meminfo Slab (sockets, files, dentries, epoll items)
	TCPInUse     int64 `json:"tcp_inuse"`           // /proc/net/sockstat TCP inuse (sockets, both ends)
	TCPMem       int64 `json:"tcp_mem_bytes"`       // /proc/net/sockstat TCP mem (pages of socket buffers) in bytes
}

// ReadKernel samples /proc/meminfo and /proc/net/sockstat.
func ReadKernel() (KernelSample, error) {
	var k KernelSample
	mi, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return k, err
	}
	for _, line := range bytes.Split(mi, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(string(f[1]), 10, 64)
		switch string(f[0]) {
		case "MemAvailable:":
			k.MemAvailable = v << 10
		case "Slab:":
			k.Slab = v << 10
		}
	}
	ss, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return k, err
	}
	sc := bufio.NewScanner(bytes.NewReader(ss))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || string(f[0]) != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			v, _ := strconv.ParseInt(string(f[i+1]), 10, 64)
			switch string(f[i]) {
			case "inuse":
				k.TCPInUse = v
			case "mem":
				k.TCPMem = v * int64(os.Getpagesize())
			}
		}
	}
	return k, nil
}

// memoryGuard polls MemAvailable every 100 ms while a run goes on; when
// it falls under min bytes it calls trip once with the figure it saw.
// stop ends it.
func memoryGuard(ctx context.Context, min int64, trip func(avail int64)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if k, err := ReadKernel(); err == nil && k.MemAvailable > 0 && k.MemAvailable < min {
				trip(k.MemAvailable)
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// errLowMemory is the cause a run stops with when the guard trips.
func errLowMemory(avail, min int64, open int64) error {
	return fmt.Errorf("stopped: MemAvailable fell to %d MiB, under -min-available %d MiB, after %d connections were opened; the servers and client workers were killed", avail>>20, min>>20, open)
}
