package health

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEvaluate(t *testing.T) {
	t.Parallel()
	// A healthy fleet of 1,000 monitors at one check a minute each.
	healthy := func() Report {
		return Report{ActiveMonitors: 1000, ExpectedPerMinute: 1000, ProcessedPerMinute: 1000,
			Depth: 20, Pending: 5, InFlight: 15, StreamCap: 10_000, OldestPendingSeconds: 0.5,
			LagP50Seconds: 0.01, LagP99Seconds: 0.2}
	}
	cases := []struct {
		name   string
		change func(*Report)
		want   string
		reason string
	}{
		{"Healthy", func(*Report) {}, OK, ""},
		{"PendingPastWarning", func(r *Report) { r.Pending = 150 }, Warning, "messages waiting"},
		{"PendingPastCritical", func(r *Report) { r.Pending = 600 }, Critical, "messages waiting"},
		{"SmallFleetFloor", func(r *Report) {
			r.ActiveMonitors, r.ExpectedPerMinute, r.ProcessedPerMinute, r.Pending = 10, 10, 10, 50
		}, OK, ""},
		{"StreamNearlyFull", func(r *Report) { r.Depth = 9500 }, Critical, "cap of 10000"},
		{"OldMessage", func(r *Report) { r.OldestPendingSeconds = 45 }, Warning, "oldest message"},
		{"VeryOldMessage", func(r *Report) { r.OldestPendingSeconds = 300 }, Critical, "oldest message"},
		{"SlowProcessing", func(r *Report) { r.ProcessedPerMinute = 700 }, Warning, "checks stored"},
		{"StalledProcessing", func(r *Report) { r.ProcessedPerMinute = 100 }, Critical, "checks stored"},
		{"OneFailure", func(r *Report) { r.FailedLastHour = 1 }, OK, ""},
		{"SomeFailures", func(r *Report) { r.FailedLastHour = 60 }, Warning, "failed slots"},
		{"ManyFailures", func(r *Report) { r.FailedLastHour = 601 }, Critical, "failed slots"},
		{"Growing", func(r *Report) { r.GrowthPerMinute = 100 }, Warning, "growing"},
		{"GrowingFast", func(r *Report) { r.GrowthPerMinute = 300 }, Critical, "growing"},
		{"Shrinking", func(r *Report) { r.GrowthPerMinute = -500 }, OK, ""},
		{"LateChecks", func(r *Report) { r.LagP99Seconds = 3 }, Warning, "lag"},
		{"VeryLateChecks", func(r *Report) { r.LagP99Seconds = 30 }, Critical, "lag"},
		{"WorstWins", func(r *Report) { r.LagP99Seconds, r.Depth = 3, 9999 }, Critical, "lag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := healthy()
			c.change(&r)
			r.Evaluate(DefaultThresholds())
			require.Equal(t, c.want, r.Status, r.Reasons)
			if c.reason == "" {
				require.Empty(t, r.Reasons)
			} else {
				require.Contains(t, strings.Join(r.Reasons, "\n"), c.reason)
			}
			require.Equal(t, map[string]int{OK: 0, Warning: 1, Critical: 2}[c.want], ExitCode(r.Status))
		})
	}
	require.Equal(t, 3, ExitCode(Unknown))
}
