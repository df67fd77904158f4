package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"upwatch.dev/shared/queue"
	"upwatch.dev/shared/store"
)

func TestManualCheck(t *testing.T) {
	t.Parallel()

	t.Run("RequestThenWait", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		assert.Nil(t, m.CheckRequestedAt)

		var req struct {
			MonitorID   int64     `json:"monitor_id"`
			RequestedAt time.Time `json:"requested_at"`
		}
		require.Equal(t, http.StatusAccepted, callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/check"), nil, &req))
		assert.Equal(t, m.ID, req.MonitorID)
		assert.WithinDuration(t, time.Now(), req.RequestedAt, time.Minute)

		var got monitorJSON
		callJSON(t, srv, http.MethodGet, monitorPath(m.ID, ""), nil, &got)
		require.NotNil(t, got.CheckRequestedAt, "the request waits for the ticker")
		assert.True(t, req.RequestedAt.Equal(*got.CheckRequestedAt))

		// The checker's outcome of that manual check.
		_, err := b.st.WriteResults(t.Context(), []queue.Result{{
			MonitorID: m.ID, Region: "default", DueAt: req.RequestedAt, Attempt: 1, Manual: true,
			StartedAt: req.RequestedAt.Add(time.Millisecond), FinishedAt: req.RequestedAt.Add(30 * time.Millisecond),
			Up: true, LatencyMS: 29, StatusCode: 204,
		}})
		require.NoError(t, err)

		start := time.Now()
		var res map[string]any
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/check?wait=5s"), nil, &res))
		assert.Less(t, time.Since(start), 4*time.Second, "a stored outcome is answered at once")
		assert.Equal(t, true, res["manual"])
		assert.Equal(t, "up", res["status"])
		assert.InDelta(t, 204, res["status_code"], 0)
		assert.InDelta(t, 29, res["latency_ms"], 0)
		due, err := time.Parse(time.RFC3339Nano, res["due_at"].(string))
		require.NoError(t, err)
		assert.True(t, due.Equal(req.RequestedAt), "due_at %v, requested %v", due, req.RequestedAt)
		for _, f := range []string{"checked_at", "started_at", "attempt", "region", "error"} {
			assert.Contains(t, res, f)
		}

		// The results list shows the same outcome, marked manual.
		var list struct {
			Results []map[string]any `json:"results"`
		}
		callJSON(t, srv, http.MethodGet, monitorPath(m.ID, "/results"), nil, &list)
		require.Len(t, list.Results, 1)
		assert.Equal(t, true, list.Results[0]["manual"])
	})

	t.Run("WaitTimesOut", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		var body struct {
			Error       string    `json:"error"`
			RequestedAt time.Time `json:"requested_at"`
		}
		code := callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/check?wait=300ms"), nil, &body)
		assert.Equal(t, http.StatusGatewayTimeout, code)
		assert.Equal(t, "no outcome within 300ms", body.Error)
		assert.WithinDuration(t, time.Now(), body.RequestedAt, time.Minute)
	})

	t.Run("Refusals", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)

		m := create(t, srv, httpMonitor("homepage"))
		for _, wait := range []string{"soon", "-1s", "2m1s", "1h"} {
			var e apiError
			code := callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/check?wait="+wait), nil, &e)
			assert.Equal(t, http.StatusBadRequest, code, wait)
			assert.Equal(t, []string{"wait"}, e.fieldNames(), wait)
		}
		var mon monitorJSON
		callJSON(t, srv, http.MethodGet, monitorPath(m.ID, ""), nil, &mon)
		assert.Nil(t, mon.CheckRequestedAt, "a refused request asks for nothing")

		var e apiError
		assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodPost, monitorPath(m.ID+100, "/check"), nil, &e))
		assert.Equal(t, "monitor not found", e.Error)

		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/pause"), nil, &mon))
		code, raw := call(t, srv, http.MethodPost, monitorPath(m.ID, "/check"), nil)
		assert.Equal(t, http.StatusConflict, code)
		assert.JSONEq(t, `{"error":"monitor is paused"}`, string(raw))
		code, _ = call(t, srv, http.MethodPost, monitorPath(m.ID, "/check?wait=1s"), nil)
		assert.Equal(t, http.StatusConflict, code)
	})
}

