package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"upwatch.dev/shared/monitor"
	"upwatch.dev/shared/store"
)

// Limits of the monitor list.
const (
	defaultMonitorsLimit = 500
	maxMonitorsLimit     = 5000
	// maxNameQuery caps the ?q search text, in characters; no monitor name
	// needs more.
	maxNameQuery = 200
)

// Bounds of the uptime window.
const (
	defaultUptimeWindow = "24h"
	minUptimeWindow     = time.Hour
	maxUptimeWindow     = 90 * 24 * time.Hour
)

// listQuery is the parsed query of a monitor listing.
type listQuery struct {
	after int64
	state string
	q     string
}

// parseListQuery reads ?after, ?state and ?q. It returns the fields that
// are wrong, each with its reason.
func parseListQuery(r *http.Request) (listQuery, []monitor.FieldError) {
	v := r.URL.Query()
	var lq listQuery
	var bad []monitor.FieldError
	if a := v.Get("after"); a != "" {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n < 0 {
			bad = append(bad, monitor.FieldError{Field: "after", Reason: "must be a monitor id (a whole number, 0 or more)"})
		}
		lq.after = n
	}
	lq.state = v.Get("state")
	if lq.state != "" && !slices.Contains(store.MonitorStates, lq.state) {
		bad = append(bad, monitor.FieldError{Field: "state", Reason: "must be one of " + strings.Join(store.MonitorStates, ", ")})
	}
	lq.q = strings.TrimSpace(v.Get("q"))
	if utf8.RuneCountInString(lq.q) > maxNameQuery {
		bad = append(bad, monitor.FieldError{Field: "q", Reason: fmt.Sprintf("must be at most %d characters", maxNameQuery)})
	}
	return lq, bad
}

// monitorsPage reads one page of monitors. It asks the store for one more
// than limit to learn whether another page follows, and returns the id to
// continue after, or 0 on the last page.
func (s *server) monitorsPage(r *http.Request, lq listQuery, state string, limit int) ([]store.Monitor, int64, error) {
	ms, err := s.st.ListMonitorsPage(r.Context(), store.MonitorFilter{
		AfterID: lq.after, Limit: limit + 1, State: state, NameContains: lq.q,
	})
	if err != nil {
		return nil, 0, err
	}
	if len(ms) <= limit {
		return ms, 0, nil
	}
	ms = ms[:limit]
	return ms, ms[len(ms)-1].ID, nil
}

// listMonitors serves GET /api/v1/monitors: one page of monitors by id.
// next_after is the after value of the next page, null on the last.
func (s *server) listMonitors(w http.ResponseWriter, r *http.Request) {
	limit, ok := queryLimit(w, r, defaultMonitorsLimit, maxMonitorsLimit)
	if !ok {
		return
	}
	lq, bad := parseListQuery(r)
	if len(bad) > 0 {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid query", Fields: bad})
		return
	}
	ms, next, err := s.monitorsPage(r, lq, lq.state, limit)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := make([]monitorJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, toMonitorJSON(m))
	}
	var nextAfter *int64
	if next > 0 {
		nextAfter = &next
	}
	writeJSON(w, http.StatusOK, map[string]any{"monitors": out, "next_after": nextAfter})
}

// uptimeJSON is a monitor's uptime over a window as the API shows it. The
// percentage and latencies are null when the window holds no checks.
type uptimeJSON struct {
	MonitorID int64  `json:"monitor_id"`
	Window    string `json:"window"`
	// Since is the start of the hour the window starts in: uptime is
	// counted in whole hours.
	Since         time.Time `json:"since"`
	Checks        int64     `json:"checks"`
	UpChecks      int64     `json:"up_checks"`
	UptimePercent *float64  `json:"uptime_percent"`
	AvgLatencyMS  *float64  `json:"avg_latency_ms"`
	MaxLatencyMS  *float64  `json:"max_latency_ms"`
}

// monitorUptime serves GET /api/v1/monitors/{id}/uptime?window=24h.
func (s *server) monitorUptime(w http.ResponseWriter, r *http.Request) {
	id, ok := monitorID(w, r)
	if !ok {
		return
	}
	window := r.URL.Query().Get("window")
	if window == "" {
		window = defaultUptimeWindow
	}
	d, err := parseWindow(window)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{
			Error:  "invalid window",
			Fields: []monitor.FieldError{{Field: "window", Reason: err.Error()}},
		})
		return
	}
	if _, err := s.st.GetMonitor(r.Context(), id); err != nil {
		s.writeStoreError(w, r, err)
		return
	}
	since := uptimeSince(time.Now(), d)
	u, err := s.st.Uptime(r.Context(), id, since)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := uptimeJSON{
		MonitorID: id, Window: window, Since: since,
		Checks: u.Checks, UpChecks: u.UpChecks,
	}
	if u.Checks > 0 {
		out.UptimePercent, out.AvgLatencyMS, out.MaxLatencyMS = &u.Percent, &u.AvgLatencyMS, &u.MaxLatencyMS
	}
	writeJSON(w, http.StatusOK, out)
}

// uptimeSince is where a window ending now starts: the start of its first
// hour, as the store counts whole hours.
func uptimeSince(now time.Time, window time.Duration) time.Time {
	return now.UTC().Add(-window).Truncate(time.Hour)
}

var errWindow = errors.New("must be a duration from 1h to 90d, such as 24h or 7d")

// parseWindow reads an uptime window: a Go duration ("36h") or a whole
// number of days ("30d"), from an hour to 90 days.
func parseWindow(v string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > int(maxUptimeWindow/(24*time.Hour)) {
			return 0, errWindow
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return 0, errWindow
		}
	}
	if d < minUptimeWindow || d > maxUptimeWindow {
		return 0, errWindow
	}
	return d, nil
}
