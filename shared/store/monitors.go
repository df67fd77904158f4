package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"upwatch.dev/shared/monitor"
)

// ErrNotFound means no monitor has that id or name.
var ErrNotFound = errors.New("monitor not found")

// ErrNameTaken means another monitor already has that name.
var ErrNameTaken = errors.New("a monitor with that name already exists")

// Monitor is a stored monitor with its schedule and latest state.
type Monitor struct {
	ID int64
	monitor.Spec
	CreatedAt   time.Time
	UpdatedAt   time.Time
	DueAt       time.Time
	NextCheckAt time.Time
	Attempt     int
	// Lane is the lane of the next dispatch: priority while failing.
	Lane             string
	CheckRequestedAt *time.Time
	State            string
	StateChangedAt   *time.Time
	LastDueAt        *time.Time
	LastCheckedAt    *time.Time
	LastLatencyMS    *float64
	LastStatusCode   *int
	LastError        *string
}

const monitorColumns = `id, name, kind, target, settings, region, interval_seconds, timeout_ms, enabled,
	created_at, updated_at, due_at, next_check_at, attempt, state, state_changed_at,
	last_due_at, last_checked_at, last_latency_ms, last_status_code, last_error,
	retry_interval_seconds, lane, check_requested_at`

func scanMonitor(row pgx.Row) (Monitor, error) {
	var m Monitor
	var intervalSec, timeoutMS int64
	var retrySec *int64
	err := row.Scan(&m.ID, &m.Name, &m.Kind, &m.Target, &m.Settings, &m.Region, &intervalSec, &timeoutMS, &m.Enabled,
		&m.CreatedAt, &m.UpdatedAt, &m.DueAt, &m.NextCheckAt, &m.Attempt, &m.State, &m.StateChangedAt,
		&m.LastDueAt, &m.LastCheckedAt, &m.LastLatencyMS, &m.LastStatusCode, &m.LastError,
		&retrySec, &m.Lane, &m.CheckRequestedAt)
	m.Interval = time.Duration(intervalSec) * time.Second
	if retrySec != nil {
		m.RetryInterval = time.Duration(*retrySec) * time.Second
	}
	m.Timeout = time.Duration(timeoutMS) * time.Millisecond
	return m, err
}

func nameConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "monitors_name_key"
}

// CreateMonitor stores a new monitor, due at once. The spec must already be
// normalized.
func (s *Store) CreateMonitor(ctx context.Context, spec monitor.Spec) (Monitor, error) {
	row := s.pool.QueryRow(ctx, `
		INSERT INTO monitors (name, kind, target, settings, region, interval_seconds, timeout_ms, enabled,
			retry_interval_seconds, due_at, next_check_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now())
		RETURNING `+monitorColumns,
		spec.Name, spec.Kind, spec.Target, spec.Settings, spec.Region,
		int64(spec.Interval/time.Second), spec.Timeout.Milliseconds(), spec.Enabled, retrySeconds(spec))
	m, err := scanMonitor(row)
	if nameConflict(err) {
		return Monitor{}, fmt.Errorf("create monitor %q: %w", spec.Name, ErrNameTaken)
	}
	if err != nil {
		return Monitor{}, fmt.Errorf("create monitor %q: %w", spec.Name, err)
	}
	return m, nil
}

// UpsertMonitor creates the monitor or, when one has the same name, updates
// it to match the spec. It reports whether it created it.
func (s *Store) UpsertMonitor(ctx context.Context, spec monitor.Spec) (Monitor, bool, error) {
	var created bool
	var m Monitor
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, `SELECT id FROM monitors WHERE name = $1 FOR UPDATE`, spec.Name).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			created = true
			m, err = scanMonitor(tx.QueryRow(ctx, `
				INSERT INTO monitors (name, kind, target, settings, region, interval_seconds, timeout_ms, enabled,
					retry_interval_seconds, due_at, next_check_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), now())
				RETURNING `+monitorColumns,
				spec.Name, spec.Kind, spec.Target, spec.Settings, spec.Region,
				int64(spec.Interval/time.Second), spec.Timeout.Milliseconds(), spec.Enabled, retrySeconds(spec)))
			return err
		}
		if err != nil {
			return err
		}
		m, err = updateMonitor(ctx, tx, id, spec)
		return err
	})
	if err != nil {
		return Monitor{}, false, fmt.Errorf("upsert monitor %q: %w", spec.Name, err)
	}
	return m, created, nil
}

// updateMonitor writes a spec over a monitor. Turning a monitor back on makes
// it due at once: the slots it missed while paused were never owed.
func updateMonitor(ctx context.Context, tx pgx.Tx, id int64, spec monitor.Spec) (Monitor, error) {
	return scanMonitor(tx.QueryRow(ctx, `
		UPDATE monitors SET name = $2, kind = $3, target = $4, settings = $5, region = $6,
			interval_seconds = $7, timeout_ms = $8, enabled = $9, retry_interval_seconds = $10, updated_at = now(),
			due_at        = CASE WHEN $9 AND NOT enabled THEN now() ELSE due_at END,
			next_check_at = CASE WHEN $9 AND NOT enabled THEN now() ELSE next_check_at END,
			attempt       = CASE WHEN $9 AND NOT enabled THEN 0 ELSE attempt END,
			check_requested_at = CASE WHEN $9 THEN check_requested_at END
		WHERE id = $1
		RETURNING `+monitorColumns,
		id, spec.Name, spec.Kind, spec.Target, spec.Settings, spec.Region,
		int64(spec.Interval/time.Second), spec.Timeout.Milliseconds(), spec.Enabled, retrySeconds(spec)))
}

