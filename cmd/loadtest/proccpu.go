package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on Linux).
const userHZ = 100

// processCPU returns the CPU time (user + system) the process pid has used so far,
// from /proc/PID/stat; an error where there is no /proc. On a shared machine the CPU
// a process spends per request is steadier than its requests per second, which
// depend on how much of the cores the other processes leave it.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ppid …": comm may hold spaces, so split after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// Fields 14 and 15 of the file (utime, stime); f[0] is field 3 (state).
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// backingCPU returns the CPU time used so far by the processes of the stores Latchkey
// talks to on this machine: every PostgreSQL process and every Redis server (the one on
// port 6379 and a test cluster's). ok is false where there is no /proc. The harness reads
// it before and after a round; other users of those servers at the same time are
// counted too, so it is an upper bound.
func backingCPU() (total time.Duration, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		switch strings.TrimSpace(string(comm)) {
		case "postgres":
		case "redis-server":
		default:
			continue
		}
		if cpu, err := processCPU(pid); err == nil {
			total += cpu
		}
	}
	return total, true
}
