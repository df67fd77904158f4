// Package procstat reads CPU time and memory of processes from /proc.
package procstat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// TicksPerSecond is USER_HZ, the unit of the CPU times in /proc/PID/stat.
// It is 100 on every Linux architecture Go supports; reading it with
// sysconf would need cgo.
const TicksPerSecond = 100

// Stat is one process's counters.
type Stat struct {
	PID  int
	PPID int
	// CPU is user + system time in ticks.
	CPU uint64
	// ChildCPU is the user + system time of children the process has
	// waited for: where an exited PostgreSQL backend's CPU goes.
	ChildCPU uint64
}

// ReadStat parses /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return parseStat(pid, b)
}

func parseStat(pid int, b []byte) (Stat, error) {
	// The command name is in parentheses and may hold spaces and
	// parentheses itself: the fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("stat of %d: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, so f[11].
	if len(f) < 15 {
		return Stat{}, fmt.Errorf("stat of %d: %d fields", pid, len(f))
	}
	num := func(k int) uint64 {
		v, _ := strconv.ParseUint(f[k], 10, 64)
		return v
	}
	ppid, _ := strconv.Atoi(f[1])
	return Stat{PID: pid, PPID: ppid, CPU: num(11) + num(12), ChildCPU: num(13) + num(14)}, nil
}

// Memory is a process's resident memory, in bytes.
type Memory struct {
	RSS  uint64 // VmRSS
	HWM  uint64 // VmHWM: peak RSS over the process's life
	Anon uint64 // RssAnon: private memory, what a second process of the kind would add
}

// ReadMemory parses /proc/PID/status.
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Memory{}, fmt.Errorf("read status of %d: %w", pid, err)
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		case "RssAnon":
			dst = &m.Anon
		default:
			continue
		}
		*dst = kB(val)
	}
	return m, sc.Err()
}

func kB(s string) uint64 {
	v, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(s), " kB"), 10, 64)
	return v * 1024
}

// Pss is the proportional set size of a process from smaps_rollup: shared
// pages divided among the processes sharing them, so a sum over
// PostgreSQL's processes counts shared_buffers once. It falls back to
// VmRSS where smaps_rollup cannot be read.
func Pss(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Pss:"); ok {
				return kB(v), nil
			}
		}
	}
	m, err := ReadMemory(pid)
	return m.RSS, err
}

// Children lists the live processes whose parent is ppid.
func Children(ppid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var kids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(pid)
		if err != nil {
			continue // gone since the listing
		}
		if st.PPID == ppid {
			kids = append(kids, pid)
		}
	}
	return kids, nil
}

// Tree is the CPU and memory of a process and its children, as one.
type Tree struct {
	CPU uint64 // ticks: the root's own and waited-for children's, plus the live children's
	Pss uint64 // bytes, summed over the root and its live children
}

// ReadTree measures root and its direct children. A child that has exited
// and been waited for has its CPU in the root's ChildCPU, so the total
// only grows as backends come and go.
func ReadTree(root int) (Tree, error) {
	st, err := ReadStat(root)
	if err != nil {
		return Tree{}, err
	}
	t := Tree{CPU: st.CPU + st.ChildCPU}
	if p, err := Pss(root); err == nil {
		t.Pss += p
	}
	kids, err := Children(root)
	if err != nil {
		return t, err
	}
	for _, pid := range kids {
		kst, err := ReadStat(pid)
		if err != nil {
			continue
		}
		t.CPU += kst.CPU
		if p, err := Pss(pid); err == nil {
			t.Pss += p
		}
	}
	return t, nil
}

// ErrNoPID means a pid file held no process id.
var ErrNoPID = errors.New("no process id")

// PIDFile reads the process id on the first line of a pid file, such as
// PostgreSQL's postmaster.pid.
func PIDFile(path string) (int, error) {
	b, err := os.ReadFile(path) //nolint:gosec // a pid file the caller names
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: %w", path, ErrNoPID)
	}
	return pid, nil
}
