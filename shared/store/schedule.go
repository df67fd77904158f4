package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/queue"
)

// Claimed is a monitor the ticker claimed for dispatch.
type Claimed struct {
	ID        int64
	Kind      string
	Target    string
	Settings  monitor.Settings
	TimeoutMS int64
	DueAt     time.Time
	Attempt   int
	// Lease is how long the claim holds: the ticker will not claim the
	// monitor again before it runs out, unless an outcome arrives first.
	Lease time.Duration
	// Coalesced counts earlier slots folded into this one because they were
	// missed (recorded in skipped_slots).
	Coalesced int
}

// Lease is how long a dispatch may stay without an outcome before the
// ticker dispatches its slot again: room for the check, a retry and the
// trip through the queues.
func Lease(minLease time.Duration, timeoutMS int64) time.Duration {
	return max(minLease, 2*time.Duration(timeoutMS)*time.Millisecond+5*time.Second)
}

// claimSQL claims due monitors in one statement. Row locks with SKIP LOCKED
// let several tickers claim side by side without claiming the same row;
// moving next_check_at to the end of the lease takes the row out of the
// due index until an outcome or the lease's end brings it back.
//
// A monitor more than one interval behind (the system was down, or an
// earlier dispatch got no outcome) is moved to its latest slot on the same
// cadence: missed slots are coalesced into one check, not replayed, and the
// ones passed over are recorded as skipped in the same statement.
//
// The lease is a whole number of milliseconds: 2 × timeout + 5 s, at least
// $3 (the same formula as Lease).
const claimSQL = `
WITH due AS (
	SELECT id, due_at AS prev_due_at, attempt AS prev_attempt
	FROM monitors
	WHERE region = $1 AND enabled AND next_check_at <= now()
	ORDER BY next_check_at
	LIMIT $2
	FOR UPDATE SKIP LOCKED
), claimed AS (
	UPDATE monitors m SET
		due_at = m.due_at + make_interval(secs => m.interval_seconds *
			floor(greatest(0, extract(epoch FROM now() - m.due_at)) / m.interval_seconds)::float8),
		attempt = CASE WHEN now() - m.due_at >= make_interval(secs => m.interval_seconds)
			THEN 1 ELSE m.attempt + 1 END,
		next_check_at = now() + make_interval(secs => greatest($3::bigint, 2 * m.timeout_ms + 5000) / 1000.0)
	FROM due
	WHERE m.id = due.id
	RETURNING m.id, m.kind, m.target, m.settings, m.timeout_ms, m.interval_seconds, m.due_at, m.attempt,
		due.prev_due_at, due.prev_attempt
), skipped AS (
	INSERT INTO skipped_slots (monitor_id, region, due_at, slots, reason)
	SELECT id, $1, prev_due_at,
		round(extract(epoch FROM due_at - prev_due_at) / interval_seconds)::int,
		CASE WHEN prev_attempt > 0 THEN 'no outcome before lease expired' ELSE 'coalesced' END
	FROM claimed WHERE due_at > prev_due_at
	ON CONFLICT (monitor_id, due_at, reason) DO NOTHING
)
SELECT id, kind, target, settings, timeout_ms, due_at, attempt,
	round(extract(epoch FROM due_at - prev_due_at) / interval_seconds)::int
FROM claimed`

