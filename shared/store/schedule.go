package store

import (
	"context"
	"fmt"
	"math"
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
	// Lane is where the check goes: priority for a failing monitor's
	// re-check or a manual check.
	Lane string
	// Manual marks a check someone asked for.
	Manual bool
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
	WHERE region = $1 AND enabled AND next_check_at <= now() + make_interval(secs => $4::bigint / 1000.0)
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
	-- ANY(ARRAY(…)) makes these primary-key lookups; a plain join with
	-- due is planned as a merge join over the whole monitors table.
	WHERE m.id = ANY(ARRAY(SELECT id FROM due)) AND m.id = due.id
	RETURNING m.id, m.kind, m.target, m.settings, m.timeout_ms, m.interval_seconds, m.due_at, m.attempt,
		m.lane, due.prev_due_at, due.prev_attempt
), skipped AS (
	INSERT INTO skipped_slots (monitor_id, region, due_at, slots, reason, failed)
	SELECT id, $1, prev_due_at,
		round(extract(epoch FROM due_at - prev_due_at) / interval_seconds)::int,
		CASE WHEN prev_attempt > 0 THEN 'no outcome before lease expired' ELSE 'coalesced' END,
		prev_attempt > 0
	FROM claimed WHERE due_at > prev_due_at
	ON CONFLICT (monitor_id, due_at, reason) DO NOTHING
)
SELECT id, kind, target, settings, timeout_ms, due_at, attempt,
	round(extract(epoch FROM due_at - prev_due_at) / interval_seconds)::int, lane
FROM claimed`

// ClaimDue claims up to limit monitors of a region that are due now or
// within lookahead, for dispatch. Claiming ahead lets a checker start each
// check at its due time instead of up to a tick late.
func (s *Store) ClaimDue(ctx context.Context, region string, limit int, minLease, lookahead time.Duration) ([]Claimed, error) {
	rows, err := s.pool.Query(ctx, claimSQL, region, limit, minLease.Milliseconds(), lookahead.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("claim due monitors: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Claimed, error) {
		var c Claimed
		err := row.Scan(&c.ID, &c.Kind, &c.Target, &c.Settings, &c.TimeoutMS, &c.DueAt, &c.Attempt, &c.Coalesced, &c.Lane)
		c.Lease = Lease(minLease, c.TimeoutMS)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim due monitors: %w", err)
	}
	return out, nil
}

// ClaimManual claims up to limit waiting manual checks of a region. DueAt
// of each is when the check was asked for.
func (s *Store) ClaimManual(ctx context.Context, region string, limit int, minLease time.Duration) ([]Claimed, error) {
	rows, err := s.pool.Query(ctx, `
		WITH req AS (
			SELECT id, check_requested_at FROM monitors
			WHERE region = $1 AND check_requested_at IS NOT NULL AND enabled
			ORDER BY check_requested_at
			LIMIT $2
			FOR UPDATE SKIP LOCKED
		)
		UPDATE monitors m SET check_requested_at = NULL
		FROM req WHERE m.id = req.id
		RETURNING m.id, m.kind, m.target, m.settings, m.timeout_ms, req.check_requested_at`, region, limit)
	if err != nil {
		return nil, fmt.Errorf("claim manual checks: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Claimed, error) {
		c := Claimed{Attempt: 1, Lane: queue.LanePriority, Manual: true}
		err := row.Scan(&c.ID, &c.Kind, &c.Target, &c.Settings, &c.TimeoutMS, &c.DueAt)
		c.Lease = Lease(minLease, c.TimeoutMS)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim manual checks: %w", err)
	}
	return out, nil
}

// UnclaimManual puts back manual checks whose message was not stored.
func (s *Store) UnclaimManual(ctx context.Context, claimed []Claimed) error {
	if len(claimed) == 0 {
		return nil
	}
	ids := make([]int64, len(claimed))
	ats := make([]time.Time, len(claimed))
	for i, c := range claimed {
		ids[i], ats[i] = c.ID, c.DueAt
	}
	_, err := s.pool.Exec(ctx, `
		UPDATE monitors m SET check_requested_at = coalesce(m.check_requested_at, u.at)
		FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at)
		WHERE m.id = u.id AND m.id = ANY($1)`, ids, ats)
	if err != nil {
		return fmt.Errorf("put back %d manual checks: %w", len(claimed), err)
	}
	return nil
}

// Failure is a slot that was dispatched but produced no outcome.
type Failure struct {
	MonitorID int64
	Region    string
	DueAt     time.Time
	Reason    string
}

// RecordFailures records failed slots; recording one twice is a no-op.
func (s *Store) RecordFailures(ctx context.Context, failures []Failure) error {
	if len(failures) == 0 {
		return nil
	}
	ids := make([]int64, len(failures))
	regions := make([]string, len(failures))
	dues := make([]time.Time, len(failures))
	reasons := make([]string, len(failures))
	for i, f := range failures {
		ids[i], regions[i], dues[i], reasons[i] = f.MonitorID, f.Region, f.DueAt, f.Reason
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO skipped_slots (monitor_id, region, due_at, reason, failed)
		SELECT id, region, due_at, reason, true
		FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[]) AS f(id, region, due_at, reason)
		ON CONFLICT (monitor_id, due_at, reason) DO NOTHING`, ids, regions, dues, reasons)
	if err != nil {
		return fmt.Errorf("record %d failed slots: %w", len(failures), err)
	}
	return nil
}

// BadMessage is a message that could not be understood.
type BadMessage struct {
	Stream  string
	Subject string
	Seq     uint64
	Reason  string
	Data    []byte
}

