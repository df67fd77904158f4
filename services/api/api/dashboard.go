package api

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"upwatch.dev/shared/store"
)

//go:embed templates/*.html
var templateFS embed.FS

// What a monitor's page shows: its newest outcomes and skipped slots.
const (
	dashboardResults = 50
	dashboardSkipped = 20
)

// What the dashboard shows: the first down monitors, then a page of the
// listing. A fleet can be far too large for one page.
const (
	dashboardDown = 200
	dashboardPage = 200
)

// parsePages parses the embedded templates. They are part of the binary,
// so a parse failure is a build defect and panics at start-up (the tests
// render every page).
func parsePages() *template.Template {
	funcs := template.FuncMap{
		"when":     when,
		"ago":      ago,
		"duration": humanDuration,
		"ms":       millis,
		"deref":    derefString,
		"status":   statusCode,
		"uptime":   uptimeText,
		"table":    newMonitorTable,
	}
	return template.Must(template.New("pages").Funcs(funcs).ParseFS(templateFS, "templates/*.html"))
}

type dashboardData struct {
	// Counts has the number of monitors in each state; Total is their sum.
	Counts map[string]int64
	Total  int64
	// Down holds the first down monitors matching the search, shown above
	// the listing on its first page; MoreDownURL lists the rest, if any.
	ShowDown    bool
	Down        []store.Monitor
	MoreDownURL string
	// Monitors is the page of the listing. NextPageURL continues it and
	// FirstPageURL goes back to its start; each is empty when there is
	// nowhere to go.
	Monitors     []store.Monitor
	NextPageURL  string
	FirstPageURL string
	// State and Query filter the listing.
	State string
	Query string
	Now   time.Time
}

// monitorTable is what the "monitors" template renders.
type monitorTable struct {
	Rows []store.Monitor
	Now  time.Time
}

func newMonitorTable(rows []store.Monitor, now time.Time) monitorTable {
	return monitorTable{Rows: rows, Now: now}
}

// dashboardURL links to the dashboard with the given listing query.
func dashboardURL(after int64, state, q string) string {
	v := url.Values{}
	if after > 0 {
		v.Set("after", strconv.FormatInt(after, 10))
	}
	if state != "" {
		v.Set("state", state)
	}
	if q != "" {
		v.Set("q", q)
	}
	if len(v) == 0 {
		return "/"
	}
	return "/?" + v.Encode()
}

type monitorPageData struct {
	Monitor store.Monitor
	// Uptime over the last day and the last 30 days.
	Uptime24h, Uptime30d store.Uptime
	Results              []store.CheckResult
	Skipped              []store.SkippedSlot
	// Notice answers the "Check now" button after its redirect.
	Notice string
	Now    time.Time
}

// checkNotices are the messages the "Check now" redirect can ask for; the
// page shows only these, never text taken from the URL.
var checkNotices = map[string]string{
	"requested": "Check requested: it runs at the next tick, ahead of scheduled checks.",
	"paused":    "The monitor is paused: resume it to check it.",
}

// dashboard serves /: counts by state, the first down monitors, and a page
// of monitors (?after to page on, ?state and ?q to filter).
func (s *server) dashboard(w http.ResponseWriter, r *http.Request) {
	lq, bad := parseListQuery(r)
	if len(bad) > 0 {
		http.Error(w, "bad request: "+bad[0].Field+" "+bad[0].Reason, http.StatusBadRequest)
		return
	}
	counts, err := s.st.CountMonitorsByState(r.Context())
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	data := dashboardData{Counts: counts, State: lq.state, Query: lq.q, Now: time.Now()}
	for _, n := range counts {
		data.Total += n
	}
	// Down monitors first, on the first page of the unfiltered listing.
	if lq.after == 0 && lq.state == "" && counts[store.StateDown] > 0 {
		data.ShowDown = true
		var next int64
		data.Down, next, err = s.monitorsPage(r, listQuery{q: lq.q}, store.StateDown, dashboardDown)
		if err != nil {
			s.pageError(w, r, err)
			return
		}
		if next > 0 {
			data.MoreDownURL = dashboardURL(0, store.StateDown, lq.q)
		}
	}
	var next int64
	data.Monitors, next, err = s.monitorsPage(r, lq, lq.state, dashboardPage)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	if next > 0 {
		data.NextPageURL = dashboardURL(next, lq.state, lq.q)
	}
	if lq.after > 0 {
		data.FirstPageURL = dashboardURL(0, lq.state, lq.q)
	}
	s.render(w, r, "index.html", data)
}