func retrySeconds(spec monitor.Spec) *int64 {
	if spec.RetryInterval <= 0 {
		return nil
	}
	s := int64(spec.RetryInterval / time.Second)
	return &s
}

// ErrPaused means the monitor is paused, so it cannot be checked.
var ErrPaused = errors.New("monitor is paused")

// RequestCheck asks for a manual check of a monitor. The ticker dispatches
// it on the priority lane at its next tick. It returns when the request was
// made (an earlier request still waiting is kept).
func (s *Store) RequestCheck(ctx context.Context, id int64) (time.Time, error) {
	var at *time.Time
	var enabled bool
	err := s.pool.QueryRow(ctx, `
		UPDATE monitors SET check_requested_at = CASE WHEN enabled THEN coalesce(check_requested_at, now()) END
		WHERE id = $1 RETURNING check_requested_at, enabled`, id).Scan(&at, &enabled)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return time.Time{}, fmt.Errorf("request check of monitor %d: %w", id, ErrNotFound)
	case err != nil:
		return time.Time{}, fmt.Errorf("request check of monitor %d: %w", id, err)
	case !enabled || at == nil:
		return time.Time{}, fmt.Errorf("request check of monitor %d: %w", id, ErrPaused)
	}
	return *at, nil
}

// UpdateMonitor loads a monitor, lets change edit its spec and stores the
// result, all in one transaction so concurrent edits do not interleave. A
// change that returns an error leaves the monitor as it was.
func (s *Store) UpdateMonitor(ctx context.Context, id int64, change func(*monitor.Spec) error) (Monitor, error) {
	var m Monitor
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		cur, err := scanMonitor(tx.QueryRow(ctx, `SELECT `+monitorColumns+` FROM monitors WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		spec := cur.Spec
		if err := change(&spec); err != nil {
			return err
		}
		m, err = updateMonitor(ctx, tx, id, spec)
		return err
	})
	if nameConflict(err) {
		return Monitor{}, fmt.Errorf("update monitor %d: %w", id, ErrNameTaken)
	}
	if err != nil {
		return Monitor{}, fmt.Errorf("update monitor %d: %w", id, err)
	}
	return m, nil
}

// GetMonitor loads one monitor.
func (s *Store) GetMonitor(ctx context.Context, id int64) (Monitor, error) {
	m, err := scanMonitor(s.pool.QueryRow(ctx, `SELECT `+monitorColumns+` FROM monitors WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Monitor{}, fmt.Errorf("get monitor %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Monitor{}, fmt.Errorf("get monitor %d: %w", id, err)
	}
	return m, nil
}

// GetMonitorByName loads one monitor by its name.
func (s *Store) GetMonitorByName(ctx context.Context, name string) (Monitor, error) {
	m, err := scanMonitor(s.pool.QueryRow(ctx, `SELECT `+monitorColumns+` FROM monitors WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Monitor{}, fmt.Errorf("get monitor %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Monitor{}, fmt.Errorf("get monitor %q: %w", name, err)
	}
	return m, nil
}

// ListMonitors returns every monitor, by id.
func (s *Store) ListMonitors(ctx context.Context) ([]Monitor, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+monitorColumns+` FROM monitors ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list monitors: %w", err)
	}
	defer rows.Close()
	var out []Monitor
	for rows.Next() {
		m, err := scanMonitor(rows)
		if err != nil {
			return nil, fmt.Errorf("list monitors: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list monitors: %w", err)
	}
	return out, nil
}

// DeleteMonitor removes a monitor and its history.
func (s *Store) DeleteMonitor(ctx context.Context, id int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM monitors WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		if _, err := tx.Exec(ctx, `DELETE FROM check_results WHERE monitor_id = $1`, id); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete monitor %d: %w", id, err)
	}
	return nil
}

// RecordSkipped records slots that were due but will not be checked.
func (s *Store) RecordSkipped(ctx context.Context, monitorID int64, region string, dueAt time.Time, slots int, reason string) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO skipped_slots (monitor_id, region, due_at, slots, reason) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (monitor_id, due_at, reason) DO NOTHING`, monitorID, region, dueAt, slots, reason)
	if err != nil {
		return fmt.Errorf("record skipped slot of monitor %d: %w", monitorID, err)
	}
	return nil
}

// CheckResult is one stored outcome.
type CheckResult struct {
	MonitorID  int64
	DueAt      time.Time
	Region     string
	Attempt    int
	StartedAt  time.Time
	CheckedAt  time.Time
	Up         bool
	LatencyMS  float64
	StatusCode *int
	Error      string
	Manual     bool
}

// ListResults returns a monitor's newest outcomes first.
func (s *Store) ListResults(ctx context.Context, monitorID int64, limit int) ([]CheckResult, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT monitor_id, due_at, region, attempt, started_at, checked_at, up, latency_ms, status_code, error, manual
		FROM check_results WHERE monitor_id = $1 ORDER BY due_at DESC LIMIT $2`, monitorID, limit)
	if err != nil {
		return nil, fmt.Errorf("list results of monitor %d: %w", monitorID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (CheckResult, error) {
		var r CheckResult
		err := row.Scan(&r.MonitorID, &r.DueAt, &r.Region, &r.Attempt, &r.StartedAt, &r.CheckedAt,
			&r.Up, &r.LatencyMS, &r.StatusCode, &r.Error, &r.Manual)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list results of monitor %d: %w", monitorID, err)
	}
	return out, nil
}