func TestSkipped(t *testing.T) {
	t.Parallel()
	srv, b := setup(t)

	m1 := create(t, srv, httpMonitor("one"))
	m2 := create(t, srv, httpMonitor("two"))
	due := time.Now().UTC().Truncate(time.Second).Add(-5 * time.Minute)
	ctx := t.Context()
	require.NoError(t, b.st.RecordSkipped(ctx, m1.ID, "default", due, 3, "expired"))
	require.NoError(t, b.st.RecordSkipped(ctx, m2.ID, "default", due, 1, "monitor paused"))
	require.NoError(t, b.st.RecordFailures(ctx, []store.Failure{
		{MonitorID: m1.ID, Region: "default", DueAt: due.Add(time.Minute), Reason: "max deliveries"},
	}))

	type slot struct {
		MonitorID  int64     `json:"monitor_id"`
		Region     string    `json:"region"`
		DueAt      time.Time `json:"due_at"`
		Slots      int       `json:"slots"`
		Reason     string    `json:"reason"`
		Failed     bool      `json:"failed"`
		RecordedAt time.Time `json:"recorded_at"`
	}
	var got struct {
		Skipped []slot `json:"skipped"`
	}
	require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m1.ID, "/skipped"), nil, &got))
	require.Len(t, got.Skipped, 2)
	failed, skipped := got.Skipped[0], got.Skipped[1]
	assert.Equal(t, slot{MonitorID: m1.ID, Region: "default", DueAt: due.Add(time.Minute), Slots: 1,
		Reason: "max deliveries", Failed: true, RecordedAt: failed.RecordedAt}, failed, "newest first")
	assert.Equal(t, slot{MonitorID: m1.ID, Region: "default", DueAt: due, Slots: 3,
		Reason: "expired", RecordedAt: skipped.RecordedAt}, skipped)
	assert.WithinDuration(t, time.Now(), failed.RecordedAt, time.Minute)
	assert.False(t, failed.RecordedAt.Before(skipped.RecordedAt))

	require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, monitorPath(m1.ID, "/skipped?failed=true"), nil, &got))
	require.Len(t, got.Skipped, 1)
	assert.Equal(t, "max deliveries", got.Skipped[0].Reason)

	require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/skipped", nil, &got))
	assert.Len(t, got.Skipped, 3)
	require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/skipped?limit=1", nil, &got))
	assert.Len(t, got.Skipped, 1)
	require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/skipped?failed=true&limit=10", nil, &got))
	require.Len(t, got.Skipped, 1)
	assert.Equal(t, m1.ID, got.Skipped[0].MonitorID)

	m3 := create(t, srv, httpMonitor("three"))
	_, raw := call(t, srv, http.MethodGet, monitorPath(m3.ID, "/skipped"), nil)
	assert.JSONEq(t, `{"skipped":[]}`, string(raw), "an empty list is [] rather than null")

	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "failed=maybe"} {
		var e apiError
		assert.Equal(t, http.StatusBadRequest, callJSON(t, srv, http.MethodGet, "/api/v1/skipped?"+q, nil, &e), q)
		assert.Equal(t, http.StatusBadRequest, callJSON(t, srv, http.MethodGet, monitorPath(m1.ID, "/skipped?"+q), nil, &e), q)
		assert.Len(t, e.Fields, 1, q)
	}
	var e apiError
	assert.Equal(t, http.StatusNotFound, callJSON(t, srv, http.MethodGet, monitorPath(m3.ID+100, "/skipped"), nil, &e))
}

