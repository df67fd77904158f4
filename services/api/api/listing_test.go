package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

// seedMonitors inserts n TCP monitors named prefix-00001 and up in one
// statement, not due for an hour, and returns their ids in order. A fleet
// of hundreds is too slow to create one request at a time.
func seedMonitors(t *testing.T, st *store.Store, prefix string, n int) []int64 {
	t.Helper()
	rows, err := st.Pool().Query(t.Context(), `
		INSERT INTO monitors (name, kind, target, interval_seconds, timeout_ms, due_at, next_check_at)
		SELECT $1 || '-' || lpad(i::text, 5, '0'), 'tcp', '127.0.0.1:1', 60, 5000,
			now() + interval '1 hour', now() + interval '1 hour'
		FROM generate_series(1, $2::int) AS i
		ORDER BY i
		RETURNING id`, prefix, n)
	require.NoError(t, err)
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Len(t, ids, n)
	return ids
}

// setState puts monitors in a state directly, as the results service would.
func setState(t *testing.T, st *store.Store, state string, ids ...int64) {
	t.Helper()
	_, err := st.Pool().Exec(t.Context(), `UPDATE monitors SET state = $1, state_changed_at = now() WHERE id = ANY($2)`, state, ids)
	require.NoError(t, err)
}

// pageHas and pageLacks check for text in a rendered page without
// printing the whole page when they fail.
func pageHas(t *testing.T, page, want string, msg ...any) {
	t.Helper()
	if !strings.Contains(page, want) {
		t.Errorf("page lacks %q %v", want, msg)
	}
}

func pageLacks(t *testing.T, page, unwanted string, msg ...any) {
	t.Helper()
	if strings.Contains(page, unwanted) {
		t.Errorf("page has %q %v", unwanted, msg)
	}
}

type monitorList struct {
	Monitors  []monitorJSON `json:"monitors"`
	NextAfter *int64        `json:"next_after"`
}

func (l monitorList) ids() []int64 {
	out := []int64{}
	for _, m := range l.Monitors {
		out = append(out, m.ID)
	}
	return out
}

// walk follows next_after from the first page of path (which must already
// hold a query) and returns every id seen and the number of pages.
func walk(t *testing.T, srv *httptest.Server, path string) ([]int64, int) {
	t.Helper()
	var ids []int64
	pages := 0
	next := path
	for {
		var l monitorList
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, next, nil, &l))
		pages++
		ids = append(ids, l.ids()...)
		if l.NextAfter == nil {
			return ids, pages
		}
		require.NotEmpty(t, l.Monitors, "a page with a next page is not empty")
		require.Equal(t, l.Monitors[len(l.Monitors)-1].ID, *l.NextAfter)
		next = fmt.Sprintf("%s&after=%d", path, *l.NextAfter)
		require.Less(t, pages, 1000, "paging does not end")
	}
}

