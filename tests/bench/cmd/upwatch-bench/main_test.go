package main

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"upwatch.dev/tests/bench/report"
)

// TestSmoke runs the benchmark binary on a tiny fleet and checks that it
// measures and reports, not how fast anything is: the numbers of a loaded
// test machine say nothing.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system for about a minute")
	}
	bin := filepath.Join(t.TempDir(), "upwatch-bench")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	cases := []struct {
		workload string
		args     []string
	}{
		{"steady", nil},
		{"recovery", []string{"--outage", "5s"}},
	}
	for _, c := range cases {
		t.Run(c.workload, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := append([]string{"--workload", c.workload, "--monitors", "300", "--interval", "5s",
				"--warmup", "5s", "--duration", "10s", "--baseline-max", "5s", "--out", dir}, c.args...)
			cmd := exec.Command(bin, args...)
			output, err := cmd.CombinedOutput()
			require.NoError(t, err, "upwatch-bench:\n%s", output)
			t.Logf("upwatch-bench %v:\n%s", args, output)

			var res report.Result
			b, err := os.ReadFile(filepath.Join(dir, c.workload+".json"))
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &res))
			assert.Equal(t, c.workload, res.Workload)
			assert.Equal(t, 300, res.Monitors)
			assert.Positive(t, res.Machine.NProc)
			require.Positive(t, res.ExpectedChecks)
			// Generous: a stopped checker skips slots, and a loaded machine
			// may fall behind; the point is that results are counted.
			minShare := 0.8
			if c.workload == "recovery" {
				minShare = 0.3
			}
			assert.GreaterOrEqual(t, float64(res.AchievedChecks), minShare*float64(res.ExpectedChecks), "achieved checks")
			assert.LessOrEqual(t, res.AchievedChecks, res.ExpectedChecks+res.DuplicateSlots, "achieved checks")
			assert.Zero(t, res.LostSlots, "lost slots")
			assert.LessOrEqual(t, res.MaxQueueDepth, int64(2*res.Monitors), "CHECKS depth")
			for _, name := range report.ProcessOrder {
				p, ok := res.Processes[name]
				if assert.True(t, ok, "process %s reported", name) {
					assert.Positive(t, p.CPUSeconds, "CPU of %s", name)
					assert.Positive(t, p.PeakRSSBytes, "peak RSS of %s", name)
				}
			}
			assert.Positive(t, res.OverheadRatio)
			assert.NotEmpty(t, res.Series.T)
			assert.Len(t, res.Series.ChecksPerSecond, len(res.Series.T))
			if c.workload == "recovery" {
				assert.NotNil(t, res.OutageRestartSeconds)
			}
			requireSVG(t, filepath.Join(dir, c.workload+".svg"))
		})
	}
}

// requireSVG checks that path is well-formed XML with an svg root.
func requireSVG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dec := xml.NewDecoder(f)
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "SVG is not well-formed XML")
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	require.Equal(t, "svg", root)
}
