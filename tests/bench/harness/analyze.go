package harness

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"upwatch.dev/tests/bench/account"
	"upwatch.dev/tests/bench/fleet"
	"upwatch.dev/tests/bench/report"
)

// analyze reads the stored outcomes and skip records and accounts for the
// slots of the window.
func (r *runner) analyze(ctx context.Context, tl timeline, hits []uint32) (*report.Result, error) {
	cfg := r.cfg
	res := &report.Result{
		Workload:        cfg.Workload,
		Monitors:        cfg.Monitors,
		IntervalSeconds: cfg.Interval.Seconds(),
		DurationSeconds: cfg.Duration.Seconds(),
		WarmupSeconds:   cfg.Warmup.Seconds(),
		OutageSeconds:   cfg.Outage.Seconds(),
		Concurrency:     cfg.Concurrency,
		Machine:         machine(),
		Date:            time.Now().UTC().Format(time.RFC3339),
		WindowStart:     tl.w0.UTC().Format(time.RFC3339),
		WindowEnd:       tl.w1.UTC().Format(time.RFC3339),
		Processes:       map[string]report.Process{},
	}
	for _, a := range [][]string{
		prefixed("--ticker-args", cfg.TickerArgs), prefixed("--checker-args", cfg.CheckerArgs), prefixed("--results-args", cfg.ResultsArgs),
	} {
		res.ServiceArgs = append(res.ServiceArgs, a...)
	}

	// Every stored outcome of the run, and every skip record.
	rows := map[int64][]time.Time{}
	perMonitor := map[int64]int{}
	q, err := r.pool.Query(ctx, `SELECT monitor_id, due_at FROM check_results WHERE NOT manual`)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	for q.Next() {
		var id int64
		var due time.Time
		if err := q.Scan(&id, &due); err != nil {
			q.Close()
			return nil, fmt.Errorf("read results: %w", err)
		}
		rows[id] = append(rows[id], due)
		perMonitor[id]++
	}
	q.Close()
	if err := q.Err(); err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	skips := map[int64][]account.Skip{}
	q, err = r.pool.Query(ctx, `SELECT monitor_id, due_at, slots FROM skipped_slots`)
	if err != nil {
		return nil, fmt.Errorf("read skipped slots: %w", err)
	}
	for q.Next() {
		var s account.Skip
		if err := q.Scan(&s.MonitorID, &s.DueAt, &s.Slots); err != nil {
			q.Close()
			return nil, fmt.Errorf("read skipped slots: %w", err)
		}
		skips[s.MonitorID] = append(skips[s.MonitorID], s)
	}
	q.Close()
	if err := q.Err(); err != nil {
		return nil, fmt.Errorf("read skipped slots: %w", err)
	}

	// The monitors' cadences, as created (first slot) and as stored (interval).
	var monitors []account.Monitor
	q, err = r.pool.Query(ctx, `SELECT id, interval_seconds FROM monitors ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read monitors: %w", err)
	}
	n := int64(cfg.Monitors)
	for q.Next() {
		var m account.Monitor
		var iv int32
		if err := q.Scan(&m.ID, &iv); err != nil {
			q.Close()
			return nil, fmt.Errorf("read monitors: %w", err)
		}
		m.Interval = time.Duration(iv) * time.Second
		if cfg.Workload == "burst" {
			m.First = tl.w0
		} else {
			m.First = tl.start.Add(time.Duration((m.ID-1)*cfg.Interval.Microseconds()/n) * time.Microsecond)
		}
		monitors = append(monitors, m)
	}
	q.Close()
	if err := q.Err(); err != nil {
		return nil, fmt.Errorf("read monitors: %w", err)
	}

	c := account.Count(monitors, rows, skips, tl.w0, tl.w1)
	res.ExpectedChecks = c.Expected
	res.AchievedChecks = c.Achieved
	res.MissedSlots = c.Missed
	res.SkippedSlots = c.Skipped
	res.LostSlots = c.Lost
	res.OffCadenceRows = c.OffCadence
	res.DuplicateHits = account.Duplicates(hits, perMonitor)
	res.DuplicateSlots = res.DuplicateHits + res.OffCadenceRows

	// Lag over the window's slots, as PostgreSQL computes percentiles.
	lag, err := r.percentiles(ctx, `started_at - due_at`, tl, nil, 0.5, 0.99, 0.999)
	if err != nil {
		return nil, err
	}
	res.LagP50Seconds, res.LagP99Seconds, res.LagP999Seconds = lag[0], lag[1], lag[2]
	d2s, err := r.percentiles(ctx, `stored_at - due_at`, tl, nil, 0.99)
	if err != nil {
		return nil, err
	}
	res.DueToStoredP99Seconds = d2s[0]
	var storedInWindow int64
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM check_results WHERE stored_at >= $1 AND stored_at < $2`,
		tl.w0, tl.w1).Scan(&storedInWindow); err != nil {
		return nil, fmt.Errorf("count rows stored in the window: %w", err)
	}
	res.RowsPerSecond = float64(storedInWindow) / tl.w1.Sub(tl.w0).Seconds()
	res.MaxQueueDepth = r.maxDepth()

	stored, lagBySecond, err := r.perSecond(ctx)
	if err != nil {
		return nil, err
	}
	res.Series = r.series(tl, stored, lagBySecond)

	switch cfg.Workload {
	case "burst":
		var last *time.Time
		if err := r.pool.QueryRow(ctx, `SELECT max(stored_at) FROM check_results WHERE due_at = $1`, tl.w0).Scan(&last); err != nil {
			return nil, fmt.Errorf("burst backlog: %w", err)
		}
		if last != nil {
			v := last.Sub(tl.w0).Seconds()
			res.BacklogClearedSeconds = &v
		}
	case "failing":
		var healthy []int64
		for id := int64(1); id <= n; id++ {
			if b := fleet.Of(cfg.Workload, id); b == fleet.OK || b == fleet.Slow {
				healthy = append(healthy, id)
			}
		}
		h, err := r.percentiles(ctx, `started_at - due_at`, tl, healthy, 0.5, 0.99)
		if err != nil {
			return nil, err
		}
		res.HealthyLagP50Seconds, res.HealthyLagP99Seconds = &h[0], &h[1]
	case "recovery":
		drainedAfter, pre := backlogDrained(res.Series, tl)
		res.PreOutageQueueDepth = &pre
		restart := tl.restartAt.Sub(tl.w0).Seconds()
		res.OutageRestartSeconds = &restart
		res.BacklogDrainedSeconds = drainedAfter
	}
	return res, nil
}

