package store

import (
	"context"
	"fmt"
	"slices"
)

// Monitor states, as stored in monitors.state.
const (
	StateUnknown = "unknown"
	StateUp      = "up"
	StateDown    = "down"
)

// MonitorStates lists every state a monitor can be in.
var MonitorStates = []string{StateUp, StateDown, StateUnknown}

// MaxPageLimit caps MonitorFilter.Limit, so no caller can ask for the whole
// fleet in one query by accident.
const MaxPageLimit = 10000

// MonitorFilter selects one page of monitors for ListMonitorsPage.
type MonitorFilter struct {
	// AfterID is the last id of the previous page; 0 starts at the first.
	AfterID int64
	// Limit is the most monitors to return, from 1 to MaxPageLimit.
	Limit int
	// State keeps only monitors in that state; empty keeps all.
	State string
	// NameContains keeps only monitors whose name contains it, ignoring
	// case; empty keeps all.
	NameContains string
}

// ListMonitorsPage returns up to f.Limit monitors with ids above f.AfterID
// that pass the filter, by id. The next page starts after the last id
// returned; a page shorter than the limit is the last one. Walking the
// pages reads each monitor once, and a page costs the same however deep
// into the fleet it is, as it seeks on the primary key instead of skipping
// rows.
func (s *Store) ListMonitorsPage(ctx context.Context, f MonitorFilter) ([]Monitor, error) {
	if f.Limit < 1 || f.Limit > MaxPageLimit {
		return nil, fmt.Errorf("list monitors: limit %d is not from 1 to %d", f.Limit, MaxPageLimit)
	}
	if f.State != "" && !validState(f.State) {
		return nil, fmt.Errorf("list monitors: unknown state %q", f.State)
	}
	// strpos instead of ILIKE: the search text is matched literally, so a
	// name search for "50%" or "a_b" needs no escaping.
	rows, err := s.pool.Query(ctx, `SELECT `+monitorColumns+` FROM monitors
		WHERE id > $1
			AND ($2 = '' OR state = $2)
			AND ($3 = '' OR strpos(lower(name), lower($3)) > 0)
		ORDER BY id
		LIMIT $4`, f.AfterID, f.State, f.NameContains, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list monitors: %w", err)
	}
	defer rows.Close()
	out := make([]Monitor, 0, min(f.Limit, 1000))
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

// CountMonitorsByState counts monitors in each state. Every state in
// MonitorStates has a key, zero when no monitor is in it. Paused monitors
// are counted in the state they were last in.
func (s *Store) CountMonitorsByState(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM monitors GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count monitors by state: %w", err)
	}
	defer rows.Close()
	out := make(map[string]int64, len(MonitorStates))
	for _, st := range MonitorStates {
		out[st] = 0
	}
	for rows.Next() {
		var state string
		var n int64
		if err := rows.Scan(&state, &n); err != nil {
			return nil, fmt.Errorf("count monitors by state: %w", err)
		}
		out[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count monitors by state: %w", err)
	}
	return out, nil
}

func validState(state string) bool {
	return slices.Contains(MonitorStates, state)
}
