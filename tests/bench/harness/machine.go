package harness

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"upwatch.dev/tests/bench/report"
)

// machine describes the computer the benchmark runs on.
func machine() report.Machine {
	m := report.Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		kb, _ := strconv.ParseUint(strings.TrimSuffix(v, " kB"), 10, 64)
		m.MemoryBytes = kb * 1024
	}
	return m
}

// procField is the value of the first "key: value" line with key.
func procField(path, key string) string {
	f, err := os.Open(path) //nolint:gosec // fixed /proc files
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