func prefixed(flag string, args []string) []string {
	if len(args) == 0 {
		return nil
	}
	return append([]string{flag}, args...)
}

// percentiles of an interval expression over the window's rows, in
// seconds; ids, when given, limits them to those monitors.
func (r *runner) percentiles(ctx context.Context, expr string, tl timeline, ids []int64, ps ...float64) ([]float64, error) {
	sql := `SELECT percentile_cont($3::float8[]) WITHIN GROUP (ORDER BY extract(epoch FROM ` + expr + `))
		FROM check_results WHERE due_at >= $1 AND due_at < $2 AND NOT manual`
	args := []any{tl.w0, tl.w1, ps}
	if ids != nil {
		sql += ` AND monitor_id = ANY($4)`
		args = append(args, ids)
	}
	var vals []*float64
	if err := r.pool.QueryRow(ctx, sql, args...).Scan(&vals); err != nil {
		return nil, fmt.Errorf("percentiles of %s: %w", expr, err)
	}
	out := make([]float64, len(ps))
	for i := range out {
		if i < len(vals) && vals[i] != nil {
			out[i] = report.Finite(*vals[i])
		}
	}
	return out, nil
}

// perSecond counts rows by the second they were stored, and the lag p99
// of rows by the second they were due (Unix seconds).
func (r *runner) perSecond(ctx context.Context) (stored, lagP99 map[int64]float64, err error) {
	stored, lagP99 = map[int64]float64{}, map[int64]float64{}
	q, err := r.pool.Query(ctx, `SELECT floor(extract(epoch FROM stored_at))::bigint, count(*)
		FROM check_results GROUP BY 1`)
	if err != nil {
		return nil, nil, fmt.Errorf("rows per second: %w", err)
	}
	for q.Next() {
		var sec, n int64
		if err := q.Scan(&sec, &n); err != nil {
			q.Close()
			return nil, nil, fmt.Errorf("rows per second: %w", err)
		}
		stored[sec] = float64(n)
	}
	q.Close()
	if err := q.Err(); err != nil {
		return nil, nil, fmt.Errorf("rows per second: %w", err)
	}
	q, err = r.pool.Query(ctx, `SELECT floor(extract(epoch FROM due_at))::bigint,
			percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - due_at))
		FROM check_results WHERE NOT manual GROUP BY 1`)
	if err != nil {
		return nil, nil, fmt.Errorf("lag per second: %w", err)
	}
	for q.Next() {
		var sec int64
		var p float64
		if err := q.Scan(&sec, &p); err != nil {
			q.Close()
			return nil, nil, fmt.Errorf("lag per second: %w", err)
		}
		lagP99[sec] = p
	}
	q.Close()
	if err := q.Err(); err != nil {
		return nil, nil, fmt.Errorf("lag per second: %w", err)
	}
	return stored, lagP99, nil
}

// backlogDrained finds, after the checker's restart, the first second at
// which CHECKS is back under twice its depth before the outage and the lag
// of checks due that second is back to normal. It returns the seconds
// from the restart (nil when it never happened) and the pre-outage depth.
func backlogDrained(s report.Series, tl timeline) (*float64, float64) {
	stop := tl.stopAt.Unix() - tl.w0.Unix()
	restart := tl.restartAt.Unix() - tl.w0.Unix()
	var depths, lags []float64
	for i, t := range s.T {
		if t >= stop-10 && t < stop {
			if d := s.ChecksDepth[i]; d != nil {
				depths = append(depths, *d)
			}
			if l := s.LagP99Seconds[i]; l != nil {
				lags = append(lags, *l)
			}
		}
	}
	pre := mean(depths)
	// Normal lag: what it was before the outage, with a margin of a second
	// (the tick period), since the due seconds are sparse at small fleets.
	lagNormal := 1.0
	if len(lags) > 0 {
		sort.Float64s(lags)
		lagNormal += lags[len(lags)/2]
	}
	depthNormal := math.Max(2*pre, 10)
	for i, t := range s.T {
		if t < restart {
			continue
		}
		d, l := s.ChecksDepth[i], s.LagP99Seconds[i]
		if d == nil || *d > depthNormal || (l != nil && *l > lagNormal) {
			continue
		}
		v := float64(t - restart)
		return &v, pre
	}
	return nil, pre
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
