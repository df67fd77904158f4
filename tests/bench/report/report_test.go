package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sampleResult() *Result {
	lag := 0.4
	depth := 120.0
	return &Result{
		Workload: "steady", Monitors: 1000, IntervalSeconds: 10, DurationSeconds: 3, WarmupSeconds: 2,
		ExpectedChecks: 300, AchievedChecks: 299, MissedSlots: 1, SkippedSlots: 1,
		Processes: map[string]Process{
			NATS:     {CPUSeconds: 1.5, PeakRSSBytes: 30 << 20},
			Checker:  {CPUSeconds: 2, PeakRSSBytes: 20 << 20},
			"custom": {CPUSeconds: 0.1},
		},
		Series: Series{
			T:               []int64{-2, -1, 0, 1, 2},
			ChecksPerSecond: []float64{0, 90, 100, 110, 100},
			// A second with no due checks and one with no depth reading
			// break the lines instead of drawing zeros.
			LagP99Seconds: []*float64{nil, &lag, &lag, nil, &lag},
			ChecksDepth:   []*float64{&depth, nil, &depth, &depth, &depth},
			CPUPercent:    map[string][]float64{NATS: {0, 10, 20, 15, 12}, Checker: {0, 40, 50, 45, 44}},
		},
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	for name, r := range map[string]*Result{"samples": sampleResult(), "empty": {Workload: "burst"}} {
		var buf bytes.Buffer
		require.NoError(t, SVG(&buf, r), name)
		dec := xml.NewDecoder(&buf)
		elements := map[string]int{}
		for {
			tok, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, name)
			if se, ok := tok.(xml.StartElement); ok {
				elements[se.Name.Local]++
			}
		}
		require.Equal(t, 1, elements["svg"], name)
	}
	var buf bytes.Buffer
	require.NoError(t, SVG(&buf, sampleResult()))
	for _, want := range []string{"checks stored per second", "scheduling lag p99", "CHECKS stream depth", "CPU per process", NATS, Checker} {
		assert.Contains(t, buf.String(), want)
	}
	assert.NotContains(t, buf.String(), "NaN")
}

func TestWriteAndTable(t *testing.T) {
	dir := t.TempDir()
	r := sampleResult()
	r.LagP99Seconds = Finite(math.NaN())
	jsonPath, svgPath, err := Write(filepath.Join(dir, "out"), r)
	require.NoError(t, err)
	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var back Result
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, r.Processes, back.Processes)
	assert.FileExists(t, svgPath)

	var tbl strings.Builder
	require.NoError(t, Table(&tbl, r))
	out := tbl.String()
	assert.Contains(t, out, "300 / 299")
	// Known processes first, in their order, then the rest.
	assert.Less(t, strings.Index(out, NATS), strings.Index(out, Checker))
	assert.Less(t, strings.Index(out, Checker), strings.Index(out, "custom"))
}

func TestNiceStep(t *testing.T) {
	for in, want := range map[float64]float64{0.3: 0.5, 1: 1, 1.1: 2, 3: 5, 7: 10, 240: 500, 0: 1} {
		assert.InDelta(t, want, niceStep(in), 1e-9, "niceStep(%v)", in)
	}
}
