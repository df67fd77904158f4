// Package report holds a benchmark's result and writes it as a table, as
// JSON and as an SVG plot.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
)

// Process names, as they appear in Result.Processes.
const (
	NATS     = "nats-server"
	Postgres = "postgres"
	Ticker   = "upwatch-ticker"
	Checker  = "upwatch-checker"
	Results  = "upwatch-results"
	Targets  = "targets"
	Baseline = "baseline"
)

// Pipeline are the processes whose CPU is the cost of running checks
// through upwatch; the targets are the monitored world, not upwatch.
var Pipeline = []string{NATS, Postgres, Ticker, Checker, Results}

// Services are upwatch's own processes.
var Services = []string{Ticker, Checker, Results}

// ProcessOrder is the order processes are listed and plotted in.
var ProcessOrder = []string{NATS, Postgres, Ticker, Checker, Results, Targets, Baseline}

// Machine describes where the benchmark ran.
type Machine struct {
	NProc       int    `json:"nproc"`
	MemoryBytes uint64 `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	CPUModel    string `json:"cpu_model"`
	GoVersion   string `json:"go_version"`
}

// Process is one process's cost over the measured window.
type Process struct {
	CPUSeconds              float64 `json:"cpu_seconds"`
	CPUSecondsPer1000Checks float64 `json:"cpu_seconds_per_1000_checks"`
	PeakRSSBytes            uint64  `json:"peak_rss_bytes"`
}

// Series are the per-second samples, T seconds from the window's start
// (negative during warm-up). A nil entry had no data that second.
type Series struct {
	T               []int64              `json:"t"`
	ChecksPerSecond []float64            `json:"checks_per_second"`
	LagP99Seconds   []*float64           `json:"lag_p99_seconds"`
	ChecksDepth     []*float64           `json:"checks_depth"`
	CPUPercent      map[string][]float64 `json:"cpu_percent"`
	RSSBytes        map[string][]uint64  `json:"rss_bytes"`
}

// BaselineRun is what the bare baseline did.
type BaselineRun struct {
	Checks  int64   `json:"checks"`
	Errors  int64   `json:"errors"`
	Dropped int64   `json:"dropped"`
	Seconds float64 `json:"seconds"`
}

// Result is one benchmark run.
type Result struct {
	Workload        string   `json:"workload"`
	Monitors        int      `json:"monitors"`
	IntervalSeconds float64  `json:"interval_seconds"`
	DurationSeconds float64  `json:"duration_seconds"`
	WarmupSeconds   float64  `json:"warmup_seconds"`
	OutageSeconds   float64  `json:"outage_seconds,omitempty"`
	Concurrency     int      `json:"checker_concurrency"`
	ServiceArgs     []string `json:"service_args,omitempty"`
	Machine         Machine  `json:"machine"`
	Date            string   `json:"date"`
	WindowStart     string   `json:"window_start"`
	WindowEnd       string   `json:"window_end"`

	ExpectedChecks int `json:"expected_checks"`
	AchievedChecks int `json:"achieved_checks"`
	MissedSlots    int `json:"missed_slots"`
	SkippedSlots   int `json:"skipped_slots"`
	LostSlots      int `json:"lost_slots"`
	// DuplicateSlots = DuplicateHits + OffCadenceRows.
	DuplicateSlots int `json:"duplicate_slots"`
	DuplicateHits  int `json:"duplicate_hits"`
	OffCadenceRows int `json:"off_cadence_rows"`

	LagP50Seconds         float64            `json:"lag_p50_seconds"`
	LagP99Seconds         float64            `json:"lag_p99_seconds"`
	LagP999Seconds        float64            `json:"lag_p999_seconds"`
	DueToStoredP99Seconds float64            `json:"due_to_stored_p99_seconds"`
	MaxQueueDepth         int64              `json:"max_queue_depth"`
	RowsPerSecond         float64            `json:"rows_per_second"`
	DBGrowthBytesPerDay   float64            `json:"db_growth_bytes_per_day"`
	ServicesPeakRSSBytes  uint64             `json:"services_peak_rss_bytes"`
	BareCPUPerCheck       float64            `json:"bare_cpu_per_check"`
	PipelineCPUPerCheck   float64            `json:"pipeline_cpu_per_check"`
	OverheadRatio         float64            `json:"overhead_ratio"`
	DrainSeconds          float64            `json:"drain_seconds"`
	BacklogClearedSeconds *float64           `json:"backlog_cleared_seconds,omitempty"`
	BacklogDrainedSeconds *float64           `json:"backlog_drained_seconds,omitempty"`
	HealthyLagP50Seconds  *float64           `json:"healthy_lag_p50_seconds,omitempty"`
	HealthyLagP99Seconds  *float64           `json:"healthy_lag_p99_seconds,omitempty"`
	PreOutageQueueDepth   *float64           `json:"pre_outage_queue_depth,omitempty"`
	OutageRestartSeconds  *float64           `json:"outage_restart_seconds,omitempty"`
	Processes             map[string]Process `json:"processes"`
	Baseline              BaselineRun        `json:"baseline"`
	Series                Series             `json:"series"`
}

// Finite replaces NaN and infinities, which JSON cannot hold, with 0.
func Finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

// Write writes DIR/<workload>.json and DIR/<workload>.svg and returns
// their paths.
func Write(dir string, r *Result) (jsonPath, svgPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // a report meant to be read
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	jsonPath = filepath.Join(dir, r.Workload+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", fmt.Errorf("encode result: %w", err)
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil { //nolint:gosec // a report meant to be read
		return "", "", fmt.Errorf("write %s: %w", jsonPath, err)
	}
	svgPath = filepath.Join(dir, r.Workload+".svg")
	f, err := os.Create(svgPath) //nolint:gosec // in the directory the caller chose
	if err != nil {
		return "", "", fmt.Errorf("create %s: %w", svgPath, err)
	}
	if err := SVG(f, r); err != nil {
		_ = f.Close()
		return "", "", fmt.Errorf("write %s: %w", svgPath, err)
	}
	if err := f.Close(); err != nil {
		return "", "", fmt.Errorf("write %s: %w", svgPath, err)
	}
	return jsonPath, svgPath, nil
}

// Table prints the headline numbers and the per-process costs.
func Table(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { _, _ = fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("workload", fmt.Sprintf("%s: %d monitors every %gs, window %gs after %gs warm-up",
		r.Workload, r.Monitors, r.IntervalSeconds, r.DurationSeconds, r.WarmupSeconds))
	row("machine", fmt.Sprintf("%d CPU, %s, %s", r.Machine.NProc, humanBytes(r.Machine.MemoryBytes), r.Machine.CPUModel))
	row("checks expected / achieved", fmt.Sprintf("%d / %d (%.2f%%)", r.ExpectedChecks, r.AchievedChecks,
		Finite(100*float64(r.AchievedChecks)/float64(r.ExpectedChecks))))
	row("slots missed / skipped / lost", fmt.Sprintf("%d / %d / %d", r.MissedSlots, r.SkippedSlots, r.LostSlots))
	row("duplicate slots", fmt.Sprintf("%d (extra target hits %d, off-cadence rows %d)", r.DuplicateSlots, r.DuplicateHits, r.OffCadenceRows))
	row("lag p50 / p99 / p99.9", fmt.Sprintf("%.3fs / %.3fs / %.3fs", r.LagP50Seconds, r.LagP99Seconds, r.LagP999Seconds))
	row("due → stored p99", fmt.Sprintf("%.3fs", r.DueToStoredP99Seconds))
	if r.HealthyLagP99Seconds != nil {
		row("healthy lag p50 / p99", fmt.Sprintf("%.3fs / %.3fs", *r.HealthyLagP50Seconds, *r.HealthyLagP99Seconds))
	}
	if r.BacklogClearedSeconds != nil {
		row("burst backlog cleared", fmt.Sprintf("%.1fs", *r.BacklogClearedSeconds))
	}
	if r.OutageSeconds > 0 {
		drained := "not within the window"
		if r.BacklogDrainedSeconds != nil {
			drained = fmt.Sprintf("%.0fs after restart", *r.BacklogDrainedSeconds)
		}
		row("checker outage", fmt.Sprintf("%gs; backlog drained %s", r.OutageSeconds, drained))
	}
	row("max CHECKS depth", fmt.Sprintf("%d (monitors %d)", r.MaxQueueDepth, r.Monitors))
	row("rows stored / s", fmt.Sprintf("%.1f", r.RowsPerSecond))
	row("database growth / day", humanBytes(uint64(max(0, r.DBGrowthBytesPerDay))))
	row("services peak RSS", humanBytes(r.ServicesPeakRSSBytes))
	row("CPU per check: pipeline / bare", fmt.Sprintf("%.0fµs / %.0fµs = %.2f× overhead",
		1e6*r.PipelineCPUPerCheck, 1e6*r.BareCPUPerCheck, r.OverheadRatio))
	row("drain after the window", fmt.Sprintf("%.1fs", r.DrainSeconds))
	if err := tw.Flush(); err != nil {
		return err
	}
	_, _ = fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "process\tCPU s\tCPU s / 1000 checks\tpeak RSS\t")
	for _, name := range processNames(r) {
		p := r.Processes[name]
		_, _ = fmt.Fprintf(tw, "%s\t%.2f\t%.4f\t%s\t\n", name, p.CPUSeconds, p.CPUSecondsPer1000Checks, humanBytes(p.PeakRSSBytes))
	}
	return tw.Flush()
}

// processNames lists the processes of r in ProcessOrder, then any others.
func processNames(r *Result) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range ProcessOrder {
		if _, ok := r.Processes[n]; ok {
			out = append(out, n)
			seen[n] = true
		}
	}
	var rest []string
	for n := range r.Processes {
		if !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// xmlEscape escapes text for an SVG text node or attribute.
func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