func TestListing(t *testing.T) {
	t.Parallel()

	t.Run("PagesWalkEveryMonitorOnce", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		_, raw := call(t, srv, http.MethodGet, "/api/v1/monitors", nil)
		assert.JSONEq(t, `{"monitors":[],"next_after":null}`, string(raw))

		want := seedMonitors(t, b.st, "m", 1203)
		// Gaps in the ids do not matter.
		_, err := b.st.Pool().Exec(t.Context(), `DELETE FROM monitors WHERE id = ANY($1)`, []int64{want[0], want[499], want[500], want[1202]})
		require.NoError(t, err)
		want = append(want[1:499], want[501:1202]...)

		var first monitorList
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/monitors", nil, &first))
		require.Len(t, first.Monitors, 500, "the default page holds 500")
		require.NotNil(t, first.NextAfter)
		assert.Equal(t, want[499], *first.NextAfter)
		assert.Equal(t, want[:500], first.ids())
		assert.Equal(t, "m-00002", first.Monitors[0].Name, "monitors are shown in full")
		assert.Equal(t, "tcp", first.Monitors[0].Kind)

		ids, pages := walk(t, srv, "/api/v1/monitors?limit=250")
		assert.Equal(t, want, ids, "every monitor exactly once, by id")
		assert.Equal(t, 5, pages)

		ids, pages = walk(t, srv, "/api/v1/monitors?limit=5000")
		assert.Equal(t, want, ids)
		assert.Equal(t, 1, pages)

		// A page that ends exactly at the last monitor says there is no next.
		var exact monitorList
		callJSON(t, srv, http.MethodGet, fmt.Sprintf("/api/v1/monitors?limit=3&after=%d", want[len(want)-4]), nil, &exact)
		assert.Equal(t, want[len(want)-3:], exact.ids())
		assert.Nil(t, exact.NextAfter)
		callJSON(t, srv, http.MethodGet, fmt.Sprintf("/api/v1/monitors?after=%d", want[len(want)-1]), nil, &exact)
		assert.Empty(t, exact.Monitors)
		assert.Nil(t, exact.NextAfter)
	})

	t.Run("Filters", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		web := seedMonitors(t, b.st, "Web", 30)
		api := seedMonitors(t, b.st, "api", 10)
		setState(t, b.st, "down", web[3], web[17], api[2])
		setState(t, b.st, "up", web[4], api[0], api[1])

		ids, _ := walk(t, srv, "/api/v1/monitors?state=down&limit=1")
		assert.Equal(t, []int64{web[3], web[17], api[2]}, ids)
		ids, _ = walk(t, srv, "/api/v1/monitors?state=up")
		assert.Equal(t, []int64{web[4], api[0], api[1]}, ids)
		ids, _ = walk(t, srv, "/api/v1/monitors?state=unknown&limit=10")
		assert.Len(t, ids, 34)

		ids, pages := walk(t, srv, "/api/v1/monitors?q=wEB&limit=7")
		assert.Equal(t, web, ids, "the name search ignores case")
		assert.Equal(t, 5, pages)
		ids, _ = walk(t, srv, "/api/v1/monitors?q=api-0000")
		assert.Equal(t, api[:9], ids)
		ids, _ = walk(t, srv, "/api/v1/monitors?q=web&state=down")
		assert.Equal(t, []int64{web[3], web[17]}, ids)
		ids, _ = walk(t, srv, "/api/v1/monitors?q=%25")
		assert.Empty(t, ids, "% is matched literally")
	})

	t.Run("BadListQuery", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		for query, field := range map[string]string{
			"limit=0":                       "limit",
			"limit=5001":                    "limit",
			"limit=-1":                      "limit",
			"limit=many":                    "limit",
			"after=-1":                      "after",
			"after=x":                       "after",
			"state=ok":                      "state",
			"state=DOWN":                    "state",
			"q=" + strings.Repeat("x", 201): "q",
		} {
			var e apiError
			code := callJSON(t, srv, http.MethodGet, "/api/v1/monitors?"+query, nil, &e)
			assert.Equal(t, http.StatusBadRequest, code, query)
			assert.Equal(t, []string{field}, e.fieldNames(), query)
		}
		var l monitorList
		assert.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/monitors?limit=5000&after=0&state=up&q=x", nil, &l))
	})

	t.Run("Uptime", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)
		ctx := t.Context()

		m := create(t, srv, httpMonitor("homepage"))
		quiet := create(t, srv, httpMonitor("quiet"))
		// Ten checks two hours ago (8 up), three in the last seconds (all up).
		base := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
		var batch []queue.Result
		for i := range 10 {
			due := base.Add(time.Duration(i) * time.Minute)
			batch = append(batch, queue.Result{MonitorID: m.ID, Region: "default", DueAt: due, Attempt: 1,
				StartedAt: due, FinishedAt: due, Up: i >= 2, LatencyMS: float64(10 * (i + 1))})
		}
		for i := range 3 {
			due := time.Now().Add(-time.Duration(i+1) * time.Second)
			batch = append(batch, queue.Result{MonitorID: m.ID, Region: "default", DueAt: due, Attempt: 1,
				StartedAt: due, FinishedAt: due, Up: true, LatencyMS: 5})
		}
		_, err := b.st.WriteResults(ctx, batch)
		require.NoError(t, err)
		_, err = b.st.RollUp(ctx, time.Now(), 3*time.Hour)
		require.NoError(t, err)

		var raw map[string]any
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/uptime?window=24h"), nil, &raw))
		for _, f := range []string{"monitor_id", "window", "since", "checks", "up_checks", "uptime_percent", "avg_latency_ms", "max_latency_ms"} {
			assert.Contains(t, raw, f)
		}
		assert.InDelta(t, m.ID, raw["monitor_id"], 0)
		assert.Equal(t, "24h", raw["window"])
		assert.InDelta(t, 13, raw["checks"], 0, "rolled-up hours plus raw rows not rolled up yet")
		assert.InDelta(t, 11, raw["up_checks"], 0)
		assert.InDelta(t, 100*11.0/13, raw["uptime_percent"], 1e-9)
		assert.InDelta(t, (550.0+15)/13, raw["avg_latency_ms"], 1e-9)
		assert.InDelta(t, 100, raw["max_latency_ms"], 0)
		since, err := time.Parse(time.RFC3339, raw["since"].(string))
		require.NoError(t, err)
		assert.Equal(t, since.Truncate(time.Hour), since, "whole hours")
		assert.WithinRange(t, since, time.Now().Add(-25*time.Hour), time.Now().Add(-24*time.Hour))

		var u uptimeJSON
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/uptime"), nil, &u))
		assert.Equal(t, "24h", u.Window, "24h is the default")
		assert.EqualValues(t, 13, u.Checks)

		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/uptime?window=30d"), nil, &u))
		assert.Equal(t, "30d", u.Window)
		assert.EqualValues(t, 13, u.Checks)
		assert.WithinDuration(t, time.Now().AddDate(0, 0, -30), u.Since, time.Hour)

		// One hour back reaches only the current and the previous hour.
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/uptime?window=1h"), nil, &u))
		assert.EqualValues(t, 3, u.Checks)
		assert.EqualValues(t, 3, u.UpChecks)
		require.NotNil(t, u.UptimePercent)
		assert.InDelta(t, 100, *u.UptimePercent, 0)
		require.NotNil(t, u.MaxLatencyMS)
		assert.InDelta(t, 5, *u.MaxLatencyMS, 0)

		_, body := call(t, srv, http.MethodGet, monitorPath(quiet.ID, "/uptime?window=7d"), nil)
		assert.Contains(t, string(body), `"checks":0`)
		assert.Contains(t, string(body), `"uptime_percent":null`, "no checks is no percentage, not 0%")

		code, page := call(t, srv, http.MethodGet, fmt.Sprintf("/monitors/%d", m.ID), nil)
		require.Equal(t, http.StatusOK, code)
		pageHas(t, string(page), "Uptime, 24 h")
		pageHas(t, string(page), "84.61% (11 of 13 checks up)")
		pageHas(t, string(page), "Uptime, 30 d")
		_, page = call(t, srv, http.MethodGet, fmt.Sprintf("/monitors/%d", quiet.ID), nil)
		pageHas(t, string(page), "— (no checks)")
	})

	t.Run("UptimeBadWindow", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		for _, w := range []string{"59m", "30m", "0", "-24h", "0d", "91d", "2160h1s", "1.5d", "d", "7days", "week", "1w"} {
			var e apiError
			code := callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/uptime?window="+w), nil, &e)
			assert.Equal(t, http.StatusBadRequest, code, w)
			assert.Equal(t, []string{"window"}, e.fieldNames(), w)
		}
		for _, w := range []string{"1h", "60m", "36h", "1d", "7d", "90d", "2160h"} {
			var u uptimeJSON
			assert.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/uptime?window="+w), nil, &u), w)
			assert.Equal(t, w, u.Window)
		}
		var e apiError
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodGet, monitorPath(m.ID+100, "/uptime"), nil, &e))
		assert.Equal(t, http.StatusBadRequest, callJSON(t, srv, http.MethodGet, "/api/v1/monitors/x/uptime", nil, &e))
	})

	t.Run("DashboardPages", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		ids := seedMonitors(t, b.st, "svc", dashboardPage+5)
		setState(t, b.st, "down", ids[3], ids[dashboardPage+2])
		setState(t, b.st, "up", ids[:3]...)

		code, body := call(t, srv, http.MethodGet, "/", nil)
		require.Equal(t, http.StatusOK, code)
		page := string(body)
		pageHas(t, page, fmt.Sprintf("%d monitors:", dashboardPage+5))
		pageHas(t, page, ">3 up<")
		pageHas(t, page, ">2 down<")
		pageHas(t, page, fmt.Sprintf(">%d unknown<", dashboardPage))
		pageHas(t, page, `name="q"`, "a search box")
		// The down monitors come first, even one beyond the first page.
		down := strings.Index(page, "<h2>Down</h2>")
		all := strings.Index(page, "<h2>All monitors</h2>")
		require.True(t, down >= 0 && all > down, "down monitors above the listing")
		pageHas(t, page[down:all], fmt.Sprintf(`href="/monitors/%d"`, ids[dashboardPage+2]))
		pageLacks(t, page[down:all], fmt.Sprintf(`href="/monitors/%d"`, ids[0]))
		pageHas(t, page[all:], fmt.Sprintf(`href="/monitors/%d"`, ids[dashboardPage-1]))
		pageLacks(t, page[all:], fmt.Sprintf(`href="/monitors/%d"`, ids[dashboardPage]))
		next := fmt.Sprintf(`href="/?after=%d"`, ids[dashboardPage-1])
		pageHas(t, page, next, "a link to the next page")
		pageLacks(t, page, "First page")

		code, body = call(t, srv, http.MethodGet, fmt.Sprintf("/?after=%d", ids[dashboardPage-1]), nil)
		require.Equal(t, http.StatusOK, code)
		page = string(body)
		for _, id := range ids[dashboardPage:] {
			pageHas(t, page, fmt.Sprintf(`href="/monitors/%d"`, id))
		}
		pageLacks(t, page, fmt.Sprintf(`href="/monitors/%d"`, ids[0]))
		pageLacks(t, page, "<h2>Down</h2>", "down monitors head the first page only")
		pageLacks(t, page, "Next page", "the last page")
		pageHas(t, page, `href="/">First page`)

		// A search keeps its text in the box and in the paging links.
		code, body = call(t, srv, http.MethodGet, "/?q=SVC-0000", nil)
		require.Equal(t, http.StatusOK, code)
		page = string(body)
		pageHas(t, page, `value="SVC-0000"`)
		pageHas(t, page, fmt.Sprintf(`href="/monitors/%d"`, ids[8]))
		pageLacks(t, page, fmt.Sprintf(`href="/monitors/%d"`, ids[9]))
		pageLacks(t, page, "Next page")

		code, body = call(t, srv, http.MethodGet, "/?q=svc&state=unknown", nil)
		require.Equal(t, http.StatusOK, code)
		page = string(body)
		pageHas(t, page, "Monitors in unknown state")
		pageLacks(t, page, fmt.Sprintf(`href="/monitors/%d"`, ids[3]))
		pageLacks(t, page, "<h2>Down</h2>", "a state filter replaces the down section")
		pageLacks(t, page, "Next page", "the 200 unknown monitors fit one page")

		code, body = call(t, srv, http.MethodGet, "/?q=svc", nil)
		require.Equal(t, http.StatusOK, code)
		page = string(body)
		pageHas(t, page, "<h2>Down</h2>")
		pageHas(t, page, fmt.Sprintf(`href="/?after=%d&amp;q=svc"`, ids[dashboardPage-1]), "the next page keeps the search")

		code, _ = call(t, srv, http.MethodGet, "/?state=sideways", nil)
		assert.Equal(t, http.StatusBadRequest, code)
		code, _ = call(t, srv, http.MethodGet, "/?after=-3", nil)
		assert.Equal(t, http.StatusBadRequest, code)
	})
}