func TestQueueHealth(t *testing.T) {
	t.Parallel()

	t.Run("EmptyQueue", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)

		start := time.Now()
		var rep map[string]any
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/queue/health", nil, &rep))
		assert.GreaterOrEqual(t, time.Since(start), 5*time.Second, "the default window is 5s")
		assert.Equal(t, "OK", rep["status"], "reasons: %v", rep["reasons"])
		assert.Equal(t, []any{}, rep["reasons"])
		assert.InDelta(t, 0, rep["pending"], 0)
		assert.InDelta(t, 0, rep["in_flight"], 0)
		assert.InDelta(t, 5, rep["window_seconds"], 0)
		assert.InDelta(t, 0, rep["active_monitors"], 0)
		for _, f := range []string{"oldest_pending_seconds", "redelivered", "processed_per_minute", "failed_last_hour",
			"growth_per_minute", "lag_p50_seconds", "lag_p99_seconds", "consumers"} {
			assert.Contains(t, rep, f)
		}

		// A monitor that is due but never checked is judged, and still
		// answered with 200: the status is in the body.
		// It is made older than a minute and an interval: a monitor created
		// just now owes no checks yet.
		m := create(t, srv, httpMonitor("homepage"))
		_, err := b.st.Pool().Exec(t.Context(), `UPDATE monitors SET created_at = now() - interval '5 minutes' WHERE id = $1`, m.ID)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodGet, "/api/v1/queue/health?window=100ms", nil, &rep))
		assert.InDelta(t, 0.1, rep["window_seconds"], 1e-9)
		assert.InDelta(t, 1, rep["active_monitors"], 0)
		assert.InDelta(t, 0, rep["pending"], 0)
		assert.Equal(t, "CRITICAL", rep["status"])
		assert.Contains(t, fmt.Sprint(rep["reasons"]), "checks stored in the last minute")
	})

	t.Run("BadWindow", func(t *testing.T) {
		t.Parallel()
		srv, _ := setup(t)
		for _, w := range []string{"soon", "-1s", "31s", "1m"} {
			var e apiError
			assert.Equal(t, http.StatusBadRequest, callJSON(t, srv, http.MethodGet, "/api/v1/queue/health?window="+w, nil, &e), w)
			assert.Equal(t, []string{"window"}, e.fieldNames(), w)
		}
	})

	t.Run("NoJetStream", func(t *testing.T) {
		t.Parallel()
		srv, _ := setupWith(t, false)
		var body struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		assert.Equal(t, http.StatusServiceUnavailable, callJSON(t, srv, http.MethodGet, "/api/v1/queue/health?window=0s", nil, &body))
		assert.Equal(t, "UNKNOWN", body.Status)
		assert.Contains(t, body.Error, "NATS")
	})

	t.Run("NoStream", func(t *testing.T) {
		t.Parallel()
		srv, b := setup(t)
		require.NoError(t, b.js.DeleteStream(t.Context(), queue.ChecksStream))
		var body struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		assert.Equal(t, http.StatusServiceUnavailable, callJSON(t, srv, http.MethodGet, "/api/v1/queue/health?window=0s", nil, &body))
		assert.Equal(t, "UNKNOWN", body.Status)
		assert.NotEmpty(t, body.Error)
	})
}

func TestRetryInterval(t *testing.T) {
	t.Parallel()
	srv, _ := setup(t)

	var raw map[string]any
	require.Equal(t, http.StatusCreated, callJSON(t, srv, http.MethodPost, "/api/v1/monitors", httpMonitor("plain"), &raw))
	require.Contains(t, raw, "retry_interval_seconds")
	assert.Nil(t, raw["retry_interval_seconds"], "null when unset")
	assert.Equal(t, "scheduled", raw["lane"])
	require.Contains(t, raw, "check_requested_at")
	assert.Nil(t, raw["check_requested_at"])

	body := httpMonitor("retrying")
	body["retry_interval_seconds"] = 10
	m := create(t, srv, body)
	require.NotNil(t, m.RetryIntervalSeconds)
	assert.InDelta(t, 10, *m.RetryIntervalSeconds, 0)

	var got monitorJSON
	callJSON(t, srv, http.MethodGet, monitorPath(m.ID, ""), nil, &got)
	assert.Equal(t, m, got)

	patch := func(body any) monitorJSON {
		t.Helper()
		var out monitorJSON
		require.Equal(t, http.StatusOK, callJSON(t, srv, http.MethodPatch, monitorPath(m.ID, ""), body, &out))
		return out
	}
	got = patch(map[string]any{"retry_interval_seconds": 20})
	require.NotNil(t, got.RetryIntervalSeconds)
	assert.InDelta(t, 20, *got.RetryIntervalSeconds, 0)
	got = patch(map[string]any{"name": "renamed"})
	require.NotNil(t, got.RetryIntervalSeconds, "a PATCH without the field keeps it")
	assert.InDelta(t, 20, *got.RetryIntervalSeconds, 0)
	got = patch(`{"retry_interval_seconds": null}`)
	assert.Nil(t, got.RetryIntervalSeconds, "null clears it")
	got = patch(map[string]any{"retry_interval_seconds": 15})
	require.NotNil(t, got.RetryIntervalSeconds)
	got = patch(map[string]any{"retry_interval_seconds": 0})
	assert.Nil(t, got.RetryIntervalSeconds, "0 clears it")
	callJSON(t, srv, http.MethodGet, monitorPath(m.ID, ""), nil, &got)
	assert.Nil(t, got.RetryIntervalSeconds)

	for _, v := range []any{0.5, -5, 1.5, 8 * 24 * 3600, "10", true} {
		var e apiError
		code := callJSON(t, srv, http.MethodPatch, monitorPath(m.ID, ""), map[string]any{"retry_interval_seconds": v}, &e)
		assert.Equal(t, http.StatusBadRequest, code, "%v", v)
		assert.Equal(t, []string{"retry_interval_seconds"}, e.fieldNames(), "%v", v)

		body := httpMonitor(fmt.Sprintf("bad %v", v))
		body["retry_interval_seconds"] = v
		code = callJSON(t, srv, http.MethodPost, "/api/v1/monitors", body, &e)
		assert.Equal(t, http.StatusBadRequest, code, "%v", v)
		assert.Equal(t, []string{"retry_interval_seconds"}, e.fieldNames(), "%v", v)
	}
	var e apiError
	callJSON(t, srv, http.MethodPatch, monitorPath(m.ID, ""), map[string]any{"retry_interval_seconds": "10"}, &e)
	require.Len(t, e.Fields, 1)
	assert.Equal(t, "must be a number", e.Fields[0].Reason)
}

