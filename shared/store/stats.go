package store

import (
	"context"
	"fmt"
	"time"
)

// QueueStats are the database's side of the queue's health.
type QueueStats struct {
	ActiveMonitors    int64
	ExpectedPerMinute float64
	StoredLastMinute  float64
	FailedLastHour    int64
	// Scheduling lag (check start minus due time) over the last five
	// minutes of scheduled checks, in seconds.
	LagP50, LagP99 float64
}

// QueueStats reads fleet size, throughput, failures and lag. The due_at
// bounds let PostgreSQL skip old result partitions.
func (s *Store) QueueStats(ctx context.Context) (QueueStats, error) {
	var q QueueStats
	var lag []float64
	err := s.pool.QueryRow(ctx, `
		SELECT
			(SELECT count(*) FROM monitors WHERE enabled),
			-- A monitor created under a minute ago owes only part of a
			-- minute's checks, so a fresh system is not judged behind.
			(SELECT coalesce(sum(60.0 / interval_seconds *
				least(1, extract(epoch FROM now() - created_at) / 60)), 0)::float8
				FROM monitors WHERE enabled),
			(SELECT count(*) FROM check_results
				WHERE stored_at > now() - interval '1 minute' AND due_at > now() - interval '1 day')::float8,
			(SELECT coalesce(sum(slots), 0) FROM skipped_slots WHERE failed AND recorded_at > now() - interval '1 hour'),
			(SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - due_at))
				FROM check_results
				WHERE stored_at > now() - interval '5 minutes' AND due_at > now() - interval '1 day' AND NOT manual)`,
	).Scan(&q.ActiveMonitors, &q.ExpectedPerMinute, &q.StoredLastMinute, &q.FailedLastHour, &lag)
	if err != nil {
		return q, fmt.Errorf("read queue stats: %w", err)
	}
	if len(lag) == 2 {
		q.LagP50, q.LagP99 = lag[0], lag[1]
	}
	return q, nil
}

// ResetLeases makes every monitor with a dispatch in flight due again, so
// the next tick dispatches it anew; for after the queue was flushed.
func (s *Store) ResetLeases(ctx context.Context) (int64, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE monitors SET next_check_at = due_at WHERE attempt > 0 AND next_check_at > due_at`)
	if err != nil {
		return 0, fmt.Errorf("reset leases: %w", err)
	}
	return tag.RowsAffected(), nil
}

// FirstResultSince returns the monitor's first outcome from a check that
// started at or after since, if there is one yet.
func (s *Store) FirstResultSince(ctx context.Context, monitorID int64, since time.Time) (*CheckResult, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT monitor_id, due_at, region, attempt, started_at, checked_at, up, latency_ms, status_code, error, manual
		FROM check_results
		WHERE monitor_id = $1 AND due_at > $2::timestamptz - interval '1 day' AND (started_at >= $2 OR (manual AND due_at = $2))
		ORDER BY started_at LIMIT 1`, monitorID, since)
	if err != nil {
		return nil, fmt.Errorf("read result of monitor %d: %w", monitorID, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	var r CheckResult
	if err := rows.Scan(&r.MonitorID, &r.DueAt, &r.Region, &r.Attempt, &r.StartedAt, &r.CheckedAt,
		&r.Up, &r.LatencyMS, &r.StatusCode, &r.Error, &r.Manual); err != nil {
		return nil, fmt.Errorf("read result of monitor %d: %w", monitorID, err)
	}
	return &r, nil
}

// SkippedSlot is a slot that was not checked, and why.
type SkippedSlot struct {
	MonitorID  int64
	Region     string
	DueAt      time.Time
	Slots      int
	Reason     string
	Failed     bool
	RecordedAt time.Time
}

// ListSkipped returns a monitor's skipped and failed slots, newest first;
// all monitors' when monitorID is 0.
func (s *Store) ListSkipped(ctx context.Context, monitorID int64, onlyFailed bool, limit int) ([]SkippedSlot, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT monitor_id, region, due_at, slots, reason, failed, recorded_at FROM skipped_slots
		WHERE ($1 = 0 OR monitor_id = $1) AND (failed OR NOT $2)
		ORDER BY recorded_at DESC, due_at DESC LIMIT $3`, monitorID, onlyFailed, limit)
	if err != nil {
		return nil, fmt.Errorf("list skipped slots: %w", err)
	}
	defer rows.Close()
	var out []SkippedSlot
	for rows.Next() {
		var k SkippedSlot
		if err := rows.Scan(&k.MonitorID, &k.Region, &k.DueAt, &k.Slots, &k.Reason, &k.Failed, &k.RecordedAt); err != nil {
			return nil, fmt.Errorf("list skipped slots: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
