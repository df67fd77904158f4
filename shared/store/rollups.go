package store

import (
	"context"
	"fmt"
	"time"
)

// RollUp aggregates the hours of check results that ended before now into
// check_rollups_hourly. It recomputes each hour whole (an upsert, so running
// it again is harmless) and starts a few hours back, so outcomes that were
// stored late — after a results outage — are counted too. It returns the
// number of hours it rolled up.
func (s *Store) RollUp(ctx context.Context, now time.Time, lookback time.Duration) (int, error) {
	end := now.UTC().Truncate(time.Hour)
	start := end.Add(-lookback)
	var hours int
	err := s.pool.QueryRow(ctx, `
		WITH agg AS (
			INSERT INTO check_rollups_hourly AS r (monitor_id, hour, checks, up_checks, latency_ms_sum, latency_ms_max)
			SELECT monitor_id, date_trunc('hour', due_at), count(*), count(*) FILTER (WHERE up),
				sum(latency_ms), max(latency_ms)
			FROM check_results
			WHERE due_at >= $1 AND due_at < $2 AND NOT manual
			GROUP BY 1, 2
			ON CONFLICT (monitor_id, hour) DO UPDATE SET checks = excluded.checks, up_checks = excluded.up_checks,
				latency_ms_sum = excluded.latency_ms_sum, latency_ms_max = excluded.latency_ms_max
			RETURNING hour
		), progress AS (
			INSERT INTO rollup_progress (name, rolled_to) VALUES ('hourly', $2)
			ON CONFLICT (name) DO UPDATE SET rolled_to = greatest(rollup_progress.rolled_to, excluded.rolled_to)
		)
		SELECT count(DISTINCT hour) FROM agg`, start, end).Scan(&hours)
	if err != nil {
		return 0, fmt.Errorf("roll up results from %s to %s: %w", start.Format(time.RFC3339), end.Format(time.RFC3339), err)
	}
	return hours, nil
}

// Uptime summarizes a monitor over a window.
type Uptime struct {
	Checks       int64
	UpChecks     int64
	Percent      float64 // of checks that were up; 0 with no checks
	AvgLatencyMS float64
	MaxLatencyMS float64
}

// Uptime summarizes a monitor's checks since since: whole hours come from
// the rollups, and only the hours not rolled up yet from raw rows (at most
// a few hours of one monitor, read through its primary key).
func (s *Store) Uptime(ctx context.Context, monitorID int64, since time.Time) (Uptime, error) {
	var u Uptime
	var latencySum float64
	err := s.pool.QueryRow(ctx, `
		WITH progress AS (
			SELECT coalesce((SELECT rolled_to FROM rollup_progress WHERE name = 'hourly'), '-infinity'::timestamptz) AS rolled_to
		), parts AS (
			SELECT sum(checks) AS checks, sum(up_checks) AS up_checks, sum(latency_ms_sum) AS lat_sum, max(latency_ms_max) AS lat_max
			FROM check_rollups_hourly, progress
			WHERE monitor_id = $1 AND hour >= date_trunc('hour', $2::timestamptz) AND hour < progress.rolled_to
			UNION ALL
			SELECT count(*), count(*) FILTER (WHERE up), sum(latency_ms), max(latency_ms)
			FROM check_results, progress
			WHERE monitor_id = $1 AND due_at >= greatest(date_trunc('hour', $2::timestamptz), progress.rolled_to) AND NOT manual
		)
		SELECT coalesce(sum(checks), 0), coalesce(sum(up_checks), 0), coalesce(sum(lat_sum), 0), coalesce(max(lat_max), 0)
		FROM parts`, monitorID, since).Scan(&u.Checks, &u.UpChecks, &latencySum, &u.MaxLatencyMS)
	if err != nil {
		return u, fmt.Errorf("uptime of monitor %d: %w", monitorID, err)
	}
	if u.Checks > 0 {
		u.Percent = 100 * float64(u.UpChecks) / float64(u.Checks)
		u.AvgLatencyMS = latencySum / float64(u.Checks)
	}
	return u, nil
}