func (s *server) monitorPage(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		http.NotFound(w, r)
		return
	}
	m, err := s.st.GetMonitor(r.Context(), id)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	rs, err := s.st.ListResults(r.Context(), id, dashboardResults)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	skipped, err := s.st.ListSkipped(r.Context(), id, false, dashboardSkipped)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	now := time.Now()
	day, err := s.st.Uptime(r.Context(), id, uptimeSince(now, 24*time.Hour))
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	month, err := s.st.Uptime(r.Context(), id, uptimeSince(now, 30*24*time.Hour))
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	s.render(w, r, "monitor.html", monitorPageData{
		Monitor: m, Uptime24h: day, Uptime30d: month, Results: rs, Skipped: skipped,
		Notice: checkNotices[r.URL.Query().Get("check")], Now: now,
	})
}

// checkFromPage serves the "Check now" button: it asks for a manual check
// and sends the browser back to the monitor's page, which says what
// happened.
func (s *server) checkFromPage(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		http.NotFound(w, r)
		return
	}
	outcome := "requested"
	if _, err := s.st.RequestCheck(r.Context(), id); err != nil {
		if !errors.Is(err, store.ErrPaused) {
			s.pageError(w, r, err)
			return
		}
		outcome = "paused"
	}
	http.Redirect(w, r, fmt.Sprintf("/monitors/%d?check=%s", id, outcome), http.StatusSeeOther)
}

// render executes into a buffer first so a template error becomes a clean
// 500 instead of half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, name string, data any) {
	var buf bytes.Buffer
	if err := s.pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.pageError(w, r, fmt.Errorf("render %s: %w", name, err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}

func (s *server) pageError(w http.ResponseWriter, r *http.Request, err error) {
	if isNotFound(err) {
		http.NotFound(w, r)
		return
	}
	s.logger.Error("page failed", "path", r.URL.Path, "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
}

func isNotFound(err error) bool {
	return err != nil && errors.Is(err, store.ErrNotFound)
}

const timeLayout = "2006-01-02 15:04:05 UTC"

// when formats a time or an optional time; "—" stands for none.
func when(v any) string {
	switch t := v.(type) {
	case time.Time:
		return t.UTC().Format(timeLayout)
	case *time.Time:
		if t != nil {
			return t.UTC().Format(timeLayout)
		}
	}
	return "—"
}

// ago says how long before now t was, coarsely: a dashboard reader wants
// "12s ago", not a timestamp to subtract in their head.
func ago(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t)
	if d < 0 {
		d = 0
	}
	return humanDuration(d.Truncate(time.Second)) + " ago"
}

// humanDuration drops the zero units time.Duration.String keeps ("5m"
// rather than "5m0s").
func humanDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func millis(v any) string {
	switch f := v.(type) {
	case float64:
		return strconv.FormatFloat(f, 'f', 1, 64) + " ms"
	case *float64:
		if f != nil {
			return strconv.FormatFloat(*f, 'f', 1, 64) + " ms"
		}
	}
	return "—"
}

// uptimeText formats an uptime as its percentage and the checks it counts.
func uptimeText(u store.Uptime) string {
	if u.Checks == 0 {
		return "— (no checks)"
	}
	checks := "checks"
	if u.Checks == 1 {
		checks = "check"
	}
	// Rounded down, so a single failure never shows as 100%.
	pct := math.Floor(u.Percent*100) / 100
	return fmt.Sprintf("%.2f%% (%d of %d %s up)", pct, u.UpChecks, u.Checks, checks)
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func statusCode(c *int) string {
	if c == nil {
		return "—"
	}
	return strconv.Itoa(*c)
}