func TestDashboardChecksAndSkipped(t *testing.T) {
	t.Parallel()
	srv, b := setup(t)

	m := create(t, srv, httpMonitor("homepage"))
	due := time.Now().UTC().Add(-time.Minute)
	require.NoError(t, b.st.RecordFailures(t.Context(), []store.Failure{
		{MonitorID: m.ID, Region: "default", DueAt: due, Reason: "max deliveries <5>"},
	}))

	page := fmt.Sprintf("/monitors/%d", m.ID)
	code, body := call(t, srv, http.MethodGet, page, nil)
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, string(body), `<span class="lane">scheduled</span>`)
	assert.Contains(t, string(body), "max deliveries &lt;5&gt;")
	assert.Contains(t, string(body), `<span class="state down">failed</span>`)
	assert.Contains(t, string(body), fmt.Sprintf(`<form method="post" action="/monitors/%d/check">`, m.ID))
	assert.Contains(t, string(body), "none waiting")

	// The button redirects back to the page, which says what happened.
	noFollow := *srv.Client()
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// post answers the status and the redirect target.
	post := func(path string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, strings.NewReader(""))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := noFollow.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode, resp.Header.Get("Location")
	}
	code, location := post(page + "/check")
	assert.Equal(t, http.StatusSeeOther, code)
	assert.Equal(t, page+"?check=requested", location)
	mon, err := b.st.GetMonitor(t.Context(), m.ID)
	require.NoError(t, err)
	assert.NotNil(t, mon.CheckRequestedAt)

	_, body = call(t, srv, http.MethodGet, page+"?check=requested", nil)
	assert.Contains(t, string(body), "Check requested")
	assert.Contains(t, string(body), "waiting for dispatch")
	_, body = call(t, srv, http.MethodGet, page+"?check=%3Cscript%3E", nil)
	assert.NotContains(t, string(body), `class="notice"`, "only known notices are shown")

	var paused monitorJSON
	callJSON(t, srv, http.MethodPost, monitorPath(m.ID, "/pause"), nil, &paused)
	code, location = post(page + "/check")
	assert.Equal(t, http.StatusSeeOther, code)
	assert.Equal(t, page+"?check=paused", location)
	_, body = call(t, srv, http.MethodGet, page+"?check=paused", nil)
	assert.Contains(t, string(body), "The monitor is paused")
	assert.NotContains(t, string(body), "Check now</button>", "a paused monitor has no button")

	code, _ = post(fmt.Sprintf("/monitors/%d/check", m.ID+100))
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = post("/monitors/abc/check")
	assert.Equal(t, http.StatusNotFound, code)
}