// ClaimDue claims up to limit due monitors of a region for dispatch.
func (s *Store) ClaimDue(ctx context.Context, region string, limit int, minLease time.Duration) ([]Claimed, error) {
	rows, err := s.pool.Query(ctx, claimSQL, region, limit, minLease.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("claim due monitors: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Claimed, error) {
		var c Claimed
		err := row.Scan(&c.ID, &c.Kind, &c.Target, &c.Settings, &c.TimeoutMS, &c.DueAt, &c.Attempt, &c.Coalesced)
		c.Lease = Lease(minLease, c.TimeoutMS)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim due monitors: %w", err)
	}
	return out, nil
}

// Unclaim hands claimed monitors back so the next tick claims them again,
// for dispatches that were never stored (the stream was full or NATS was
// unreachable).
func (s *Store) Unclaim(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `
		UPDATE monitors SET next_check_at = due_at, attempt = greatest(attempt - 1, 0)
		WHERE id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("unclaim %d monitors: %w", len(ids), err)
	}
	return nil
}

// WriteStats counts what one WriteResults did.
type WriteStats struct {
	// Stored is the number of new result rows.
	Stored int
	// Duplicates were outcomes already stored (a redelivery).
	Duplicates int
	// Discarded were outcomes of deleted or paused monitors, recorded as
	// skipped instead.
	Discarded int
}

// writeResultsSQL stores a batch of outcomes in one statement, and so in
// one transaction and one round trip: new result rows (a redelivered outcome
// hits the primary key and is dropped), each monitor's latest state and its
// next slot (due_at + interval: a fixed cadence that the check's duration
// does not push), and a skip record for outcomes of monitors that were
// deleted or paused while their check was in flight.
const writeResultsSQL = `
WITH r AS (
	SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::timestamptz[],
		$6::timestamptz[], $7::bool[], $8::float8[], $9::int[], $10::text[])
	AS r(monitor_id, region, due_at, attempt, started_at, checked_at, up, latency_ms, status_code, error)
), live AS (
	SELECT r.* FROM r JOIN monitors m ON m.id = r.monitor_id AND m.enabled
), ins AS (
	INSERT INTO check_results (monitor_id, due_at, region, attempt, started_at, checked_at, up, latency_ms, status_code, error)
	SELECT monitor_id, due_at, region, attempt, started_at, checked_at, up, latency_ms, nullif(status_code, 0), error
	FROM live
	ON CONFLICT (monitor_id, due_at) DO NOTHING
	RETURNING 1
), latest AS (
	SELECT DISTINCT ON (monitor_id) * FROM live ORDER BY monitor_id, due_at DESC
), upd AS (
	UPDATE monitors m SET
		state = CASE WHEN l.up THEN 'up' ELSE 'down' END,
		state_changed_at = CASE WHEN m.state = (CASE WHEN l.up THEN 'up' ELSE 'down' END)
			THEN m.state_changed_at ELSE l.checked_at END,
		last_due_at = l.due_at,
		last_checked_at = l.checked_at,
		last_latency_ms = l.latency_ms,
		last_status_code = nullif(l.status_code, 0),
		last_error = nullif(l.error, ''),
		due_at = CASE WHEN l.due_at >= m.due_at
			THEN l.due_at + make_interval(secs => m.interval_seconds) ELSE m.due_at END,
		next_check_at = CASE WHEN l.due_at >= m.due_at
			THEN l.due_at + make_interval(secs => m.interval_seconds) ELSE m.next_check_at END,
		attempt = CASE WHEN l.due_at >= m.due_at THEN 0 ELSE m.attempt END
	FROM latest l
	WHERE m.id = l.monitor_id AND (m.last_due_at IS NULL OR l.due_at >= m.last_due_at)
	RETURNING 1
), skip AS (
	INSERT INTO skipped_slots (monitor_id, region, due_at, reason)
	SELECT r.monitor_id, r.region, r.due_at, CASE WHEN m.id IS NULL THEN 'monitor deleted' ELSE 'monitor paused' END
	FROM r LEFT JOIN monitors m ON m.id = r.monitor_id
	WHERE m.id IS NULL OR NOT m.enabled
	ON CONFLICT (monitor_id, due_at, reason) DO NOTHING
	RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM live), (SELECT count(*) FROM r) - (SELECT count(*) FROM live)`

// WriteResults stores a batch of outcomes.
func (s *Store) WriteResults(ctx context.Context, results []queue.Result) (WriteStats, error) {
	n := len(results)
	if n == 0 {
		return WriteStats{}, nil
	}
	var (
		ids        = make([]int64, n)
		regions    = make([]string, n)
		dues       = make([]time.Time, n)
		attempts   = make([]int32, n)
		starts     = make([]time.Time, n)
		checks     = make([]time.Time, n)
		ups        = make([]bool, n)
		latencies  = make([]float64, n)
		statusCode = make([]int32, n)
		errs       = make([]string, n)
	)
	for i, r := range results {
		ids[i], regions[i], dues[i], attempts[i] = r.MonitorID, r.Region, r.DueAt, int32(r.Attempt)
		starts[i], checks[i], ups[i], latencies[i] = r.StartedAt, r.FinishedAt, r.Up, r.LatencyMS
		statusCode[i], errs[i] = int32(r.StatusCode), r.Error
	}
	var stored, live, discarded int
	err := s.pool.QueryRow(ctx, writeResultsSQL, ids, regions, dues, attempts, starts, checks, ups,
		latencies, statusCode, errs).Scan(&stored, &live, &discarded)
	if err != nil {
		return WriteStats{}, fmt.Errorf("write %d results: %w", n, err)
	}
	return WriteStats{Stored: stored, Duplicates: live - stored, Discarded: discarded}, nil
}