// RecordBadMessage keeps a malformed message and why it was refused.
func (s *Store) RecordBadMessage(ctx context.Context, m BadMessage) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO bad_messages (stream, subject, seq, reason, data) VALUES ($1, $2, $3, $4, $5)`,
		m.Stream, m.Subject, int64(min(m.Seq, math.MaxInt64)), m.Reason, m.Data)
	if err != nil {
		return fmt.Errorf("record bad message from %s: %w", m.Stream, err)
	}
	return nil
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
// one transaction and one round trip:
//   - new result rows (a redelivered outcome hits the primary key and is
//     dropped);
//   - each monitor's latest state, from its newest outcome;
//   - its next slot, from its newest scheduled (not manual) outcome: due_at
//     plus the interval, a fixed cadence that the check's duration does not
//     push — or plus the retry interval on the priority lane while failing;
//   - a skip record for outcomes of monitors deleted or paused while their
//     check was in flight.
const writeResultsSQL = `
WITH r AS (
	SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::timestamptz[],
		$6::timestamptz[], $7::bool[], $8::float8[], $9::int[], $10::text[], $11::bool[])
	AS r(monitor_id, region, due_at, attempt, started_at, checked_at, up, latency_ms, status_code, error, manual)
), live AS (
	SELECT r.* FROM r JOIN monitors m ON m.id = r.monitor_id AND m.enabled
), ins AS (
	INSERT INTO check_results (monitor_id, due_at, region, attempt, started_at, checked_at, up, latency_ms,
		status_code, error, manual)
	SELECT monitor_id, due_at, region, attempt, started_at, checked_at, up, latency_ms, nullif(status_code, 0),
		error, manual
	FROM live
	ON CONFLICT (monitor_id, due_at) DO NOTHING
	RETURNING 1
), latest AS (
	SELECT DISTINCT ON (monitor_id) * FROM live ORDER BY monitor_id, due_at DESC
), sched AS (
	SELECT DISTINCT ON (monitor_id) monitor_id, due_at AS sched_due, up AS sched_up
	FROM live WHERE NOT manual ORDER BY monitor_id, due_at DESC
), upd AS (
	UPDATE monitors m SET
		state = CASE WHEN NOT l.newer THEN m.state WHEN l.up THEN 'up' ELSE 'down' END,
		state_changed_at = CASE WHEN NOT l.newer OR m.state = (CASE WHEN l.up THEN 'up' ELSE 'down' END)
			THEN m.state_changed_at ELSE l.checked_at END,
		last_due_at      = CASE WHEN l.newer THEN l.due_at ELSE m.last_due_at END,
		last_checked_at  = CASE WHEN l.newer THEN l.checked_at ELSE m.last_checked_at END,
		last_latency_ms  = CASE WHEN l.newer THEN l.latency_ms ELSE m.last_latency_ms END,
		last_status_code = CASE WHEN l.newer THEN nullif(l.status_code, 0) ELSE m.last_status_code END,
		last_error       = CASE WHEN l.newer THEN nullif(l.error, '') ELSE m.last_error END,
		due_at = CASE WHEN l.advance THEN l.sched_due + make_interval(secs =>
			CASE WHEN l.sched_up THEN m.interval_seconds ELSE coalesce(m.retry_interval_seconds, m.interval_seconds) END)
			ELSE m.due_at END,
		next_check_at = CASE WHEN l.advance THEN l.sched_due + make_interval(secs =>
			CASE WHEN l.sched_up THEN m.interval_seconds ELSE coalesce(m.retry_interval_seconds, m.interval_seconds) END)
			ELSE m.next_check_at END,
		attempt = CASE WHEN l.advance THEN 0 ELSE m.attempt END,
		lane = CASE WHEN NOT l.advance THEN m.lane WHEN l.sched_up THEN 'scheduled' ELSE 'priority' END
	FROM (
		SELECT latest.*, s.sched_due, s.sched_up,
			(m2.last_due_at IS NULL OR latest.due_at >= m2.last_due_at) AS newer,
			coalesce(s.sched_due >= m2.due_at, false) AS advance
		FROM latest JOIN monitors m2 ON m2.id = latest.monitor_id
		LEFT JOIN sched s ON s.monitor_id = latest.monitor_id
	) l
	WHERE m.id = l.monitor_id AND (l.newer OR l.advance)
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
		manual     = make([]bool, n)
	)
	for i, r := range results {
		ids[i], regions[i], dues[i], attempts[i] = r.MonitorID, r.Region, r.DueAt, clampInt32(r.Attempt)
		starts[i], checks[i], ups[i], latencies[i] = r.StartedAt, r.FinishedAt, r.Up, r.LatencyMS
		statusCode[i], errs[i], manual[i] = clampInt32(r.StatusCode), r.Error, r.Manual
	}
	var stored, live, discarded int
	err := s.pool.QueryRow(ctx, writeResultsSQL, ids, regions, dues, attempts, starts, checks, ups,
		latencies, statusCode, errs, manual).Scan(&stored, &live, &discarded)
	if err != nil {
		return WriteStats{}, fmt.Errorf("write %d results: %w", n, err)
	}
	return WriteStats{Stored: stored, Duplicates: live - stored, Discarded: discarded}, nil
}

// clampInt32 narrows a count from a message to a database integer; a value
// out of range can only come from a corrupt message.
func clampInt32(n int) int32 {
	return int32(max(min(n, math.MaxInt32), math.MinInt32))
}
